"""A run's Prometheus metrics, made from its summary: written to a node_exporter
textfile-collector file (``--metrics-file``) and/or pushed to a Pushgateway
(``--pushgateway``). Names, labels and their meaning: docs/metrics.md.

Plain functions over the summary (verdict/model.py), called once by the plugin after
summary.json is on disk. prometheus_client is imported here only, and this module only by a
run that asks for metrics, so a run without them does not pay for it
(tests/test_lean_startup.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from unibazzar_health.probes import bounded
from unibazzar_health.verdict.model import Summary
from unibazzar_health.verdict.results import Outcome
from unibazzar_health.verdict.severity import SEVERITY_TABLE

PREFIX = "unibazzar_health"
JOB = "unibazzar_health"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"
OUTCOMES = ("passed", "failed", "broken", "skipped", "not-run")
STATUSES = ("healthy", "incomplete", "failing")
CHECK_LABELS = ("environment", "check", "service", "step")
# A push waits at most this long, whatever the Pushgateway does: the verdict is out already,
# and a scheduled probe must not overrun its tick for a dashboard.
PUSH_DEADLINE_S = 5.0


class MetricsError(Exception):
    pass


def severity_number(severity: str | None) -> int:
    """SEV1 -> 1 ... SEV4 -> 4 (severity.SEVERITY_TABLE); 0 for nothing failing (alert on
    ``> 0 and <= 2``)."""
    known = SEVERITY_TABLE.get(severity) if severity else None
    return known.number if known else 0


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def succeeded(summary: Summary) -> bool:
    """A success is a healthy verdict: every selected check ran and passed (or was skipped
    as not configured), none failed or broke."""
    return summary.verdict.status == "healthy"


def build_registry(summary: Summary, last_success: float | None,
                   posting: dict[str, Any] | None = None) -> Any:
    """Every metric of the run in a fresh registry. ``last_success`` is the previous
    successful run's timestamp, kept when this run did not succeed (None: none known, and
    the metric is left out rather than made up)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    environment = summary.environment

    def gauge(name: str, doc: str, labels: Iterable[str]) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", doc, list(labels), registry=registry)

    up = gauge("check_up", "1 if the check passed, 0 if it failed; absent when it did not "
                           "judge (broken, skipped, not run)", CHECK_LABELS)
    outcome = gauge("check_outcome", "1 for the check's outcome in the last run, 0 for the "
                                     "others", (*CHECK_LABELS, "outcome"))
    severity = gauge("check_severity", "severity of the failing check: 1 = SEV1 ... 4 = SEV4; "
                                       "0 when it is not failing", CHECK_LABELS)
    duration = gauge("check_duration_seconds", "the check's time, its probes included",
                     CHECK_LABELS)
    for check in summary.checks:
        labels = {"environment": environment, "check": check.id,
                  "service": check.service, "step": check.step}
        if check.outcome in (Outcome.PASSED, Outcome.FAILED):
            up.labels(**labels).set(1 if check.outcome is Outcome.PASSED else 0)
        for name in OUTCOMES:
            outcome.labels(**labels, outcome=name).set(1 if check.outcome == name else 0)
        severity.labels(**labels).set(severity_number(check.severity) if check.failed else 0)
        duration.labels(**labels).set(float(check.duration_s or 0.0))

    verdict = summary.verdict
    gauge("verdict_severity", "the run's verdict: 1 = SEV1 ... 4 = SEV4; 0 when nothing fails",
          ["environment"]).labels(environment).set(severity_number(verdict.severity))
    status = gauge("verdict_status", "1 for the verdict's status in the last run, 0 for the "
                                     "others", ["environment", "status"])
    for name in STATUSES:
        status.labels(environment, name).set(1 if verdict.status == name else 0)
    counts = gauge("checks", "checks of the last run by outcome", ["environment", "outcome"])
    by_outcome = summary.counts.by_outcome()
    for name in OUTCOMES:
        counts.labels(environment, name).set(by_outcome.get(name, 0))
    gauge("run_duration_seconds", "wall clock of the last run",
          ["environment"]).labels(environment).set(float(summary.duration_s))
    finished = _timestamp(summary.ended_at)
    gauge("run_timestamp_seconds", "when the last run finished (Unix time)",
          ["environment"]).labels(environment).set(finished)
    last = finished if succeeded(summary) else last_success
    if last is not None:
        gauge("last_success_timestamp_seconds", "when the last run with a healthy verdict "
                                                "finished (Unix time)",
              ["environment"]).labels(environment).set(last)
    gauge("build_info", "the unibazzar-health version that ran the checks",
          ["environment", "version"]).labels(environment, summary.version).set(1)
    if posting is not None:
        deliveries = gauge("posting_deliveries", "deliveries this run dealt with, by notifier, "
                                                 "status and how the service answered "
                                                 "(refused: a 4xx that never succeeds)",
                           ["environment", "notifier", "status", "answer"])
        for result in posting.get("results", []):
            deliveries.labels(environment, result["notifier"], result["status"],
                              result.get("answer") or "none").inc()
    return registry


def previous_last_success(path: Path, environment: str) -> float | None:
    """The last success recorded in an earlier metrics file for ``environment``, if any: a
    textfile is replaced whole, so a failing run carries the value forward."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and \
                        sample.labels.get("environment") == environment:
                    return float(sample.value)
    except ValueError:  # not a metrics file (someone else's, or cut short): start afresh
        return None
    return None


def write_textfile(path: Path, summary: Summary,
                   posting: dict[str, Any] | None = None) -> Path:
    """Atomically (prometheus_client writes a temporary file beside it and renames it): the
    collector never reads half a file. Name it ``*.prom`` for node_exporter."""
    from prometheus_client import write_to_textfile

    path.parent.mkdir(parents=True, exist_ok=True)
    last = previous_last_success(path, summary.environment)
    write_to_textfile(str(path), build_registry(summary, last, posting))
    return path


def push(url: str, summary: Summary, deadline: float = PUSH_DEADLINE_S,
         posting: dict[str, Any] | None = None) -> None:
    """POST to the Pushgateway (job ``unibazzar_health``, grouped by environment): POST
    replaces only the metric names it sends, so a failing run leaves the last success the
    gateway holds in place. Raises MetricsError, within ``deadline`` seconds."""
    from prometheus_client import pushadd_to_gateway

    registry = build_registry(summary, last_success=None, posting=posting)
    grouping = {"environment": summary.environment}
    try:
        bounded(lambda: pushadd_to_gateway(url, job=JOB, registry=registry,
                                           grouping_key=grouping, timeout=deadline),
                deadline, "pushgateway", url)
    except Exception as exc:  # any failure: reported, never fatal to the run
        raise MetricsError(f"push to {url} failed: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason or exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def export(summary: Summary, metrics_file: Path | None,
           pushgateway: str | None, posting: dict[str, Any] | None = None) -> list[str]:
    """Everything asked for; one line per outcome, for the terminal (a failure is a line,
    never an exception: the verdict stands without its metrics)."""
    lines = []
    if metrics_file is not None:
        try:
            lines.append(f"metrics: {write_textfile(metrics_file, summary, posting)}")
        except OSError as exc:
            lines.append(f"metrics: cannot write {metrics_file}: {exc.strerror or exc}")
    if pushgateway:
        try:
            push(pushgateway, summary, posting=posting)
            lines.append(f"metrics: pushed to {pushgateway}")
        except MetricsError as exc:
            lines.append(f"metrics: {exc} (the run's verdict and exit status stand)")
    return lines
