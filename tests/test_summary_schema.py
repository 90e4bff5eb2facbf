"""summary.json's contract: docs/summary.schema.json is the summary model's schema
(verdict/model.py), and what a run writes matches it — every field it always writes, no
other, each of its type — and reads back as it was written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.model import Silenced, Summary, schema_text
from unibazzar_health.verdict.results import CheckResult, Outcome
from unibazzar_health.verdict.severity import severity_of
from unibazzar_health.verdict.summary import Response, RunInfo, build_summary

SCHEMA_FILE = Path(__file__).parents[1] / "docs" / "summary.schema.json"
REGENERATE = ("PYTHONPATH=plugins .venv/bin/python -c 'from pathlib import Path; "
              "from unibazzar_health.verdict.model import schema_text; "
              "Path(\"docs/summary.schema.json\").write_text(schema_text())'")


def schema_errors(summary: dict[str, Any]) -> list[str]:
    """Where a written summary (summary.json, as JSON) departs from the committed schema."""
    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in validator.iter_errors(summary)]


def test_the_committed_schema_is_the_models() -> None:
    Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        f"{SCHEMA_FILE.name} is not the schema of verdict/model.py's Summary: regenerate it "
        f"from the repository's root with\n    {REGENERATE}\nand read the diff")


T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
CATALOG = load_catalog()


def result(check_id: str, outcome: Outcome, **fields: Any) -> CheckResult:
    entry = CATALOG.check(check_id)
    found = CheckResult(id=entry.id, service=entry.service, step=entry.step, title=entry.title,
                        nodeid=f"checks/test_x.py::{entry.id}", outcome=outcome,
                        depends_on=list(entry.depends_on), duration_s=1.5, **fields)
    if outcome is Outcome.FAILED:
        found.impact = found.impact or entry.impact
        found.severity = severity_of(found.impact).level
        found.impact_statement = entry.impact_statement
        found.fixes, found.commands = list(entry.fixes), ["redis-cli -u 'redis://cache' ping"]
    return found


REFUSED = {"backend": "postgresql", "target": "db:5432/auth", "kind": "auth_rejected",
           "problem": "password authentication failed for user checks", "deadline": 2.0}
REDIS_DOWN = {"backend": "redis", "target": "cache:6379/0", "kind": "refused",
              "problem": "connection refused", "deadline": 2}
CHANGE = {"service": "listing-service", "deployment": "listing-service", "namespace": "prod",
          "revision": 7, "replica_set": "listing-service-5d8f", "rolled_out_at": None,
          "age_minutes": 12, "rollback": "kubectl --context prod rollout undo "
                                         "deployment/listing-service -n prod"}

FAILING = [
    result("listing.related-systems", Outcome.FAILED, message="redis refused",
           failed_dependencies=["redis"], failures=[REDIS_DOWN],
           evidence={"pings": [1, 2.5, None]},
           context={"service": "listing-service", "pods": [], "metrics_available": False,
                    "last_log_lines": {}, "problems": ["metrics-server did not answer"]}),
    result("ai.redis-cache-performance", Outcome.FAILED, message="redis refused",
           failed_dependencies=["redis"], failures=[REDIS_DOWN]),
    result("order.saga-orchestration", Outcome.FAILED, message="2 saga(s) stuck"),
    result("order.database-transaction-health", Outcome.FAILED, message="deadlocks"),
    result("auth.postgresql-connectivity", Outcome.BROKEN, message="refused: own credential",
           failures=[REFUSED], fixes=["Grant the checks' role"], commands=["psql -c 'select 1'"]),
    result("listing.recent-deployments", Outcome.PASSED, evidence={"recent_change": CHANGE}),
    result("ai.end-to-end-search", Outcome.SKIPPED, message="not configured: no 'canary'"),
    result("auth.jwt-secret-configuration", Outcome.NOT_RUN, message="not run: budget"),
]
HEALTHY = [result("auth.postgresql-connectivity", Outcome.PASSED),
           result("ai.end-to-end-search", Outcome.SKIPPED, message="read-only run: writes")]


def summary_of(results: list[CheckResult], **run: Any) -> Summary:
    info = RunInfo("production", "environments/production.toml", T0,
                   T0 + timedelta(seconds=2.5), ["-m", "order-service"], "0.1.0", **run)
    return build_summary(results, CATALOG, info, Response(
        ic="@alice", report_url="https://reports.example/index.html",
        contacts={"level_2": "@bob", "aws_support": "https://aws.example/support"},
        first_failure_at=T0 - timedelta(minutes=40)))


MUTED = Silenced(check="order.saga-orchestration", service="order-service", kind="silence",
                 reason="sagas replayed by hand", until="2026-11-27T05:00:00+00:00")


@pytest.mark.parametrize("summary", [
    summary_of(FAILING, run_mode="oncall", other_failures=["test_other.py::test_x"]),
    summary_of(FAILING).model_copy(update={"silenced": [MUTED]}),  # as session_end.py adds it
    summary_of(HEALTHY, run_mode=None),
    summary_of(HEALTHY, interrupted=True),
], ids=["failing", "silenced", "healthy", "interrupted"])
def test_a_written_summary_matches_the_schema_and_reads_back_unchanged(
        summary: Summary) -> None:
    written = json.dumps(summary.to_dict(), indent=2, ensure_ascii=False)
    data = json.loads(written)
    assert schema_errors(data) == []
    back = Summary.model_validate(data)
    assert json.dumps(back.to_dict(), indent=2, ensure_ascii=False) == written
    assert back == summary


def test_what_a_run_writes_only_sometimes_is_told_apart() -> None:
    failing, healthy = summary_of(FAILING).to_dict(), summary_of(HEALTHY).to_dict()
    assert {"respond_by", "next_update_at"} <= set(failing["verdict"])
    assert not {"respond_by", "next_update_at"} & set(healthy["verdict"])
    assert "silenced" not in failing
    # A field of its own, or one it always writes gone, is a departure from the contract.
    assert schema_errors({**failing, "extra": 1}) == [
        "(top): Additional properties are not allowed ('extra' was unexpected)"]
    without = {k: v for k, v in healthy.items() if k != "root_causes"}
    assert schema_errors(without) == ["(top): 'root_causes' is a required property"]
    checks = [{**failing["checks"][0], "outcome": "flaky"}, *failing["checks"][1:]]
    assert [e.split(":")[0] for e in schema_errors({**failing, "checks": checks})] == [
        "checks/0/outcome"]
