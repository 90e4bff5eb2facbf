"""Investigation — analyze error patterns and rates: for each service, the error lines in its
pods' logs per minute over the window that ended when the run started, against the window
before it, and the most frequent error signatures (numbers, ids and times normalised), each
with a count and one example with credentials masked.

The window ends at the run's start, so the errors this run's own probes cause (a canary
login refused, a cache read failing) are never judged by it. A rate at or over
``error_rate_per_minute`` that is also ``error_spike_ratio`` times the window before's is a
spike (degradation); as high as before, a standing error rate (minor)."""

from __future__ import annotations

from collections.abc import Callable

from unibazzar_health.errorlogs import ErrorActivity
from unibazzar_health.runbook import CheckContext, Finding, per_service
from unibazzar_health.settings import Thresholds


def observe_errors(service: str) -> Callable[[CheckContext], ErrorActivity]:
    def observe(ctx: CheckContext) -> ErrorActivity:
        import time

        from unibazzar_health.errorlogs import error_activity

        thresholds, rules = ctx.env.spec.thresholds, ctx.env.spec.error_logs
        window = thresholds.error_window_minutes
        # Both windows, from the run's start back; a second more for the rounding. Shared:
        # a failed check's context takes its last lines from it (service_context.py).
        since = int(time.time() - ctx.started_at + 2 * window * 60) + 1
        logs = ctx.pod_logs(service, since)
        lines = (line for text in logs.values() for line in text.splitlines())
        return error_activity(lines, rules.pattern, until=ctx.started_at, window_minutes=window,
                              top=rules.signatures, pods=len(logs))

    return observe


def _top(observed: ErrorActivity, shown: int = 3) -> str:
    return "; ".join(f"{s.count} x {s.signature!r}" for s in observed.signatures[:shown])


@per_service("error-patterns", observe_errors)
def test_error_rate_has_not_spiked(service: str, observed: ErrorActivity,
                                   thresholds: Thresholds) -> None:
    if observed.rate < thresholds.error_rate_per_minute:
        return
    window = f"{observed.window_minutes:g} min"
    spiked = observed.rate >= thresholds.error_spike_ratio * observed.previous_rate
    if spiked:
        raise Finding(
            f"error spike in {service}'s logs: {observed.rate:.1f} error lines/min over the "
            f"{window} before the run ({observed.errors} lines), up from "
            f"{observed.previous_rate:.1f}/min in the {window} before that; top: "
            f"{_top(observed)}", impact="degradation")
    raise Finding(
        f"standing error rate in {service}'s logs: {observed.rate:.1f} error lines/min over "
        f"the {window} before the run ({observed.errors} lines), as high as the "
        f"{window} before that ({observed.previous_rate:.1f}/min); top: {_top(observed)}",
        impact="minor")
