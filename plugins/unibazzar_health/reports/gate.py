"""The run's exit status as a gate: non-zero exactly when the verdict is as severe as the
chosen threshold (``--fail-on``) or a test that is no check failed, and a status of its own
when the verdict is incomplete.

pytest's own codes keep their meaning: 1 a test failed, 2 interrupted, 3 internal error, 4
usage error (a bad environment file or option among them), 5 no check selected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unibazzar_health.verdict.catalog import SEVERITY_ORDER

if TYPE_CHECKING:  # the plugin imports this module: a run without checks loads no pydantic
    from unibazzar_health.verdict.model import Summary

FAIL_ON_CHOICES = (*SEVERITY_ORDER, "any", "never")
# Who runs it decides what fails the run: an engineer and a scheduled probe want every
# failing check to show in the exit status; a post-deploy gate blocks at SEV2 and worse.
DEFAULT_FAIL_ON = {"oncall": "any", "scheduled": "any", "ci": "SEV2"}

EXIT_HEALTHY = 0
EXIT_FAILING = 1  # the verdict is at least as severe as --fail-on, or a test not a check failed
EXIT_INCOMPLETE = 6  # nothing failing at that severity, but the verdict is incomplete


def fails_gate(severity: str | None, fail_on: str) -> bool:
    if severity is None or fail_on == "never":
        return False
    if fail_on == "any":
        return True
    return SEVERITY_ORDER.index(severity) <= SEVERITY_ORDER.index(fail_on)


def exit_status(summary: Summary, fail_on: str) -> int:
    verdict = summary.verdict
    if verdict.status == "failing" and fails_gate(verdict.severity, fail_on):
        return EXIT_FAILING
    if summary.other_failures:
        # A failed test that is no check's result (a test of another suite collected beside
        # the checks, a check's teardown): pytest's own "tests failed", whatever --fail-on
        # says of the verdict, which does not judge it.
        return EXIT_FAILING
    if (verdict.status == "incomplete" or verdict.broken_checks or verdict.interrupted
            or summary.counts.not_run):
        # A service nothing judged (its every check skipped) is incomplete too.
        return EXIT_INCOMPLETE
    return EXIT_HEALTHY


def explain(summary: Summary, fail_on: str, status: int) -> str:
    """One line for the terminal: why the run exits as it does."""
    verdict = summary.verdict
    severity = verdict.severity
    others = summary.other_failures
    if status == EXIT_FAILING and not (verdict.status == "failing"
                                       and fails_gate(severity, fail_on)):
        return (f"exit {status}: {len(others)} test(s) that are no runbook check failed "
                f"({', '.join(others[:3])}{', …' if len(others) > 3 else ''}): a failed test "
                "never exits 0")
    if status == EXIT_FAILING:
        return f"exit {status}: verdict {severity} fails the gate (--fail-on {fail_on})"
    if status == EXIT_INCOMPLETE:
        below = (f"; {severity} is below --fail-on {fail_on}" if severity else "")
        refused = [r.dependency for r in summary.refused_credentials]
        own = (f"; {', '.join(refused)} refused the checks' own credentials: fix their "
               "configuration" if refused else "")
        return (f"exit {status}: verdict incomplete (a check broken or not run, or a service "
                f"nothing judged){own}{below}")
    if severity:
        return f"exit {status}: verdict {severity} is below the gate (--fail-on {fail_on})"
    return f"exit {status}: healthy"
