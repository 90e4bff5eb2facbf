"""Initial Assessment — verify the incident scope and impact: for each service, its health
endpoint answers and its Deployment's pods are up: none crash-looping or unable to start,
none restarted or OOM-killed within the restart window, every desired replica ready; and,
where the environment names a metrics source ([impact]), the share of its requests that
failed (5xx) over the window.

No ready pod is an outage, and so is more than half of its requests failing (the runbook's
>50 % of users); a smaller share is SEV3 (severity.impact_of_share). Some pods down is a
degradation, and so is a failing health endpoint while pods are ready: one request is a
canary, and a lone canary says nothing of how many users fail (a service whose every check
fails is an outage all the same: severity.service_outages). Without [kubernetes] only the
health endpoint is judged; without [impact] the message says the share is unknown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from unibazzar_health.config.platform import Thresholds
from unibazzar_health.judges.pods import (
    pod_problems,
    replicas_problem,
    resource_bound,
    scaled_replicas,
)
from unibazzar_health.judges.runbook import CheckContext, Finding, gather, per_service
from unibazzar_health.probes import ProbeFailure
from unibazzar_health.probes.request_metrics import RequestCounts
from unibazzar_health.verdict.severity import impact_of_share, severity_of


@dataclass(frozen=True)
class RequestShare:
    """The service's requests over the window as the metrics source counted them (None:
    the source names no metrics of this service), or why they could not be read; with the
    environment's share below which 5xx are noise ([impact] min_share)."""

    counts: RequestCounts | ProbeFailure | None
    min_share: float


def read_requests(ctx: CheckContext, service: str) -> RequestCounts | None:
    from unibazzar_health.probes import request_metrics

    impact = ctx.require("impact", ctx.env.spec.impact)
    deadline = impact.deadline or ctx.env.spec.deadlines.default
    spec = impact.service(service)
    if impact.source == "cloudwatch":
        if spec is None:
            return None
        # [aws]'s region and credentials (settings refuses the source without it), with
        # [impact]'s deadline.
        target = replace(ctx.aws("default"), deadline=deadline)
        metrics = request_metrics.CloudWatchMetrics(
            impact.cloudwatch.namespace, impact.cloudwatch.requests_metric,
            impact.cloudwatch.errors_metric, dict(spec.dimensions))
        return request_metrics.cloudwatch_counts(target, metrics, impact.window_minutes)
    prometheus = ctx.require("impact.prometheus", impact.prometheus)
    server = request_metrics.PrometheusTarget(prometheus.url,
                                              ctx.env.secret(prometheus.token_env), deadline)
    label = spec.label if spec and spec.label else service
    return request_metrics.prometheus_counts(server, prometheus.requests_query,
                                             prometheus.errors_query, label,
                                             impact.window_minutes)


def observe_scope(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import http

        spec = ctx.env.spec.service(service)
        health = spec.health_path if spec else "/health"
        url = ctx.service_url(service, health)
        calls: dict[str, Callable[[], Any]] = {
            "health": lambda: http.request(service, "GET", url, ctx.env.deadline("http"))}
        if ctx.env.spec.kubernetes is not None:
            # With CPU and memory: shared with ai-service step 2 and a failed check's context.
            calls["pods"] = lambda: ctx.pods(service)
        impact = ctx.env.spec.impact
        if impact is not None:
            calls["requests"] = lambda: read_requests(ctx, service)
        observed = gather(**calls)
        if impact is not None:
            observed["requests"] = RequestShare(observed["requests"], impact.min_share)
        return observed

    return observe


def percent(share: float) -> str:
    """62 %, 2.5 %, 50.4 %: tenths where whole percents would hide a small share, or which
    side of the runbook's 50 % it is on."""
    value = share * 100
    whole = value == 0 or (value >= 10 and round(value) != 50)
    return f"{value:.0f} %" if whole else f"{value:.1f} %"


@dataclass(frozen=True)
class ShareJudged:
    text: str  # what the message says of the share
    impact: str | None  # the share's own class (impact_of_share); None: noise or unknown
    unreadable: ProbeFailure | None = None


def judge_share(service: str, measured: RequestShare | None, judged_from: str) -> ShareJudged:
    """The share of failing requests as the message states it, and its class. Unknown: why,
    and what the rest was judged from (``judged_from``: "one canary", "its pods")."""
    if measured is None:
        return ShareJudged(f"impact share unknown: judged from {judged_from}", None)
    counts = measured.counts
    if counts is None:
        return ShareJudged(f"impact share unknown: [impact.services.{service}] names no "
                           f"metrics of it; judged from {judged_from}", None)
    if isinstance(counts, ProbeFailure):
        return ShareJudged(f"impact share unknown: {counts.message}; judged from "
                           f"{judged_from}", None, unreadable=counts)
    window = f"the last {counts.window_minutes:g} min"
    if counts.share is None:
        return ShareJudged(f"impact share unknown: no {service} requests counted in {window} "
                           f"({counts.source}); judged from {judged_from}", None)
    return ShareJudged(
        f"{percent(counts.share)} of {service} requests failed in {window} "
        f"({counts.errors:.0f} of {counts.requests:.0f}, {counts.source})",
        impact_of_share(counts.share, measured.min_share))


@per_service("scope-and-impact", observe_scope)
def test_service_answers_health_and_its_pods_are_up(service: str, observed: dict[str, Any],
                                                    thresholds: Thresholds) -> None:
    health, pods = observed["health"], observed.get("pods")
    measured: RequestShare | None = observed.get("requests")
    # The health endpoint answers one request: a canary.
    canary: list[str] = []
    unreachable: list[ProbeFailure] = []
    if isinstance(health, ProbeFailure):
        canary.append(f"health endpoint: {health.message}")
        unreachable.append(health)
    elif health.status != 200:
        canary.append(f"health endpoint answered HTTP {health.status}")
    unread: ProbeFailure | None = None
    if isinstance(pods, ProbeFailure):
        unread, pods = pods, None
        unreachable.append(unread)
    missing: list[str] = []
    if pods is not None and not pods.exists:
        missing.append(f"deployment {pods.deployment} does not exist")
        pods = None
    down = bool(missing) or (pods is not None and pods.ready == 0)
    troubles = pod_problems(pods, thresholds.restart_window_minutes) if pods else []
    short = replicas_problem(pods) if pods else None
    details = ([short] if short else []) + [t.text for t in troubles]
    names = {"pod": troubles[0].pod} if troubles else {}
    # Down or crash-looping says nothing of CPU or memory: scaling up is offered only where
    # the pods show it (OOMKilled lately, near a limit), the resource-bound mode.
    bound = resource_bound(pods, thresholds.restart_window_minutes, thresholds.pod_memory_usage,
                           thresholds.pod_cpu_usage) if pods else []
    mode = "resource-bound" if bound else None
    if bound and pods is not None:
        names |= {"pod": names.get("pod", bound[0].pod), "replicas": scaled_replicas(pods)}
    sources = [source for source, seen in (("one canary", canary), ("its pods", down or details))
               if seen]
    share = judge_share(service, measured, " and ".join(sources) or "its health endpoint")
    if unread is not None and not canary and share.impact is None:
        # The service answers; only its pods could not be read. That is our view of the
        # cluster failing (API down, VPN, expired credentials), not the service: rated and
        # fixed as every check that cannot read the cluster (the catalog's kubernetes
        # failure_fixes), so one severity whichever check sees it.
        raise Finding(f"{service} answers its health endpoint, but its pods cannot be read: "
                      f"{unread.message}; {share.text}", failures=(unread,))
    # Each named, not the catalog's default: its severity is what the evidence shows.
    if down:
        impact, state = "outage", "is down"  # no pod ready: nothing serves
    elif share.impact == "outage":
        impact, state = "outage", "is failing"  # more than half of its requests fail
    elif canary or details:
        # Some pods down, or a lone canary (pods unreadable besides): not an outage
        # unless the share or the pods show one.
        impact, state = "degradation", "is degraded"
    elif share.impact is not None:
        impact, state = share.impact, "is degraded"
    elif share.unreadable is not None:
        # Our view of the share failing, not the service: a blind spot (SEV3), with the fix
        # for reading it, never the service's.
        raise Finding(f"{service} answers its health endpoint"
                      f"{' and its pods are up' if pods is not None else ''}, but its request "
                      f"metrics cannot be read: {share.unreadable.message}; impact share "
                      "unknown", impact="non-critical", mode="metrics-unreadable",
                      failures=(share.unreadable,))
    else:
        return
    # "→ SEVn" where the share rates the finding, as the runbook's >50 % line reads.
    decided = f" → {severity_of(impact).level}" if share.impact == impact else ""
    evidence = [*canary, *([f"pods: {unread.message}"] if unread else []), *missing, *details]
    raise Finding(f"{service} {state}: " + "; ".join([*evidence, share.text + decided]),
                  impact=impact, failures=unreachable, names=names, mode=mode)
