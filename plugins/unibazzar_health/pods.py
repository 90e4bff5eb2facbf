"""What a Deployment's pods say about a service: crash loops, pods that cannot start, recent
restarts and OOM kills, and ready replicas below the desired count.

Plain judging over what probes.kubernetes.pods_health read, shared by every service's
scope-and-impact check and ai-service's model-loading step.
"""

from __future__ import annotations

from dataclasses import dataclass

from unibazzar_health.probes.kubernetes import PodsHealth

# Waiting reasons of a container that is not coming up by itself.
NOT_STARTING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
                "CreateContainerConfigError", "CreateContainerError", "InvalidImageName",
                "RunContainerError")


@dataclass(frozen=True)
class PodProblem:
    pod: str
    text: str


def pod_problems(pods: PodsHealth, window_minutes: float) -> list[PodProblem]:
    """Each container that crash-loops or cannot start, or that terminated (OOMKilled or
    otherwise, and was restarted) within the window."""
    problems = []
    for c in pods.containers:
        ago = c.last_terminated_minutes_ago
        if c.waiting_reason in NOT_STARTING:
            problems.append(PodProblem(c.pod, f"{c.pod} is in {c.waiting_reason} "
                                              f"({c.restarts} restarts)"))
        recent = ago is not None and ago <= window_minutes
        if recent and c.last_termination_reason == "OOMKilled":
            problems.append(PodProblem(c.pod, f"{c.pod} was OOMKilled {ago:.0f} min ago "
                                              f"({c.restarts} restarts)"))
        elif recent and c.restarts and c.waiting_reason not in NOT_STARTING:
            reason = c.last_termination_reason or "no reason given"
            problems.append(PodProblem(c.pod, f"{c.pod} restarted {ago:.0f} min ago ({reason}, "
                                              f"{c.restarts} restarts)"))
    return problems


def replicas_problem(pods: PodsHealth) -> str | None:
    """The Deployment below its desired ready replicas, said as `kubectl get deployment`
    would."""
    if pods.ready < pods.desired:
        return f"deployment {pods.deployment} has {pods.ready}/{pods.desired} ready pods"
    return None
