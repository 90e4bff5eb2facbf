"""Investigation — analyze error patterns and rates: for each service, the error lines per
minute over the window that ended when the run started, against the window before it, and
the most frequent error signatures (numbers, ids and times normalised), each with a count
and one example with credentials masked. Read from the service's pods' logs and, where the
environment names it ([error_logs] files), from its log file on this host, the runbook's
``/var/log/unibazzar/{service}.log``; each source is judged on its own (a service that logs
to both would otherwise count every error twice).

The window ends at the run's start, so the errors this run's own probes cause (a canary
login refused, a cache read failing) are never judged by it. A rate at or over
``error_rate_per_minute`` that is also ``error_spike_ratio`` times the window before's is a
spike (degradation); as high as before, a standing error rate (minor)."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from unibazzar_health.config.platform import Thresholds
from unibazzar_health.judges.errorlogs import ErrorActivity
from unibazzar_health.judges.runbook import (
    CheckContext,
    Finding,
    NotConfigured,
    gather,
    per_service,
)
from unibazzar_health.probes import ProbeFailure

ErrorSources = dict[str, ErrorActivity | ProbeFailure]  # "pods" and/or "file"


def observe_errors(service: str) -> Callable[[CheckContext], ErrorSources]:
    def observe(ctx: CheckContext) -> ErrorSources:
        import time

        from unibazzar_health.judges.errorlogs import error_activity
        from unibazzar_health.probes import logfiles

        thresholds, rules = ctx.env.spec.thresholds, ctx.env.spec.error_logs
        window = thresholds.error_window_minutes
        # Both windows, from the run's start back; a second more for the rounding.
        since = int(time.time() - ctx.started_at + 2 * window * 60) + 1

        def judge(lines: list[str], source: str, pods: int = 0,
                  cut: bool = False) -> ErrorActivity:
            return error_activity(lines, rules.pattern, until=ctx.started_at,
                                  window_minutes=window, top=rules.signatures, pods=pods,
                                  source=source, cut=cut)

        def from_pods() -> ErrorActivity:
            # Shared: a failed check's context takes its last lines from it
            # (service_context.py).
            logs = ctx.pod_logs(service, since)
            return judge([line for text in logs.values() for line in text.splitlines()],
                         f"pods of deployment/{ctx.deployment(service)}", pods=len(logs))

        def from_file(path: str) -> ErrorActivity:
            read = logfiles.tail(path, rules.file_max_bytes, ctx.env.deadline("logs"))
            return judge(read.text.splitlines(), path, cut=read.truncated)

        sources: dict[str, Callable[[], ErrorActivity]] = {}
        if ctx.env.spec.kubernetes is not None:
            sources["pods"] = from_pods
        path = rules.file_for(service)
        if path:
            sources["file"] = lambda: from_file(path)
        if not sources:
            raise NotConfigured("kubernetes' or '[error_logs] files")
        return gather(**sources)

    return observe


def _top(observed: ErrorActivity, shown: int = 3) -> str:
    return "; ".join(f"{s.count} x {s.signature!r}" for s in observed.signatures[:shown])


def _judged(service: str, observed: ErrorActivity, thresholds: Thresholds,
            names: dict[str, str]) -> Finding | None:
    if observed.rate < thresholds.error_rate_per_minute:
        return None
    window = f"{observed.window_minutes:g} min"
    where = f"{service}'s logs ({observed.source})"
    if observed.before_partial:
        return Finding(
            f"high error rate in {where}: {observed.rate:.1f} error lines/min over the "
            f"{window} before the run ({observed.errors} lines); the {window} before that "
            f"was not read whole (only the file's last bytes are read), so a spike cannot be "
            f"told from a standing rate; top: {_top(observed)}",
            impact="degradation", names=names)
    if observed.rate >= thresholds.error_spike_ratio * observed.previous_rate:
        return Finding(
            f"error spike in {where}: {observed.rate:.1f} error lines/min over the "
            f"{window} before the run ({observed.errors} lines), up from "
            f"{observed.previous_rate:.1f}/min in the {window} before that; top: "
            f"{_top(observed)}", impact="degradation", names=names)
    return Finding(
        f"standing error rate in {where}: {observed.rate:.1f} error lines/min over "
        f"the {window} before the run ({observed.errors} lines), as high as the "
        f"{window} before that ({observed.previous_rate:.1f}/min); top: {_top(observed)}",
        impact="minor", names=names)


@per_service("error-patterns", observe_errors)
def test_error_rate_has_not_spiked(service: str, observed: ErrorSources,
                                   thresholds: Thresholds) -> None:
    # The file's grep joins the commands whichever source's finding is raised.
    file = observed.get("file")
    names = {"error_log_file": shlex.quote(
        file.source if isinstance(file, ErrorActivity) else file.target)} if file else {}
    findings = [finding for source in observed.values() if isinstance(source, ErrorActivity)
                for finding in [_judged(service, source, thresholds, names)] if finding]
    # A spike first: it is what the engineer acts on. Then a source that could not be read:
    # it leaves the service's errors unjudged, never a pass, and may hide a spike. A
    # standing rate last.
    findings.sort(key=lambda f: f.impact == "minor")
    if findings and findings[0].impact != "minor":
        raise findings[0]
    failures = [source for source in observed.values() if isinstance(source, ProbeFailure)]
    if failures:
        unread = Finding.of(failures, f"{service}'s error lines could not be read: ")
        unread.names.update(names)
        raise unread
    if findings:
        raise findings[0]
