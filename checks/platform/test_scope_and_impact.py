"""Initial Assessment — verify the incident scope and impact: for each service, its
health endpoint answers and its Deployment has ready pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from unibazzar_health.runbook import CheckContext, runbook_check

SERVICES = {"auth-service": "auth", "listing-service": "listing", "order-service": "order",
            "ai-service": "ai"}


def observe_scope(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import ProbeError, http, kubernetes

        seen: dict[str, Any] = {}
        # Both probes run even if one fails: the engineer needs the whole picture.
        try:
            answer = http.request(service, "GET", ctx.service_url(service, "/health"),
                                  ctx.env.deadline("http"))
            seen["health"] = {"status": answer.status, "elapsed_ms": answer.elapsed_ms}
        except ProbeError as exc:
            seen["health"] = {"error": str(exc)}
        spec = ctx.env.spec.service(service)
        deployment = (spec.deployment if spec and spec.deployment else service)
        try:
            seen["deployment"] = kubernetes.deployment_health(ctx.kube(), deployment)
        except ProbeError as exc:
            seen["deployment"] = {"error": str(exc)}
        return seen

    return observe


@pytest.mark.parametrize("service", [
    pytest.param(service, id=service,
                 marks=runbook_check(f"{prefix}.scope-and-impact", observe=observe_scope(service)))
    for service, prefix in SERVICES.items()
])
def test_service_answers_health_and_has_ready_pods(service: str, observed: dict[str, Any]) -> None:
    health, deployment = observed["health"], observed["deployment"]
    problems = []
    if "error" in health:
        problems.append(f"health endpoint: {health['error']}")
    elif health["status"] != 200:
        problems.append(f"health endpoint answered HTTP {health['status']}")
    if isinstance(deployment, dict):
        problems.append(f"deployment: {deployment['error']}")
    elif not deployment.exists:
        problems.append(f"deployment {deployment.name} does not exist")
    elif deployment.ready == 0:
        problems.append(f"deployment {deployment.name} has 0/{deployment.desired} ready pods "
                        f"({deployment.conditions.get('Available', 'no Available condition')})")
    assert not problems, f"{service} is down: " + "; ".join(problems)
