"""The share of failing requests (issue 15, item 2): scope-and-impact reads each service's
requests and 5xx over the window from the environment's metrics source ([impact]) and rates
it by the runbook (more than half SEV1, a smaller share from min_share SEV3); without a
source the message says so and a lone canary is no outage.

Against real servers: moto's CloudWatch (its own moto_server, started here from the
sandbox's venv), a loopback HTTP server answering as Prometheus's /api/v1/query does, and
the sandbox end to end (the order-error-rate game days)."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pytest_httpserver import URI_DEFAULT
from receivers import LoopbackServer
from werkzeug import Request, Response

from unibazzar_health.config.environment import load_environment
from unibazzar_health.config.errors import EnvironmentFileError
from unibazzar_health.config.platform import Impact, Thresholds
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.judges.runbook import CheckContext
from unibazzar_health.probes import DeadlineExceeded, FailureKind, ProbeError, ProbeFailure
from unibazzar_health.probes.aws import AwsTarget
from unibazzar_health.probes.http import HttpAnswer
from unibazzar_health.probes.kubernetes import ContainerHealth, PodsHealth
from unibazzar_health.probes.request_metrics import (
    CloudWatchMetrics,
    PrometheusTarget,
    RequestCounts,
    cloudwatch_counts,
    prometheus_counts,
)
from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.results import CheckResult, build_result
from unibazzar_health.verdict.severity import impact_of_share

from conftest import ROOT, SANDBOX_PYTHON, run_checks, sandbox, sandbox_logs_kept

CATALOG = load_catalog()
MOTO_SERVER = SANDBOX_PYTHON.parent / "moto_server"


def scope_module() -> ModuleType:
    file = ROOT / "checks" / "platform" / "test_scope_and_impact.py"
    spec = importlib.util.spec_from_file_location("impact_scope_and_impact", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


scope = scope_module()
HEALTHY = HttpAnswer(status=200, elapsed_ms=1.0, body={"status": "ok"})
POD = ContainerHealth(pod="order-service-1", container="order-service", ready=True, restarts=0,
                      waiting_reason=None, last_termination_reason=None,
                      last_terminated_minutes_ago=None, memory_limit_bytes=512 * 2**20,
                      memory_bytes=100 * 2**20, cpu_limit_millicores=500, cpu_millicores=50)
PODS = PodsHealth(deployment="order-service", exists=True, metrics_available=True,
                  containers=(POD, replace(POD, pod="order-service-2")), desired=2, ready=2)
SOURCE = "CloudWatch AWS/ApplicationELB"


def counted(requests: float, errors: float, min_share: float = 0.02) -> Any:
    return scope.RequestShare(RequestCounts(requests, errors, 5.0, SOURCE), min_share)


def judged(observed: dict[str, Any]) -> CheckResult | None:
    """The check's verdict as the run reports it (impact, severity, fixes), None if it
    passed."""
    try:
        scope.test_service_answers_health_and_its_pods_are_up("order-service", observed,
                                                               Thresholds())
    except AssertionError as exc:
        return build_result(entry=CATALOG.check("order.scope-and-impact"), nodeid="t",
                            catalog=CATALOG, env=None, redactor=Redactor(), exc=exc,
                            skipped=False, skip_reason="", observed=observed, duration_s=0.1)
    return None


# ---- the runbook's thresholds -------------------------------------------------------------------
@pytest.mark.parametrize(("share", "impact"), [
    (0.62, "outage"), (0.51, "outage"), (0.5, "minor"), (0.12, "minor"), (0.02, "minor"),
    (0.019, None), (0.0, None)])
def test_more_than_half_failing_is_sev1_a_smaller_share_sev3_below_the_floor_nothing(
        share: float, impact: str | None) -> None:
    assert impact_of_share(share, noise=0.02) == impact
    if impact:
        assert CATALOG.severity_of(impact).level == ("SEV1" if share > 0.5 else "SEV3")


@pytest.mark.parametrize(("share", "shown"), [
    (0.62, "62 %"), (1.0, "100 %"), (0.0, "0 %"), (0.025, "2.5 %"), (0.504, "50.4 %"),
    (0.5, "50.0 %"), (0.12, "12 %")])
def test_the_share_is_shown_so_its_side_of_the_line_reads_true(share: float,
                                                                shown: str) -> None:
    assert scope.percent(share) == shown


def test_most_requests_failing_is_an_outage_stated_with_its_share() -> None:
    result = judged({"health": HEALTHY, "pods": PODS, "requests": counted(3000, 1860)})
    assert result is not None
    assert result.message == ("order-service is failing: 62 % of order-service requests "
                              "failed in the last 5 min (1860 of 3000, CloudWatch "
                              "AWS/ApplicationELB) → SEV1")
    assert (result.impact, result.severity) == ("outage", "SEV1")
    # Its own fixes: roll back or restart, reading CPU and memory first.
    assert result.fixes == list(CATALOG.check("order.scope-and-impact").fixes)


def test_a_smaller_share_is_sev3_and_below_min_share_no_finding() -> None:
    some = judged({"health": HEALTHY, "pods": PODS, "requests": counted(3000, 360)})
    assert some is not None
    assert some.message == ("order-service is degraded: 12 % of order-service requests failed "
                            "in the last 5 min (360 of 3000, CloudWatch AWS/ApplicationELB) "
                            "→ SEV3")
    assert (some.impact, some.severity) == ("minor", "SEV3")
    assert judged({"health": HEALTHY, "pods": PODS, "requests": counted(3000, 30)}) is None
    # The floor is the environment's.
    strict = judged({"health": HEALTHY, "pods": PODS,
                     "requests": counted(3000, 30, min_share=0.005)})
    assert strict is not None and strict.severity == "SEV3"
    assert "1.0 % of order-service requests failed" in (strict.message or "")


def test_the_share_never_lowers_what_the_pods_show() -> None:
    """One pod of two crash-looping with 3 % failing stays a degradation (SEV2); no pod
    ready is an outage whatever the share (a load balancer with no target answers 5xx
    itself, which no target group counts)."""
    looping = replace(POD, ready=False, restarts=14, waiting_reason="CrashLoopBackOff")
    short = replace(PODS, containers=(looping, replace(POD, pod="order-service-2")), ready=1)
    degraded = judged({"health": HEALTHY, "pods": short, "requests": counted(3000, 90)})
    assert degraded is not None and (degraded.impact, degraded.severity) == ("degradation",
                                                                             "SEV2")
    assert degraded.message == (
        "order-service is degraded: deployment order-service has 1/2 ready pods; "
        "order-service-1 is in CrashLoopBackOff (14 restarts); 3.0 % of order-service "
        "requests failed in the last 5 min (90 of 3000, CloudWatch AWS/ApplicationELB)")
    down = judged({"health": HEALTHY, "pods": replace(short, ready=0),
                   "requests": counted(3000, 0)})
    assert down is not None and (down.impact, down.severity) == ("outage", "SEV1")
    assert down.message is not None and down.message.startswith("order-service is down: ")
    assert down.message.endswith("; 0 % of order-service requests failed in the last 5 min "
                                 "(0 of 3000, CloudWatch AWS/ApplicationELB)")


def test_a_lone_canary_is_no_outage_without_a_source_and_says_so() -> None:
    """The health endpoint answering 503 while both pods are ready: one request failed, a
    degradation (SEV2), with "impact share unknown: judged from one canary"."""
    failing = HttpAnswer(status=503, elapsed_ms=1.0, body={})
    result = judged({"health": failing, "pods": PODS})
    assert result is not None
    assert (result.impact, result.severity) == ("degradation", "SEV2")
    assert result.message == ("order-service is degraded: health endpoint answered HTTP 503; "
                              "impact share unknown: judged from one canary")
    # Without [kubernetes] either: nothing says no pod is ready.
    alone = judged({"health": failing})
    assert alone is not None and alone.severity == "SEV2"
    # With a source, the share decides how far it reaches.
    most = judged({"health": failing, "pods": PODS, "requests": counted(600, 600)})
    assert most is not None and most.severity == "SEV1"
    assert most.message == ("order-service is failing: health endpoint answered HTTP 503; "
                            "100 % of order-service requests failed in the last 5 min (600 of "
                            "600, CloudWatch AWS/ApplicationELB) → SEV1")
    few = judged({"health": failing, "pods": PODS, "requests": counted(600, 0)})
    assert few is not None and few.severity == "SEV2"


def test_without_a_source_a_service_with_no_pod_ready_is_still_down() -> None:
    result = judged({"health": HEALTHY, "pods": replace(PODS, ready=0)})
    assert result is not None and result.severity == "SEV1"
    assert result.message == ("order-service is down: deployment order-service has 0/2 ready "
                              "pods; impact share unknown: judged from its pods")


def test_no_request_counted_leaves_the_share_unknown_and_judges_the_rest() -> None:
    assert judged({"health": HEALTHY, "pods": PODS, "requests": counted(0, 0)}) is None
    failing = HttpAnswer(status=500, elapsed_ms=1.0, body={})
    result = judged({"health": failing, "pods": PODS, "requests": counted(0, 0)})
    assert result is not None and result.severity == "SEV2"
    assert result.message == (
        "order-service is degraded: health endpoint answered HTTP 500; impact share unknown: "
        "no order-service requests counted in the last 5 min (CloudWatch "
        "AWS/ApplicationELB); judged from one canary")


def test_metrics_that_cannot_be_read_are_a_blind_spot_not_the_services_failure() -> None:
    slow = ProbeFailure("cloudwatch", "CloudWatch AWS/ApplicationELB (…, eu-west-1)",
                        FailureKind.TIMEOUT, "did not answer within the deadline", 2.0)
    result = judged({"health": HEALTHY, "pods": PODS,
                     "requests": scope.RequestShare(slow, 0.02)})
    assert result is not None
    assert (str(result.outcome), result.impact, result.severity) == ("failed", "non-critical",
                                                                     "SEV3")
    assert result.message == (
        "order-service answers its health endpoint and its pods are up, but its request "
        f"metrics cannot be read: {slow.message}; impact share unknown")
    assert result.fixes == list(CATALOG.check("order.scope-and-impact")
                                .mode("metrics-unreadable").fixes)
    assert result.fixes[0].startswith("Let the checks read the services' request metrics")
    # Its failures name the source, not the service: nothing is pinned on order-service.
    assert result.failed_dependencies == []
    # The checks' own identity refused: their configuration, no failure of the platform's
    # (results.only_own_credentials_refused).
    denied = replace(slow, kind=FailureKind.AUTH_REJECTED,
                     problem="AccessDenied: not authorized to perform: cloudwatch:GetMetricData")
    refused = judged({"health": HEALTHY, "pods": PODS,
                      "requests": scope.RequestShare(denied, 0.02)})
    assert refused is not None and (str(refused.outcome), refused.severity) == ("broken", None)
    # The service down besides is the service's outage, its share unknown.
    down = judged({"health": HEALTHY, "pods": replace(PODS, ready=0),
                   "requests": scope.RequestShare(denied, 0.02)})
    assert down is not None and down.severity == "SEV1"
    assert f"impact share unknown: {denied.message}; judged from its pods" in (down.message or "")


# ---- settings ------------------------------------------------------------------------------------
BASE = """
[environment]
name = "impact-test"

[services.order-service]
url = "{health_url}"
"""
AWS = """
[aws]
region = "eu-west-1"
endpoint_url = "{moto_url}"
access_key_id_env = "IMPACT_AWS_KEY"
secret_access_key_env = "IMPACT_AWS_SECRET"
listings_table = "unused"
images_bucket = "unused"
"""
SECRETS = {"IMPACT_AWS_KEY": "testing", "IMPACT_AWS_SECRET": "testing",
           "IMPACT_PROM_TOKEN": "pr0m-t0ken"}


def environment(tmp_path: Path, text: str, **urls: str) -> Any:
    """An environment file of BASE and ``text``, {health_url}, {moto_url}, {prom_url}
    filled in (by replacement: TOML's inline tables have braces of their own)."""
    text = BASE + text
    for name, url in {"health_url": "http://127.0.0.1:9", **urls}.items():
        text = text.replace("{" + name + "}", url)
    path = tmp_path / "impact.toml"
    path.write_text(text)
    return load_environment(path, dict(SECRETS))


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('[impact]\nsource = "prometheus"\n', "impact",
     "source 'prometheus' needs [impact.prometheus] with its url"),
    ('[impact]\nsource = "cloudwatch"\n', "impact.source", "needs an [aws] section"),
    ('[impact]\nsource = "graphite"\n', "impact.source", "Input should be"),
    ('[impact]\nsource = "cloudwatch"\nwindow_minutes = 0.5\n' + AWS, "impact.window_minutes",
     "greater than or equal to 1"),
    ('[impact]\nsource = "cloudwatch"\nmin_share = 0.6\n' + AWS, "impact.min_share",
     "less than or equal to 0.5"),
    ('[impact]\nsource = "cloudwatch"\n[impact.services.order-service]\nlabel = "orders"\n'
     + AWS, "impact", "source 'cloudwatch' needs the dimensions of order-service"),
    ('[impact]\nsource = "prometheus"\n[impact.prometheus]\nurl = "http://p:9090"\n'
     'requests_query = "sum(rate(x[5m]))"\n', "impact.prometheus.requests_query",
     "the query must name {service} and {window}"),
    ('[impact]\nsource = "prometheus"\n[impact.prometheus]\nurl = "http://u:pw@p:9090"\n',
     "impact.prometheus.url", "the URL carries a password"),
])
def test_a_bad_impact_section_stops_the_run_naming_the_key(tmp_path: Path, text: str,
                                                            key: str, reason: str) -> None:
    with pytest.raises(EnvironmentFileError) as raised:
        environment(tmp_path, text, moto_url="http://127.0.0.1:9")
    assert raised.value.key == key
    assert reason in raised.value.reason


def test_the_shipped_environments_name_a_source_for_every_service() -> None:
    from unibazzar_health.config.environment import read_environment_file
    from unibazzar_health.config.names import SERVICES

    for name in ("sandbox.toml", "production.toml.example"):
        spec, _ = read_environment_file(ROOT / "environments" / name)
        assert spec.impact is not None and spec.impact.source == "cloudwatch", name
        assert set(spec.impact.services) == set(SERVICES), name
        for service in spec.impact.services.values():
            assert set(service.dimensions) == {"LoadBalancer", "TargetGroup"}, name


def test_every_impact_key_is_documented() -> None:
    """Every key of [impact] and of its tables ([impact.cloudwatch], [impact.prometheus],
    [impact.services.<name>]) is named in its row of docs/environments.md."""
    from pydantic import BaseModel

    row = next(line for line in (ROOT / "docs" / "environments.md").read_text().splitlines()
               if line.startswith("| `[impact]` |"))
    models: list[type[BaseModel]] = [Impact]
    keys: set[str] = set()
    while models:
        model = models.pop()
        for name, info in model.model_fields.items():
            keys.add(name)
            # A table's model, alone, optional (X | None) or the values of a dict.
            for inner in (info.annotation, *getattr(info.annotation, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    models.append(inner)
    assert {"dimensions", "label", "requests_query", "namespace"} <= keys
    # A key, or a table as the file writes it ([impact.services.<name>]).
    assert not sorted(key for key in keys if f"`{key}`" not in row
                      and f"`[impact.{key}" not in row)


# ---- CloudWatch: a real moto server ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's own server (the sandbox's venv has it), apart from the shared sandbox's."""
    if not MOTO_SERVER.exists():
        pytest.skip("moto_server is not installed (scripts/bootstrap makes .venv-sandbox)")
    import requests

    port = free_port()
    server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)


TARGET_GROUP = {"LoadBalancer": "app/unibazzar-test/0123456789abcdef",
                "TargetGroup": "targetgroup/order-service/fedcba9876543210"}
OTHER_GROUP = TARGET_GROUP | {"TargetGroup": "targetgroup/auth-service/0000000000000001"}


def cloudwatch(moto_url: str) -> Any:
    import boto3

    return boto3.client("cloudwatch", endpoint_url=moto_url, region_name="eu-west-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def put_counts(moto_url: str, group: dict[str, str], requests: int, errors: int,
               minutes_ago: float) -> None:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    dimensions = [{"Name": k, "Value": v} for k, v in group.items()]
    cloudwatch(moto_url).put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
        {"MetricName": "RequestCount", "Value": requests, "Timestamp": at, "Unit": "Count",
         "Dimensions": dimensions},
        {"MetricName": "HTTPCode_Target_5XX_Count", "Value": errors, "Timestamp": at,
         "Unit": "Count", "Dimensions": dimensions}])


ALB = CloudWatchMetrics("AWS/ApplicationELB", "RequestCount", "HTTPCode_Target_5XX_Count",
                        TARGET_GROUP)


def test_cloudwatch_counts_the_target_groups_requests_within_the_window(moto_url: str) -> None:
    put_counts(moto_url, TARGET_GROUP, 600, 400, minutes_ago=1)
    put_counts(moto_url, TARGET_GROUP, 600, 344, minutes_ago=3)
    put_counts(moto_url, TARGET_GROUP, 600, 600, minutes_ago=20)  # before the window
    put_counts(moto_url, OTHER_GROUP, 900, 900, minutes_ago=1)  # another service
    target = AwsTarget("eu-west-1", moto_url, "testing", "testing", 2.0)
    counts = cloudwatch_counts(target, ALB, 5.0)
    assert (counts.requests, counts.errors) == (1200, 744)
    assert counts.share == pytest.approx(0.62)
    assert counts.source == "CloudWatch AWS/ApplicationELB"
    quiet = cloudwatch_counts(target, replace(ALB, dimensions={"TargetGroup": "none"}), 5.0)
    assert (quiet.requests, quiet.share) == (0, None)


def test_cloudwatch_that_does_not_answer_is_a_timeout_within_the_deadline(
        hang_listener: tuple[str, int]) -> None:
    host, port = hang_listener
    target = AwsTarget("eu-west-1", f"http://{host}:{port}", "testing", "testing", 1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as raised:
        cloudwatch_counts(target, ALB, 5.0)
    assert time.monotonic() - started < 3.0
    assert raised.value.backend == "cloudwatch"
    refused = AwsTarget("eu-west-1", f"http://127.0.0.1:{free_port()}", "t", "t", 1.0)
    with pytest.raises(ProbeError) as closed:
        cloudwatch_counts(refused, ALB, 5.0)
    assert closed.value.kind is FailureKind.REFUSED


def test_scope_reads_cloudwatch_as_the_environment_names_it(tmp_path: Path, moto_url: str,
                                                            prometheus: Any) -> None:
    """Settings → probe → check: the environment's [aws] identity and [impact] dimensions,
    against moto; the health endpoint answering 200 (the stub server)."""
    group = TARGET_GROUP | {"TargetGroup": "targetgroup/order-service/00000000000000aa"}
    put_counts(moto_url, group, 600, 372, minutes_ago=2)
    dimensions = ", ".join(f'{k} = "{v}"' for k, v in group.items())
    env = environment(tmp_path, AWS + f"""
[impact]
source = "cloudwatch"
deadline = 2.0
[impact.services.order-service]
dimensions = {{ {dimensions} }}
""", moto_url=moto_url, health_url=prometheus.url)
    observed = scope.observe_scope("order-service")(CheckContext(env))
    assert observed["requests"].counts == RequestCounts(600, 372, 5.0, SOURCE)
    result = judged(observed)
    assert result is not None and result.severity == "SEV1"
    assert result.message == ("order-service is failing: 62 % of order-service requests "
                              "failed in the last 5 min (372 of 600, CloudWatch "
                              "AWS/ApplicationELB) → SEV1")
    # As the summary keeps it: plain data.
    assert result.evidence["requests"]["counts"] == {
        "requests": 600.0, "errors": 372.0, "window_minutes": 5.0, "source": SOURCE}


# ---- Prometheus: its HTTP API's shape ----------------------------------------------------------
class Prometheus:
    """A loopback server answering GET /api/v1/query as Prometheus does: ``series`` maps a
    query to its samples (an unknown one: an empty vector, as for a metric with no series),
    ``scalars`` to a scalar; unbalanced brackets are a 400 bad_data; without the bearer
    ``token`` a 401 (Prometheus behind its auth proxy); GET /health a 200 for the check."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.series: dict[str, list[str]] = {}
        self.scalars: dict[str, str] = {}
        self.queries: list[str] = []
        self.server = LoopbackServer()
        self.server.expect_request("/health", method="GET").respond_with_json({"status": "ok"})
        self.server.expect_request("/api/v1/query", method="GET").respond_with_handler(
            self._query)
        self.server.expect_request(URI_DEFAULT, method="GET").respond_with_data(
            "404 page not found\n", 404, content_type="text/plain; charset=utf-8")
        self.server.start()
        self.url = self.server.base

    def _query(self, request: Request) -> Response:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response("Unauthorized\n", 401, content_type="text/plain; charset=utf-8")
        query = parse_qs(urlsplit(request.environ["RAW_URI"]).query).get("query", [""])[0]
        self.queries.append(query)
        if query.count("(") != query.count(")") or query.count("[") != query.count("]"):
            return Response(json.dumps({"status": "error", "errorType": "bad_data",
                                        "error": "1:1: parse error: unclosed left parenthesis"}),
                            400, content_type="application/json")
        stamp = round(time.time(), 3)
        if query in self.scalars:
            data: dict[str, Any] = {"resultType": "scalar", "result": [stamp, self.scalars[query]]}
        else:
            data = {"resultType": "vector", "result": [
                {"metric": {"pod": f"p{n}"}, "value": [stamp, value]}
                for n, value in enumerate(self.series.get(query, []))]}
        return Response(json.dumps({"status": "success", "data": data}),
                        content_type="application/json")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def prometheus() -> Iterator[Prometheus]:
    server = Prometheus(token=SECRETS["IMPACT_PROM_TOKEN"])
    yield server
    server.close()


REQUESTS_Q = 'sum(increase(http_requests_total{service="{service}"}[{window}]))'
ERRORS_Q = 'sum(increase(http_requests_total{service="{service}",code=~"5.."}[{window}]))'


def test_prometheus_sums_each_querys_series_with_the_service_and_window_filled_in(
        prometheus: Prometheus) -> None:
    requests_q = 'sum(increase(http_requests_total{service="orders"}[5m]))'
    errors_q = 'sum(increase(http_requests_total{service="orders",code=~"5.."}[5m]))'
    prometheus.series = {requests_q: ["400.5", "199.5"], errors_q: ["72"]}
    target = PrometheusTarget(prometheus.url, SECRETS["IMPACT_PROM_TOKEN"], 2.0)
    counts = prometheus_counts(target, REQUESTS_Q, ERRORS_Q, "orders", 5.0)
    assert prometheus.queries == [requests_q, errors_q]
    assert (counts.requests, counts.errors, counts.share) == (600.0, 72.0, 0.12)
    assert counts.source == f"Prometheus at {prometheus.url}"
    # No 5xx series at all (increase() of a counter never seen): 0, not an error.
    prometheus.series = {requests_q: ["600"]}
    assert prometheus_counts(target, REQUESTS_Q, ERRORS_Q, "orders", 5.0).errors == 0
    # A scalar answers too; a window of seconds as PromQL writes it.
    prometheus.scalars = {"scalar(sum(x[90s]))": "42"}
    assert prometheus_counts(target, "scalar(sum(x[{window}])){service}",
                             "scalar(sum(x[{window}])){service}", "", 1.5).requests == 42


def test_prometheus_refusals_and_bad_answers_are_typed_failures(prometheus: Prometheus) -> None:
    target = PrometheusTarget(prometheus.url, SECRETS["IMPACT_PROM_TOKEN"], 2.0)
    with pytest.raises(ProbeError) as bad:
        prometheus_counts(target, "sum(rate(x[{window}]){service}", ERRORS_Q, "o", 5.0)
    assert bad.value.kind is FailureKind.UNEXPECTED_ANSWER
    assert bad.value.problem == ("HTTP 400, bad_data: 1:1: parse error: unclosed left "
                                 "parenthesis (query sum(rate(x[5m])o)")
    with pytest.raises(ProbeError) as refused:
        prometheus_counts(replace(target, token="wrong"), REQUESTS_Q, ERRORS_Q, "o", 5.0)
    assert refused.value.kind is FailureKind.AUTH_REJECTED
    assert refused.value.problem.startswith("HTTP 401, not Prometheus's JSON")
    with pytest.raises(ProbeError) as lost:
        prometheus_counts(replace(target, url=prometheus.url + "/nope"), REQUESTS_Q,
                          ERRORS_Q, "o", 5.0)
    assert lost.value.kind is FailureKind.MISSING_OBJECT


def test_prometheus_that_does_not_answer_is_a_timeout_within_the_deadline(
        hang_listener: tuple[str, int]) -> None:
    host, port = hang_listener
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        prometheus_counts(PrometheusTarget(f"http://{host}:{port}", None, 1.0), REQUESTS_Q,
                          ERRORS_Q, "o", 5.0)
    assert time.monotonic() - started < 2.5


def test_scope_reads_prometheus_with_the_environments_label_and_token(
        tmp_path: Path, prometheus: Prometheus) -> None:
    service = Prometheus()  # its health endpoint: stays up when Prometheus goes
    try:
        scope_reads_prometheus(tmp_path, prometheus, service.url)
    finally:
        service.close()


def scope_reads_prometheus(tmp_path: Path, prometheus: Prometheus, health_url: str) -> None:
    env = environment(tmp_path, """
[impact]
source = "prometheus"
window_minutes = 10
min_share = 0.05
[impact.prometheus]
url = "{prom_url}"
token_env = "IMPACT_PROM_TOKEN"
[impact.services.order-service]
label = "orders"
""", prom_url=prometheus.url, health_url=health_url)
    prometheus.series = {
        'sum(increase(http_requests_total{service="orders"}[10m]))': ["1000"],
        'sum(increase(http_requests_total{service="orders",code=~"5.."}[10m]))': ["40"]}
    observed = scope.observe_scope("order-service")(CheckContext(env))
    assert observed["requests"] == scope.RequestShare(
        RequestCounts(1000, 40, 10.0, f"Prometheus at {prometheus.url}"), 0.05)
    assert judged(observed) is None  # 4 %: below this environment's 5 %
    prometheus.series[
        'sum(increase(http_requests_total{service="orders",code=~"5.."}[10m]))'] = ["700"]
    result = judged(scope.observe_scope("order-service")(CheckContext(env)))
    assert result is not None and result.severity == "SEV1"
    assert result.message == (f"order-service is failing: 70 % of order-service requests "
                              f"failed in the last 10 min (700 of 1000, Prometheus at "
                              f"{prometheus.url}) → SEV1")
    # Our token refused (rotated): the checks' configuration, not the platform's failure.
    prometheus.token = "rotated"
    blind = judged(scope.observe_scope("order-service")(CheckContext(env)))
    assert blind is not None and (str(blind.outcome), blind.severity) == ("broken", None)
    assert blind.failures[0]["backend"] == "prometheus"
    assert blind.failures[0]["kind"] == "auth_rejected"
    # Prometheus gone: a blind spot (SEV3), with the fix for reading it again.
    prometheus.close()
    gone = judged(scope.observe_scope("order-service")(CheckContext(env)))
    assert gone is not None
    assert (gone.impact, gone.severity, gone.failures[0]["kind"]) == ("non-critical", "SEV3",
                                                                      "refused")


# ---- the sandbox, end to end -------------------------------------------------------------------
SHARE_MESSAGE = re.compile(
    r"order-service is (failing|degraded): (\d+) % of order-service requests failed in the "
    r"last 5 min \((\d+) of (\d+), CloudWatch AWS/ApplicationELB\) → (SEV\d)")


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox")
@pytest.mark.parametrize(("game_day", "percent", "severity"), [
    ("order-error-rate", 62, "SEV1"), ("order-error-rate-low", 12, "SEV3")])
def test_a_game_day_moving_the_counts_rates_the_service_by_its_share(
        tmp_path: Path, game_day: str, percent: int, severity: str) -> None:
    """The stand-in's counts in moto's CloudWatch, read as production reads an ALB's: more
    than half failing is SEV1, 12 % SEV3; off, the service passes again."""
    with sandbox_logs_kept():
        sandbox("fault", game_day, "on")
        try:
            result, summary = run_checks(tmp_path / "on", "-m", "order-service")
        finally:
            sandbox("fault", game_day, "off")
        failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
        assert set(failed) == {"order.scope-and-impact"}, result.stdout[-3000:]
        check = failed["order.scope-and-impact"]
        match = SHARE_MESSAGE.fullmatch(check["message"])
        assert match, check["message"]
        state, shown, errors, requests, level = match.groups()
        assert (int(shown), level, check["severity"]) == (percent, severity, severity)
        assert state == ("failing" if severity == "SEV1" else "degraded")
        assert int(requests) >= 3000 and abs(int(errors) / int(requests) - percent / 100) < 0.01
        assert summary["verdict"]["severity"] == severity
        result, summary = run_checks(tmp_path / "off", "-m", "order-service")
    assert result.returncode == 0, result.stdout[-3000:]
    scope_check = {c["id"]: c for c in summary["checks"]}["order.scope-and-impact"]
    assert scope_check["evidence"]["requests"]["counts"]["errors"] == 0
