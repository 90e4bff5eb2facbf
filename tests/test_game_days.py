"""Game days: every fault `scripts/sandbox fault` offers is caught by exactly the checks it
names, with their severity (or, for a change that is no failure, named by the verdict as a
CHANGE and failing nothing), and is gone again when switched off; docs/sandbox.md's matrix
is that list."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.catalog import load_catalog

from conftest import ROOT, run_checks, sandbox, sandbox_logs_kept


def faults() -> list[dict[str, Any]]:
    """The sandbox's faults as `fault list --json` gives them (no running sandbox needed)."""
    return list(json.loads(sandbox("fault", "list", "--json").stdout))


FAULTS = {fault["name"]: fault for fault in faults()}


def test_every_fault_names_checks_of_the_catalog() -> None:
    catalog = load_catalog()
    services = {entry.service for entry in catalog.checks.values()}
    for fault in FAULTS.values():
        # A fault fails checks, or is a change the verdict names (never both, never neither).
        assert bool(fault["fails"]) != bool(fault["changes"]), fault["name"]
        for fails in fault["fails"]:
            assert fails["check"] in catalog.checks, (fault["name"], fails)
        assert set(fault["changes"]) <= services, fault["name"]


def matrix_cell(fault: dict[str, Any]) -> str:
    """What docs/sandbox.md's matrix says a fault does to a run."""
    if fault["changes"]:
        return "none; the verdict names " + ", ".join(f"`CHANGE {s}`" for s in fault["changes"])
    return ", ".join(f"`{f['check']}` {f['severity']}" for f in fault["fails"])


def test_docs_sandbox_holds_the_fault_matrix() -> None:
    text = (ROOT / "docs" / "sandbox.md").read_text().split("## Game days", 1)[1]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| ([^|]+) \| ([^|]+) \|$", text, re.MULTILINE)
    assert [name for name, _, _ in rows] == list(FAULTS)
    for name, what, fails in rows:
        assert what.strip() == FAULTS[name]["what"], name
        assert fails.strip() == matrix_cell(FAULTS[name]), name


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox")
@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_fails_exactly_its_checks_and_is_gone_when_off(tmp_path: Path,
                                                               name: str) -> None:
    fault = FAULTS[name]
    expected = {f["check"]: f["severity"] for f in fault["fails"]}
    with sandbox_logs_kept():
        sandbox("fault", name, "on")
        try:
            # Some are seen only once older than a threshold (a lock wait, say).
            time.sleep(fault["ripens_s"])
            result, summary = run_checks(tmp_path / "on")
        finally:
            sandbox("fault", name, "off")
        failed = {c["id"]: c["severity"] for c in summary["checks"] if c["outcome"] == "failed"}
        assert failed == expected, result.stdout[-3000:]
        assert {c["outcome"] for c in summary["checks"] if c["id"] not in failed} == {"passed"}
        # A change is named, with no failure: the run passes.
        changed = {c["service"] for c in summary["recent_changes"]}
        assert changed == set(fault["changes"]), summary["recent_changes"]
        for service in fault["changes"]:
            assert f"  CHANGE {service}: " in result.stdout, result.stdout[-3000:]
        if not expected:
            assert result.returncode == 0, result.stdout[-3000:]
        services = sorted({c["service"] for c in summary["checks"] if c["id"] in failed}
                          | changed)
        result, summary = run_checks(tmp_path / "off", "-m", " or ".join(services))
    assert result.returncode == 0, result.stdout[-3000:]
    assert summary["recent_changes"] == [], summary["recent_changes"]
