"""Investigation — check recent deployments and changes: each service's Deployment is not
stuck mid-rollout, and a rollout that landed within the change window is named.

A stuck rollout (Progressing=False, ProgressDeadlineExceeded) fails the check. A recent rollout
alone does not: right after every deploy a scheduled probe would page and a CI post-deploy
run would fail. It is kept as evidence (`recent_change`), and the verdict names it beside
the failures it may have caused, with the rollback command (docs/summary.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unibazzar_health.judges.runbook import CheckContext, Finding, per_service

# Progressing reasons that mean a rollout reached its ReplicaSet.
ROLLED_OUT = {"NewReplicaSetAvailable", "ReplicaSetUpdated", "FoundNewReplicaSet"}


def observe_rollout(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import kubernetes
        from unibazzar_health.verdict.results import as_evidence, kubectl

        deployment = ctx.deployment(service)
        rollout = kubernetes.rollout_history(ctx.kube(), deployment)
        seen: dict[str, Any] = {"rollout": as_evidence(rollout)}
        window = ctx.env.spec.thresholds.recent_change_minutes
        latest = rollout.replica_sets[0] if rollout.replica_sets else None
        # A rollout's time: its ReplicaSet's creation, or, for a rollback to an old
        # ReplicaSet, when the Deployment last progressed to it.
        ages = [a for a in (latest.age_minutes if latest else None,
                            rollout.progressing_minutes_ago
                            if rollout.progressing_reason in ROLLED_OUT else None)
                if a is not None]
        age = min(ages) if ages else None
        if (latest is not None and (rollout.revision or 0) > 1
                and age is not None and age <= window):
            seen["recent_change"] = {
                "service": service, "deployment": deployment,
                "namespace": ctx.kube().namespace,
                "revision": rollout.revision, "replica_set": latest.name,
                "rolled_out_at": latest.created_at if age == latest.age_minutes else None,
                "age_minutes": age,
                # Pinned to the checked cluster, like every command the verdict prints.
                "rollback": (f"{kubectl(ctx.env)} rollout undo deployment/{deployment} "
                             f"-n {ctx.kube().namespace}"),
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
