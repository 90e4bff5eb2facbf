"""Initial Assessment — verify the incident scope and impact: for each service, its
health endpoint answers and its Deployment has ready pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unibazzar_health.probes import ProbeFailure
from unibazzar_health.runbook import CheckContext, Finding, gather, per_service


def observe_scope(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import http, kubernetes

        spec = ctx.env.spec.service(service)
        deployment = ctx.deployment(service)
        health = spec.health_path if spec else "/health"
        url, kube = ctx.service_url(service, health), ctx.kube()
        return gather(
            health=lambda: http.request(service, "GET", url, ctx.env.deadline("http")),
            deployment=lambda: kubernetes.deployment_health(kube, deployment),
        )

    return observe


@per_service("scope-and-impact", observe_scope)
def test_service_answers_health_and_has_ready_pods(service: str, observed: dict[str, Any]) -> None:
    health, deployment = observed["health"], observed["deployment"]
    problems: list[str] = []
    unreachable: list[ProbeFailure] = []
    if isinstance(health, ProbeFailure):
        problems.append(f"health endpoint: {health.message}")
        unreachable.append(health)
    elif health.status != 200:
        problems.append(f"health endpoint answered HTTP {health.status}")
    if isinstance(deployment, ProbeFailure):
        if not problems:
            # The service answers; only its pods could not be read. That is our view of the
            # cluster failing (API down, VPN, expired credentials), not the service.
            raise Finding(f"{service} answers its health endpoint, but its pods cannot be "
                          f"read: {deployment.message}", impact="non-critical",
                          failures=(deployment,))
        problems.append(f"deployment: {deployment.message}")
        unreachable.append(deployment)
    elif not deployment.exists:
        problems.append(f"deployment {deployment.name} does not exist")
    elif deployment.ready == 0:
        problems.append(f"deployment {deployment.name} has 0/{deployment.desired} ready pods "
                        f"({deployment.conditions.get('Available', 'no Available condition')})")
    if problems:
        raise Finding(f"{service} is down: " + "; ".join(problems), failures=unreachable)
