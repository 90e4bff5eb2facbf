"""Initial Assessment — verify the incident scope and impact: for each service, its
health endpoint answers and its Deployment has ready pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from unibazzar_health.runbook import CheckContext, gather, runbook_check

SERVICES = {"auth-service": "auth", "listing-service": "listing", "order-service": "order",
            "ai-service": "ai"}


def observe_scope(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import http, kubernetes

        spec = ctx.env.spec.service(service)
        deployment = spec.deployment if spec and spec.deployment else service
        health = spec.health_path if spec else "/health"
        url, kube = ctx.service_url(service, health), ctx.kube()
        return gather(
            health=lambda: http.request(service, "GET", url, ctx.env.deadline("http")),
            deployment=lambda: kubernetes.deployment_health(kube, deployment),
        )

    return observe


@pytest.mark.parametrize("service", [
    pytest.param(service, id=service,
                 marks=runbook_check(f"{prefix}.scope-and-impact", observe=observe_scope(service)))
    for service, prefix in SERVICES.items()
])
def test_service_answers_health_and_has_ready_pods(service: str, observed: dict[str, Any]) -> None:
    health, deployment = observed["health"], observed["deployment"]
    problems = []
    if isinstance(health, dict):
        problems.append(f"health endpoint: {health['error']}")
    elif health.status != 200:
        problems.append(f"health endpoint answered HTTP {health.status}")
    if isinstance(deployment, dict):
        problems.append(f"deployment: {deployment['error']}")
    elif not deployment.exists:
        problems.append(f"deployment {deployment.name} does not exist")
    elif deployment.ready == 0:
        problems.append(f"deployment {deployment.name} has 0/{deployment.desired} ready pods "
                        f"({deployment.conditions.get('Available', 'no Available condition')})")
    assert not problems, f"{service} is down: " + "; ".join(problems)
