"""Runbook coverage: every actionable line of the shipped runbook is answered for, every
reference is real, and every investigation step and common fix is automated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from unibazzar_health.coverage import (
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
    assert "investigation: 20 of 20 automated" in done.stdout
    assert "[auto  ] order-service Issues · Common Fixes: Clear stuck transactions" in done.stdout
