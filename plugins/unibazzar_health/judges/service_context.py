"""The runbook's "Gather logs and metrics from affected services": for a service with a
failing check, its pods' last log lines (credentials masked) and each container's CPU and
memory against its limits, attached to that service's failed checks (``CheckResult.context``).

Not a check of its own: gathering always "passes", so such a check would either never fail
or fail for another check's reason. Nor a probe of its own: the run already reads each
service's pods, with metrics-server's CPU and memory (``CheckContext.pods``: the
scope-and-impact check's reading) and its pods' logs over the error windows
(``CheckContext.pod_logs``: the error-patterns check's). The context is taken from those
shared readings, so it costs no request and no wait, on a healthy run or a dead platform.
Where they were not made (those checks deselected, no [kubernetes]), ``problems`` says so.
"""

from __future__ import annotations

from typing import Any

from unibazzar_health.config.redaction import mask_credentials
from unibazzar_health.judges.runbook import LOGS_KEY, PODS_KEY
from unibazzar_health.judges.shared import SharedObservations
from unibazzar_health.probes import ProbeError

LOG_LINES = 50  # per pod
LINE_CHARS = 300


def _container(c: Any) -> dict[str, Any]:
    return {"pod": c.pod, "container": c.container, "ready": c.ready, "restarts": c.restarts,
            "cpu_millicores": c.cpu_millicores, "cpu_limit_millicores": c.cpu_limit_millicores,
            "cpu_usage": c.cpu_usage, "memory_bytes": c.memory_bytes,
            "memory_limit_bytes": c.memory_limit_bytes, "memory_usage": c.memory_usage}


def _problem(what: str, value: Any) -> str:
    if isinstance(value, ProbeError):
        return f"{what}: {value}"
    return f"{what}: {type(value).__name__}: {value}"


def context_for(measurements: SharedObservations, service: str,
                wait_s: float) -> dict[str, Any]:
    """The service's last log lines and resource usage against limits, from what this run
    measured of it; what it did not measure, or could not read, is named under ``problems``."""
    seen: dict[str, Any] = {"service": service, "pods": [], "metrics_available": False,
                            "last_log_lines": {}, "problems": []}
    found, pods = measurements.peek(PODS_KEY.format(service), wait_s)
    if not found:
        seen["problems"].append("pods and metrics: not read in this run (its "
                                "scope-and-impact check was not selected)")
    elif isinstance(pods, BaseException):
        seen["problems"].append(_problem("pods and metrics", pods))
    elif not pods.exists:
        seen["problems"].append(f"deployment {pods.deployment} does not exist")
    else:
        seen["deployment"] = pods.deployment
        seen["pods"] = [_container(c) for c in pods.containers]
        seen["metrics_available"] = pods.metrics_available
    found, logs = measurements.peek(LOGS_KEY.format(service), wait_s)
    if not found:
        seen["problems"].append("logs: not read in this run (its error-patterns check was "
                                "not selected)")
    elif isinstance(logs, BaseException):
        seen["problems"].append(_problem("logs", logs))
    else:
        seen["last_log_lines"] = {
            pod: [mask_credentials(line)[:LINE_CHARS] for line in text.splitlines()[-LOG_LINES:]]
            for pod, text in logs.items()}
    return seen
