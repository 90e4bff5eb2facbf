"""Initial Assessment — verify the incident scope and impact: for each service, its health
endpoint answers and its Deployment's pods are up: none crash-looping or unable to start,
none restarted or OOM-killed within the restart window, every desired replica ready.

No ready pod, or no answer, is an outage; some pods down is a degradation. Without a
[kubernetes] section only the health endpoint is judged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unibazzar_health.pods import pod_problems, replicas_problem
from unibazzar_health.probes import ProbeFailure
from unibazzar_health.runbook import CheckContext, Finding, gather, per_service
from unibazzar_health.settings import Thresholds


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
        return gather(**calls)

    return observe


@per_service("scope-and-impact", observe_scope)
def test_service_answers_health_and_its_pods_are_up(service: str, observed: dict[str, Any],
                                                    thresholds: Thresholds) -> None:
    health, pods = observed["health"], observed.get("pods")
    down: list[str] = []
    unreachable: list[ProbeFailure] = []
    if isinstance(health, ProbeFailure):
        down.append(f"health endpoint: {health.message}")
        unreachable.append(health)
    elif health.status != 200:
        down.append(f"health endpoint answered HTTP {health.status}")
    if isinstance(pods, ProbeFailure):
        if not down:
            # The service answers; only its pods could not be read. That is our view of the
            # cluster failing (API down, VPN, expired credentials), not the service.
            raise Finding(f"{service} answers its health endpoint, but its pods cannot be "
                          f"read: {pods.message}", impact="non-critical", failures=(pods,))
        down.append(f"pods: {pods.message}")
        unreachable.append(pods)
        pods = None
    if pods is not None and not pods.exists:
        down.append(f"deployment {pods.deployment} does not exist")
        pods = None
    troubles = pod_problems(pods, thresholds.restart_window_minutes) if pods else []
    short = replicas_problem(pods) if pods else None
    details = ([short] if short else []) + [t.text for t in troubles]
    names = {"pod": troubles[0].pod} if troubles else {}
    if down or (pods is not None and pods.ready == 0):
        raise Finding(f"{service} is down: " + "; ".join(down + details),
                      failures=unreachable, names=names)
    if details:
        raise Finding(f"{service} is degraded: " + "; ".join(details), impact="degradation",
                      names=names)
