"""Investigation — check recent deployments and changes: each service's Deployment is not
stuck mid-rollout, and a rollout that landed within the change window is named.

A stuck rollout (Progressing=False, ProgressDeadlineExceeded) fails the check. A recent rollout
alone does not: right after every deploy a scheduled probe would page and a CI post-deploy
run would fail. It is kept as evidence (`recent_change`), and the verdict names it beside
the failures it may have caused, with the rollback command (docs/summary.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unibazzar_health.runbook import CheckContext, Finding, per_service


def observe_rollout(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import kubernetes
        from unibazzar_health.results import as_evidence

        deployment = ctx.deployment(service)
        rollout = kubernetes.rollout_history(ctx.kube(), deployment)
        seen: dict[str, Any] = {"rollout": as_evidence(rollout)}
        window = ctx.env.spec.thresholds.recent_change_minutes
        latest = rollout.replica_sets[0] if rollout.replica_sets else None
        if (latest is not None and (latest.revision or 0) > 1
                and latest.age_minutes is not None and latest.age_minutes <= window):
            seen["recent_change"] = {
                "service": service, "deployment": deployment,
                "namespace": ctx.env.spec.kubernetes.namespace,
                "revision": latest.revision, "replica_set": latest.name,
                "rolled_out_at": latest.created_at, "age_minutes": latest.age_minutes,
            }
        return seen

    return observe


@per_service("recent-deployments", observe_rollout)
def test_check_recent_deployments_and_changes(service: str, observed: dict[str, Any]) -> None:
    rollout = observed["rollout"]
    assert rollout["exists"], f"deployment {rollout['name']} does not exist"
    if (rollout["progressing_status"] == "False"
            and rollout["progressing_reason"] == "ProgressDeadlineExceeded"):
        raise Finding(f"rollout of {rollout['name']} revision {rollout['revision']} is stuck: "
                      f"ProgressDeadlineExceeded: {rollout['progressing_message']} "
                      f"({rollout['updated']}/{rollout['desired']} updated, "
                      f"{rollout['unavailable']} unavailable)", impact="degradation")
