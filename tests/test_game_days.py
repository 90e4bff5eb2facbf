"""Game days: every fault `scripts/sandbox fault` offers is caught by exactly the checks it
names, with their severity (or, for a change that is no failure, named by the verdict as a
CHANGE and failing nothing), and is gone again when switched off; docs/sandbox.md's matrix
is that list."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.verdict.catalog import load_catalog

from conftest import (
    ROOT,
    SANDBOX_PYTHON,
    run_checks,
    sandbox,
    sandbox_logs_kept,
    while_game_day_on,
)


def faults() -> list[dict[str, Any]]:
    """The sandbox's faults as `fault list --json` gives them (no running sandbox needed)."""
    return list(json.loads(sandbox("fault", "list", "--json").stdout))


FAULTS = {fault["name"]: fault for fault in faults()}


# Game days of the probe host itself, no fault of the platform: they fail nothing and
# change nothing, so the matrix's on/off proof would say nothing of them. Each has its own
# test below, under the load it stands for.
HOST_GAME_DAYS = ("probe-host-busy",)


def test_every_fault_names_checks_of_the_catalog() -> None:
    catalog = load_catalog()
    services = {entry.service for entry in catalog.checks.values()}
    for fault in FAULTS.values():
        # A fault fails checks, or is a change the verdict names (never both); only a game
        # day of the probe host does neither.
        named = bool(fault["fails"]) + bool(fault["changes"])
        assert named == (0 if fault["name"] in HOST_GAME_DAYS else 1), fault["name"]
        for fails in fault["fails"]:
            assert fails["check"] in catalog.checks, (fault["name"], fails)
        assert set(fault["changes"]) <= services, fault["name"]


def matrix_cell(fault: dict[str, Any]) -> str:
    """What docs/sandbox.md's matrix says a fault does to a run."""
    if fault["name"] in HOST_GAME_DAYS:
        return "none; the verdict stays healthy and pages nothing"
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


FILE_FAULTS = ("jwt-key-mismatch", "webhooks-undelivered", "bad-signatures-accepted",
               "order-partition", "error-spike")


def test_a_fresh_sandbox_starts_with_no_fault_on(tmp_path: Path) -> None:
    """What `up` does first, in a state directory of its own (no server needed): the files
    and markers faults left under faults/ are removed, an error spike's lines cut out of the
    log. Held faults end with the supervisor, and the servers' data starts afresh."""
    log = tmp_path / "logs" / "order-service.log"
    log.parent.mkdir()
    log.write_text("2026-11-27 10:00:00,000 INFO order-service started\n")
    script = (
        "from unibazzar_sandbox.faults import BY_NAME, clear\n"
        "from unibazzar_sandbox.layout import Layout\n"
        f"layout = Layout.from_env({str(tmp_path)!r})\n"
        f"for name in {FILE_FAULTS!r}:\n"
        "    BY_NAME[name].on(layout)\n"
        "(layout.faults / 'kubernetes.crash-loop').write_text('')\n"
        "print(sorted(name for name, f in BY_NAME.items() if name in "
        f"{FILE_FAULTS!r} and f.is_on(layout)))\n"
        "clear(layout)\n"
        "print(sorted(p.name for p in layout.faults.iterdir()))\n")
    done = subprocess.run([str(SANDBOX_PYTHON), "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    was_on, left = done.stdout.splitlines()
    assert was_on == repr(sorted(FILE_FAULTS))
    assert left == "[]"
    assert log.read_text() == "2026-11-27 10:00:00,000 INFO order-service started\n"


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox")
@pytest.mark.parametrize("name", [name for name in FAULTS if name not in HOST_GAME_DAYS])
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
            while_game_day_on(name, summary)  # other tests' part while it is on (conftest)
        finally:
            sandbox("fault", name, "off")
        failed = {c["id"]: c["severity"] for c in summary["checks"] if c["outcome"] == "failed"}
        assert failed == expected, result.stdout[-3000:]
        others = {c["id"]: (c["outcome"], c.get("message")) for c in summary["checks"]
                  if c["id"] not in failed}
        assert {outcome for outcome, _ in others.values()} == {"passed"}, {
            cid: seen for cid, seen in others.items() if seen[0] != "passed"}
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


# Suite runs at once on top of probe-host-busy: each one's threads stall the others' too.
BUSY_RUNS = 3


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox")
def test_a_busy_probe_host_is_healthy_and_pages_nothing(tmp_path: Path) -> None:
    """probe-host-busy keeps every core spinning, and three suite runs at once go on top:
    every run is healthy (exit 0, nothing failed or broken, no incident to page), and its
    Redis evidence shows our host's stall was measured and left out. redis-slow and the
    other slow-backend game days still fail, in the matrix above."""
    from concurrent.futures import ThreadPoolExecutor

    with sandbox_logs_kept():
        sandbox("fault", "probe-host-busy", "on")
        try:
            with ThreadPoolExecutor(BUSY_RUNS) as pool:
                runs = list(pool.map(lambda n: run_checks(tmp_path / f"run{n}", cold=True),
                                     range(BUSY_RUNS)))
        finally:
            sandbox("fault", "probe-host-busy", "off")
    assert FAULTS["probe-host-busy"]["fails"] == []
    assert {f["name"]: f["on"] for f in faults()}["probe-host-busy"] is False  # burners gone
    stalls = []
    for result, summary in runs:
        assert result.returncode == 0, result.stdout[-3000:]
        assert summary["verdict"]["status"] == "healthy", summary["verdict"]
        assert {c["outcome"] for c in summary["checks"]} == {"passed"}, result.stdout[-3000:]
        assert summary["incidents"] == [], summary["incidents"]
        redis = next(c for c in summary["checks"] if c["id"] == "ai.redis-cache-performance")
        assert redis["evidence"]["kernel_timed"] is True, redis["evidence"]
        assert "our host stalled up to" in redis["evidence"]["timing"], redis["evidence"]
        stalls.append(redis["evidence"]["stalled_max_ms"])
    # The load was felt where the checks measure: our host stalled far longer than Redis took.
    assert max(stalls) > 10, stalls
