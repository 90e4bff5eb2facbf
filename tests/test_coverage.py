"""Runbook coverage: every actionable line of the shipped runbook is answered for, every
reference is real, and every investigation step and common fix is automated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from unibazzar_health.reports.coverage import (
    FEATURES,
    CoverageError,
    actionable_lines,
    coverage,
    load_mapping,
    runbook_text,
)

PACKAGE = Path(__file__).resolve().parent.parent / "plugins" / "unibazzar_health"


def test_every_investigation_step_and_common_fix_is_automated() -> None:
    rows = coverage()
    manual = [r.line.key for r in rows
              if r.line.kind in ("investigation", "common-fix") and r.manual]
    assert not manual, manual
    kinds = {r.line.kind for r in rows}
    assert kinds == {"severity", "initial-response", "investigation", "common-fix", "template",
                     "escalation", "post-incident", "contact", "command"}


def test_the_shipped_runbook_is_the_seed_with_its_emoji_readable() -> None:
    text = runbook_text()
    assert "🚨 INCIDENT ALERT - SEV {LEVEL}" in text and "✅ INCIDENT RESOLVED" in text
    assert sum(1 for line in actionable_lines(text) if line.kind == "investigation") == 20


def test_a_new_runbook_line_is_named_until_answered() -> None:
    text = runbook_text().replace("- Clear stuck transactions\n",
                                  "- Clear stuck transactions\n- Drain the payments queue\n")
    with pytest.raises(CoverageError, match="Drain the payments queue"):
        coverage(text)


def test_an_answer_for_a_line_gone_and_an_unknown_reference_are_errors() -> None:
    mapping = dict(load_mapping())
    mapping["Nowhere / a line the runbook never had"] = ("manual:x",)
    with pytest.raises(CoverageError, match="does not have"):
        coverage(mapping=mapping)
    mapping = dict(load_mapping())
    key = next(iter(mapping))
    mapping[key] = ("check:auth.no-such-check",)
    unknown = re.escape("unknown reference 'check:auth.no-such-check'")
    with pytest.raises(CoverageError, match=unknown):
        coverage(mapping=mapping)


def test_every_feature_names_a_module_that_exists() -> None:
    for name, (module, _) in FEATURES.items():
        assert (PACKAGE / module).exists(), name


def test_the_coverage_command_prints_every_line() -> None:
    done = subprocess.run([sys.executable, "-m", "unibazzar_health", "coverage"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "investigation: 20 lines: 20 automated" in done.stdout
    assert "[auto  ] order-service Issues · Common Fixes: Clear stuck transactions" in done.stdout


def test_every_line_a_person_performs_has_a_command_or_a_prompt_and_is_counted_as_such(
        ) -> None:
    """Initial Response, the templates, escalation and Post-Incident: what a person does is
    marked so, with the command they run (`incident ack`, `note`, `postmortem`…); a line
    partly done by hand is not counted as automated."""
    from unibazzar_health.reports.coverage import coverage

    rows = coverage()
    human = [r for r in rows if r.line.kind in ("initial-response", "template", "escalation",
                                                 "post-incident")]
    assert not [r.line.key for r in human if r.mark == "manual"]
    marks = {r.line.key: r.mark for r in human}
    assert marks["1. Alert Acknowledgment (5 minutes) / Acknowledge the alert in "
                 "PagerDuty/monitoring system"] == "person"
    assert marks["1. Alert Acknowledgment (5 minutes) / Assign an Incident Commander (IC)"] == \
        "person"
    assert marks["Immediate (Within 2 hours) / Document timeline and actions taken"] == "person"
    done = subprocess.run([sys.executable, "-m", "unibazzar_health", "coverage"],
                          capture_output=True, text=True, timeout=60)
    assert "`python -m unibazzar_health incident ack` (acknowledge: escalation pauses, " \
           "PagerDuty is acknowledged)" in done.stdout
    assert "severity: 16 lines: 13 automated, 1 partly automated, 2 manual" in done.stdout


def test_a_common_fix_is_answered_only_by_checks_that_offer_it_and_says_where() -> None:
    """A forged token accepted is a verifier to fix: the JWT check no longer offers "Rotate JWT
    secrets", so coverage.toml cannot say it does; the command prints where each fix is
    offered (by check, failure mode and failure kind) and where it is replaced."""
    mapping = dict(load_mapping())
    key = "auth-service Issues · Common Fixes / Rotate JWT secrets if compromised"
    mapping[key] = ("check:auth.jwt-secret-configuration",)
    with pytest.raises(CoverageError, match="does not offer 'Rotate JWT secrets if compromised'"):
        coverage(mapping=mapping)
    mapping[key] = ("mode:auth.jwt-secret-configuration/no-such-mode",)
    with pytest.raises(CoverageError, match="unknown reference"):
        coverage(mapping=mapping)
    done = subprocess.run([sys.executable, "-m", "unibazzar_health", "coverage"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    scale = lines.index("  [auto  ] ai-service Issues · Common Fixes: Scale up instances if "
                        "CPU/memory bound")
    assert lines[scale + 2] == (
        "           offered by: auth.scope-and-impact · mode resource-bound, "
        "listing.scope-and-impact · mode resource-bound, order.scope-and-impact · mode "
        "resource-bound, ai.scope-and-impact · mode resource-bound, "
        "ai.model-loading-and-memory · mode resource-bound")
    pool = lines.index("  [auto  ] auth-service Issues · Common Fixes: Restart service if "
                       "connection pool exhausted")
    assert lines[pool + 3] == ("           not when the failure is: postgresql.auth_rejected, "
                               "postgresql.refused, postgresql.timeout (their own fixes "
                               "instead)")
