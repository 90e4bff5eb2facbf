"""A service's requests and its failed (5xx) requests over a window, read from the metrics
the platform already keeps: CloudWatch (an ALB's target group, or a namespace of the
services' own) through boto3, or a Prometheus server's HTTP API. Two sources, one answer
(RequestCounts); each client is imported by the source that needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.probes import (
    DeadlineExceeded,
    FailureKind,
    ProbeError,
    connection_failure,
    status_failure,
)
from unibazzar_health.probes.aws import AwsTarget, call, explain
from unibazzar_health.probes.http import reason


@dataclass(frozen=True)
class RequestCounts:
    """What the source counted of one service over the window."""

    requests: float
    errors: float  # answered 5xx
    window_minutes: float
    source: str  # where they were read, as the evidence names it

    @property
    def share(self) -> float | None:
        """The share of requests that failed; None when none was counted (no traffic, or
        metrics that name another service)."""
        if self.requests <= 0:
            return None
        return min(1.0, self.errors / self.requests)


@dataclass(frozen=True)
class CloudWatchMetrics:
    """Two Sum metrics of one service in one namespace, selected by its dimensions."""

    namespace: str
    requests_metric: str
    errors_metric: str
    dimensions: dict[str, str] = field(hash=False)


def cloudwatch_counts(target: AwsTarget, metrics: CloudWatchMetrics,
                      window_minutes: float) -> RequestCounts:
    """One GetMetricData call for both sums over the window ending now, by the minute
    (load balancers count by the minute); pages followed, each bounded like the first."""
    from datetime import UTC, datetime, timedelta

    from botocore.exceptions import BotoCoreError, ClientError

    dimensions = [{"Name": k, "Value": v} for k, v in sorted(metrics.dimensions.items())]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(metrics.dimensions.items()))
    where = f"CloudWatch {metrics.namespace} ({shown}, {target.region})"
    queries = [{"Id": query_id, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": metrics.namespace, "MetricName": name, "Dimensions": dimensions},
        "Period": 60, "Stat": "Sum"}}
        for query_id, name in (("requests", metrics.requests_metric),
                               ("errors", metrics.errors_metric))]
    end = datetime.now(UTC)
    request: dict[str, Any] = {"MetricDataQueries": queries, "EndTime": end,
                               "StartTime": end - timedelta(minutes=window_minutes)}
    sums = {"requests": 0.0, "errors": 0.0}
    # A window of minutes is a few datapoints a query: more pages than this is not our query.
    for _ in range(10):
        try:
            answer = call("cloudwatch", target, "cloudwatch", where,
                          lambda cloudwatch: cloudwatch.get_metric_data(**request))
        except (BotoCoreError, ClientError) as exc:
            raise explain(exc, "cloudwatch", where, target) from None
        for result in answer.get("MetricDataResults", []):
            if result.get("Id") in sums:
                sums[result["Id"]] += sum(float(v) for v in result.get("Values", []))
        if not answer.get("NextToken"):
            break
        request["NextToken"] = answer["NextToken"]
    return RequestCounts(sums["requests"], sums["errors"], window_minutes,
                         f"CloudWatch {metrics.namespace}")


@dataclass(frozen=True)
class PrometheusTarget:
    url: str  # the server's base URL
    token: str | None = field(repr=False)  # a bearer token, or None
    deadline: float


def prometheus_duration(minutes: float) -> str:
    """A window as PromQL writes it: whole minutes, else seconds."""
    return f"{minutes:.0f}m" if minutes == int(minutes) else f"{round(minutes * 60)}s"


def filled(template: str, label: str, window_minutes: float) -> str:
    # Plain replacement: PromQL's own braces ({service="..."}) are no format fields.
    return (template.replace("{service}", label)
            .replace("{window}", prometheus_duration(window_minutes)))


def prometheus_counts(target: PrometheusTarget, requests_query: str, errors_query: str,
                      label: str, window_minutes: float) -> RequestCounts:
    """Both queries through /api/v1/query, evaluated now, {service} and {window} filled in."""
    return RequestCounts(
        prometheus_value(target, filled(requests_query, label, window_minutes)),
        prometheus_value(target, filled(errors_query, label, window_minutes)),
        window_minutes, f"Prometheus at {target.url.rstrip('/')}")


def prometheus_value(target: PrometheusTarget, query: str) -> float:
    """One instant query's number: a scalar, or the sum of a vector's samples (none: 0, as
    increase() over a counter that never moved gives no series)."""
    import requests

    url = target.url.rstrip("/") + "/api/v1/query"
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    try:
        response = requests.get(url, params={"query": query}, headers=headers,
                                timeout=(target.deadline, target.deadline),
                                allow_redirects=False)
    except requests.Timeout:
        raise DeadlineExceeded("prometheus", url, target.deadline) from None
    except requests.RequestException as exc:
        raise ProbeError("prometheus", url, reason(exc), target.deadline,
                         kind=connection_failure(exc)) from None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProbeError("prometheus", url, f"HTTP {response.status_code}, not Prometheus's "
                         f"JSON: {response.text[:200]!r}", target.deadline,
                         kind=status_failure(response.status_code))
    if response.status_code != 200 or body.get("status") != "success":
        # Prometheus says why: bad_data (a query it cannot parse), execution, timeout.
        why = f"{body.get('errorType', 'error')}: {body.get('error', '')}".strip(": ")
        raise ProbeError("prometheus", url, f"HTTP {response.status_code}, {why} (query "
                         f"{query})", target.deadline, kind=status_failure(response.status_code))
    return _number(body.get("data"), url, query, target.deadline)


def _number(data: Any, url: str, query: str, deadline: float) -> float:
    def bad(problem: str) -> ProbeError:
        return ProbeError("prometheus", url, f"{problem} (query {query})", deadline,
                          kind=FailureKind.UNEXPECTED_ANSWER)

    if not isinstance(data, dict):
        raise bad("no data in the answer")
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            values = [float(result[1])]  # type: ignore[index]
        elif kind == "vector":
            values = [float(sample["value"][1]) for sample in result]  # type: ignore[union-attr]
        else:
            raise bad(f"a {kind} result, not one number (use an instant vector or a scalar)")
    except (TypeError, KeyError, IndexError, ValueError):
        raise bad(f"a {kind} result not shaped as Prometheus answers one") from None
    if not all(math.isfinite(v) for v in values):
        raise bad("not a finite number")
    return sum(values)
