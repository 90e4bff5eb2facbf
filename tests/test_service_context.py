"""A failed check's context: its service's pods, CPU and memory against limits, and last log
lines, from what the run already read, never read again."""

from __future__ import annotations

import pytest

from unibazzar_health.judges.runbook import LOGS_KEY, PODS_KEY
from unibazzar_health.judges.service_context import LOG_LINES, context_for
from unibazzar_health.judges.shared import SharedObservations
from unibazzar_health.probes import DeadlineExceeded
from unibazzar_health.probes.kubernetes import ContainerHealth, PodsHealth


def container(pod: str) -> ContainerHealth:
    return ContainerHealth(pod=pod, container="ai-service", ready=True, restarts=0,
                           waiting_reason=None, last_termination_reason=None,
                           last_terminated_minutes_ago=None, memory_limit_bytes=512 * 2**20,
                           memory_bytes=256 * 2**20, cpu_limit_millicores=500.0,
                           cpu_millicores=480.0)


def test_the_runs_own_readings_of_pods_and_logs_make_the_context() -> None:
    measurements = SharedObservations()
    pods = PodsHealth("ai-service", True, True, (container("ai-1"), container("ai-2")), 2, 2)
    measurements.get(PODS_KEY.format("ai-service"), lambda: pods)
    lines = [f"2026-11-27T13:00:{n:02d}Z INFO line {n}" for n in range(60)]
    measurements.get(LOGS_KEY.format("ai-service"), lambda: {
        "ai-1": "\n".join([*lines, "ERROR upstream said password=hunter2"]), "ai-2": ""})
    context = context_for(measurements, "ai-service", 1.0)
    assert context["problems"] == []
    assert context["deployment"] == "ai-service" and context["metrics_available"] is True
    assert [(c["pod"], c["cpu_usage"], c["memory_usage"]) for c in context["pods"]] == [
        ("ai-1", 0.96, 0.5), ("ai-2", 0.96, 0.5)]
    last = context["last_log_lines"]["ai-1"]
    assert len(last) == LOG_LINES and last[-1] == "ERROR upstream said password=***"
    assert context["last_log_lines"]["ai-2"] == []


def test_what_was_not_read_or_failed_is_named_not_read_again() -> None:
    measurements = SharedObservations()

    def dead() -> PodsHealth:
        raise DeadlineExceeded("kubernetes", "http://k8s:6443", 2.0)

    with pytest.raises(DeadlineExceeded):
        measurements.get(PODS_KEY.format("order-service"), dead)
    context = context_for(measurements, "order-service", 1.0)
    assert context["pods"] == [] and context["last_log_lines"] == {}
    assert context["problems"] == [
        "pods and metrics: kubernetes at http://k8s:6443: did not answer within the deadline "
        "(deadline 2 s)",
        "logs: not read in this run (its error-patterns check was not selected)"]


def test_a_reading_still_under_way_is_waited_for_only_so_long() -> None:
    """The context is built on pytest's own thread: a stuck read must not hang it."""
    import threading
    import time

    from unibazzar_health.judges.runbook import PODS_KEY
    from unibazzar_health.judges.shared import SharedObservations

    measurements = SharedObservations()
    release = threading.Event()
    threading.Thread(target=measurements.get, args=(PODS_KEY.format("ai-service"),
                                                    lambda: release.wait(30)),
                     daemon=True).start()
    time.sleep(0.05)
    started = time.monotonic()
    context = context_for(measurements, "ai-service", 0.2)
    release.set()
    assert time.monotonic() - started < 5
    assert any("still being read after 0.2 s" in p for p in context["problems"])
