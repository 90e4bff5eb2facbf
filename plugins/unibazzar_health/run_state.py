"""What a checks run keeps between pytest's hooks: the run's state (RunState) on the
config's stash, each check's (CheckItem) on its item's, and the keys that cross to xdist's
workers (only serialised data does)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unibazzar_health.config.redaction import Redactor
from unibazzar_health.judges.observer import Observation, Observer
from unibazzar_health.judges.shared import SharedObservations
from unibazzar_health.verdict.catalog import Catalog, CheckEntry
from unibazzar_health.verdict.results import CheckResult

# Loaded by every pytest run (the pytest11 entry point): the environment's settings and the
# summary's model bring pydantic, so they are named for the type checker only.
if TYPE_CHECKING:
    from unibazzar_health.config.environment import Environment
    from unibazzar_health.verdict.model import Summary


@dataclass
class RunState:
    catalog: Catalog
    env: Environment | None
    redactor: Redactor
    observer: Observer
    check_limit: float
    budget_deadline: float | None
    fail_on: str
    reports_dir: Path
    started_at: Any
    run_mode: str = "oncall"  # who runs it (run_mode()): recorded in summary.json
    results: dict[str, CheckResult] = field(default_factory=dict)
    # Tests that failed outside a check's judged result (a test that is no runbook check, a
    # check's teardown): no verdict covers them, and they never let the run exit 0.
    other_failures: list[str] = field(default_factory=list)
    failed_reports_of_checks: int = 0  # with other_failures, what session.testsfailed counts
    summary: Summary | None = None
    summary_path: Path | None = None
    incident_path: Path | None = None
    measurements: SharedObservations = field(default_factory=SharedObservations)
    metrics_lines: list[str] = field(default_factory=list)  # what --metrics-file/--pushgateway did
    posting: Any = None  # incidents.posting.Report: what this run decided and posted
    posting_thread: Any = None  # the posting under way, beside the verdict's printing
    posting_budget: float = 0.0
    # --metrics-file, --pushgateway: exported again once posting is done, with its results.
    metrics_targets: tuple[Path | None, str | None] = (None, None)


@dataclass
class CheckItem:
    entry: CheckEntry
    observe: Any
    observation: Observation | None = None
    observed: Any = None
    # Time the test spent waiting for its observation: part of call.duration, but the
    # observation's own elapsed time already counts it.
    waited_s: float = 0.0
    result: CheckResult | None = None
    # Never observed: --read-only holds back a check that writes.
    held_back: bool = False


RUN_KEY = pytest.StashKey[RunState]()
ITEM_KEY = pytest.StashKey[CheckItem]()
# When the run started (monotonic, wall clock): taken at configure, before collection, so the
# budget and started_at count from the start even though the run resolves its settings later.
START_KEY = pytest.StashKey[tuple[float, Any]]()
CATALOG_KEY = pytest.StashKey[Catalog]()
# xdist: the controller's environment, to_wire, for every worker (workerinput).
WIRE_KEY = "unibazzar_env"
# xdist: the controller's environment error, for a worker that collected checks (workerinput),
# and that worker's report of it back to the controller (workeroutput).
WIRE_ERROR_KEY = "unibazzar_env_error"
