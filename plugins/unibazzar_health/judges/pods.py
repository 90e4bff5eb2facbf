"""What a Deployment's pods say about a service: crash loops, pods that cannot start, recent
restarts and OOM kills, ready replicas below the desired count, and whether it is bound by
CPU or memory (where more replicas would help).

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


def resource_bound(pods: PodsHealth, window_minutes: float, memory_share: float,
                   cpu_share: float) -> list[PodProblem]:
    """Each container OOMKilled within the window, or at ``memory_share`` of its memory limit
    or ``cpu_share`` of its CPU limit (metrics-server's reading): the evidence the runbook's
    "Scale up instances if CPU/memory bound" needs. Without it, scaling is no fix."""
    bound = []
    for c in pods.containers:
        ago = c.last_terminated_minutes_ago
        if c.last_termination_reason == "OOMKilled" and ago is not None and ago <= window_minutes:
            bound.append(PodProblem(c.pod, f"{c.pod} was OOMKilled {ago:.0f} min ago "
                                           f"({c.restarts} restarts)"))
        if c.memory_usage is not None and c.memory_usage >= memory_share:
            bound.append(PodProblem(c.pod, f"{c.pod} uses {c.memory_usage:.0%} of its memory "
                                           f"limit (>= {memory_share:.0%})"))
        if c.cpu_usage is not None and c.cpu_usage >= cpu_share:
            bound.append(PodProblem(c.pod, f"{c.pod} uses {c.cpu_usage:.0%} of its CPU limit "
                                           f"({c.cpu_millicores:g}m of "
                                           f"{c.cpu_limit_millicores:g}m, >= {cpu_share:.0%})"))
    return bound


def scaled_replicas(pods: PodsHealth) -> str:
    """Half as many replicas again as the Deployment has, one at least: what a CPU- or
    memory-bound service's `kubectl scale` is filled in with."""
    return str(pods.desired + max(1, pods.desired // 2))
