"""The plugin end to end with pytester: selection by service, outcomes kept apart,
severities and fixes from the catalog, the summary on disk, secrets kept out — with
xdist (-n 2) and without it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.verdict.catalog import load_catalog

SECRET = "pl4in-secret-never-shown"
CATALOG = load_catalog()

ENV = """
[environment]
name = "pytester"

[deadlines]
default = 1.0
check = 2.0

[postgresql.auth]
dsn = "postgresql://health@127.0.0.1:5432/auth"
password_env = "PYTESTER_DB_PASSWORD"

[kubernetes]
namespace = "unibazzar-test"
mode = "url"
api_url = "http://127.0.0.1:9"
"""

CHECKS = '''
import time
from dataclasses import dataclass

from unibazzar_health.probes import FailureKind, ProbeError
from unibazzar_health.judges.runbook import Finding, runbook_check


@dataclass
class Seen:
    value: int
    started: float
    finished: float


def observe_value(value):
    def observe(ctx):
        started = time.monotonic()
        time.sleep(0.3)
        return Seen(value, started, time.monotonic())
    return observe


def observe_unreachable(ctx):
    raise ProbeError("postgresql", "127.0.0.1:5432/auth", "connection refused", 1.0,
                     kind=FailureKind.REFUSED)


def observe_crash(ctx):
    return {}["missing"]


def observe_not_configured(ctx):
    return ctx.vector_db()


def observe_leaky(ctx):
    return {"password": ctx.env.secret("PYTESTER_DB_PASSWORD")}


@runbook_check("auth.postgresql-connectivity", observe=observe_value(1))
def test_auth_passes(observed):
    assert observed.value == 1


@runbook_check("auth.jwt-secret-configuration", observe=observe_value(2))
def test_auth_forged_token_accepted(observed):
    raise Finding("auth-service accepts forged tokens: alg-none", impact="security",
                  mode="forged-token-accepted")


@runbook_check("listing.dynamodb-table-status", observe=observe_unreachable)
def test_listing_unreachable(observed):
    pass


@runbook_check("listing.s3-image-uploads", observe=observe_value(3))
def test_listing_assertion_fails(observed):
    assert observed.value == 4, "canary object read back from the bucket differs"


@runbook_check("order.saga-orchestration", observe=observe_crash)
def test_order_broken(observed):
    pass


@runbook_check("ai.vector-database-connectivity", observe=observe_not_configured)
def test_ai_not_configured(observed):
    pass


@runbook_check("ai.redis-cache-performance", observe=observe_leaky)
def test_ai_leaks_nothing(observed):
    assert observed["password"] == "wrong", f"password was {observed['password']}"
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTESTER_DB_PASSWORD", SECRET)
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env=ENV)
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = pytester.runpytest_subprocess(
        "--env-file=env.toml", f"--reports-dir={pytester.path / 'reports'}", *args)
    summary_file = pytester.path / "reports" / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return result, summary


def by_id(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in summary["checks"]}


@pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_outcomes_severities_and_fixes_reach_the_summary(suite: pytest.Pytester,
                                                         mode: list[str]) -> None:
    result, summary = run(suite, *mode)
    assert result.ret == 1
    checks = by_id(summary)
    assert {k: v["outcome"] for k, v in checks.items()} == {
        "auth.postgresql-connectivity": "passed",
        "auth.jwt-secret-configuration": "failed",
        "listing.dynamodb-table-status": "failed",
        "listing.s3-image-uploads": "failed",
        "order.saga-orchestration": "broken",
        "ai.vector-database-connectivity": "skipped",
        "ai.redis-cache-performance": "failed",
    }
    forged = checks["auth.jwt-secret-configuration"]
    assert (forged["impact"], forged["severity"]) == ("security", "SEV1")
    # Its failure mode's fixes, across workers too: a verifier to fix, not secrets to rotate.
    assert forged["fixes"] == list(CATALOG.check("auth.jwt-secret-configuration")
                                   .mode("forged-token-accepted").fixes)
    assert forged["fixes"][0].startswith("Fix token verification in auth-service")
    assert forged["message"] == "auth-service accepts forged tokens: alg-none"
    unreachable = checks["listing.dynamodb-table-status"]
    assert (unreachable["impact"], unreachable["severity"]) == ("outage", "SEV1")
    assert unreachable["message"] == \
        "postgresql at 127.0.0.1:5432/auth: connection refused (deadline 1 s)"
    assert unreachable["commands"] == [
        "{aws} dynamodb describe-table --table-name {listings_table} --region {aws_region}"]
    # The probe's failure, kind and all, as plain data (across xdist workers too).
    assert unreachable["failures"] == [{"backend": "postgresql", "target": "127.0.0.1:5432/auth",
                                        "kind": "refused", "problem": "connection refused",
                                        "deadline": 1.0}]
    assert checks["listing.s3-image-uploads"]["failures"] == []
    s3 = checks["listing.s3-image-uploads"]
    assert (s3["severity"], s3["message"]) == \
        ("SEV2", "canary object read back from the bucket differs")
    assert s3["evidence"]["value"] == 3
    broken = checks["order.saga-orchestration"]
    assert broken["severity"] is None and broken["message"] == "KeyError: 'missing'"
    assert checks["ai.vector-database-connectivity"]["message"] == \
        "not configured: the environment has no 'vector_db'"
    verdict = summary["verdict"]
    # When the response and the next update are due: the runbook's 15 and 30 minutes.
    started = datetime.fromisoformat(summary["started_at"])
    assert datetime.fromisoformat(verdict.pop("respond_by")) == started + timedelta(minutes=15)
    finished = datetime.fromisoformat(summary["finished_at"])
    assert datetime.fromisoformat(verdict.pop("next_update_at")) == finished + timedelta(
        minutes=30)
    assert verdict == {
        "status": "failing", "severity": "SEV1", "title": "Critical",
        "respond_within": "15 minutes",
        "failing_checks": ["auth.jwt-secret-configuration", "listing.dynamodb-table-status",
                           "listing.s3-image-uploads", "ai.redis-cache-performance"],
        "broken_checks": ["order.saga-orchestration"], "unchecked_services": [],
        "interrupted": False}
    assert summary["counts"] == {"passed": 1, "failed": 4, "broken": 1, "skipped": 1,
                                 "not-run": 0}
    result.stdout.fnmatch_lines([
        "*UniBazzar incident verdict*",
        "VERDICT SEV1 Critical: respond within 15 minutes — 4 of 7 checks failing*",
        "  FAIL SEV1 auth-service · 2. Verify JWT secret configuration*",
        "       fix:  Fix token verification in auth-service*",
        "*BROKEN order-service*",
        "summary: *summary.json",
    ])


@pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_no_secret_reaches_terminal_or_summary(suite: pytest.Pytester, mode: list[str]) -> None:
    result, summary = run(suite, *mode, "-m", "ai-service")
    leaky = by_id(summary)["ai.redis-cache-performance"]
    assert leaky["outcome"] == "failed"
    assert leaky["message"] == "password was ***"
    assert leaky["evidence"] == {"password": "***"}
    output = result.stdout.str() + result.stderr.str()
    assert "password was ***" in output
    assert SECRET not in output
    assert SECRET not in (suite.path / "reports" / "summary.json").read_text()


@pytest.mark.parametrize("service", ["auth-service", "listing-service", "order-service",
                                     "ai-service"])
def test_a_service_marker_selects_exactly_its_checks(suite: pytest.Pytester,
                                                     service: str) -> None:
    _, summary = run(suite, "-p", "no:xdist", "-m", service)
    assert summary["checks"]
    assert {c["service"] for c in summary["checks"]} == {service}


def test_observations_run_concurrently(pytester: pytest.Pytester) -> None:
    """Every observation is in flight at once: each starts before any finishes."""
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "c"\n')
    pytester.makepyfile(test_overlap='''
import time
from unibazzar_health.judges.runbook import runbook_check

def observe(ctx):
    started = time.monotonic()
    time.sleep(0.5)
    return {"started": started, "finished": time.monotonic()}

''' + "\n".join(f'''
@runbook_check("{cid}", observe=observe)
def test_{n}(observed):
    pass
''' for n, cid in enumerate(["auth.postgresql-connectivity", "auth.jwt-secret-configuration",
                             "listing.s3-image-uploads", "ai.redis-cache-performance"])))
    result, summary = run(pytester, "-p", "no:xdist")
    assert result.ret == 0
    spans = [c["evidence"] for c in summary["checks"]]
    assert len(spans) == 4
    assert max(s["started"] for s in spans) < min(s["finished"] for s in spans)
    # Each check is charged its own 0.5 s of probing, not also the time its test waited.
    assert all(0.5 <= c["duration_s"] < 0.9 for c in summary["checks"]), summary["checks"]


@pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_every_check_is_observed_exactly_once_and_all_at_once(pytester: pytest.Pytester,
                                                               mode: list[str]) -> None:
    """With or without xdist, each selected check's observation runs once (counted across
    processes), and all are in flight together: a dead platform costs one deadline. Under
    xdist's own load scheduling a worker learned of most checks only after finishing others."""
    from unibazzar_health.verdict.catalog import load_catalog

    ids = sorted(load_catalog().checks)[:12]
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "once"\n[deadlines]\ncheck = 5\n')
    log = pytester.path / "observed.log"
    pytester.makepyfile(test_once=f'''
import os, time
from unibazzar_health.judges.runbook import runbook_check

def observe_as(check_id):
    def observe(ctx):
        started = time.monotonic()
        with open({str(log)!r}, "a") as out:
            out.write(check_id + "\\n")
        time.sleep(1.0)
        return {{"started": started, "finished": time.monotonic(), "pid": os.getpid()}}
    return observe
''' + "\n".join(f'''
@runbook_check("{cid}", observe=observe_as("{cid}"))
def test_{n}(observed):
    pass
''' for n, cid in enumerate(ids)))
    result, summary = run(pytester, *mode)
    assert result.ret == 0, result.stdout.str()
    assert sorted(log.read_text().split()) == ids
    spans = [c["evidence"] for c in summary["checks"]]
    assert len(spans) == len(ids)
    if mode[0] == "-n":
        assert len({s["pid"] for s in spans}) == 2
    # CLOCK_MONOTONIC is system-wide on Linux: comparable across the workers.
    assert max(s["started"] for s in spans) < min(s["finished"] for s in spans), spans


@pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_pytests_own_variable_never_breaks_an_observation_reading_the_environment(
        pytester: pytest.Pytester, mode: list[str]) -> None:
    """requests and botocore read os.environ whole (their proxy lookup) on the observations'
    threads, while pytest sets PYTEST_CURRENT_TEST as each test starts and removed it as each
    ended: a key listed then gone was a KeyError, a check broken for nothing. Here every
    observation reads the environment whole for as long as tests keep ending, with the
    interpreter switching threads as often as it can."""
    from unibazzar_health.verdict.catalog import load_catalog

    ids = sorted(load_catalog().checks)[:12]
    pytester.makeconftest('import sys\nsys.setswitchinterval(1e-6)\n'
                          'pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "environ"\n[deadlines]\ncheck = 20\n')
    pytester.makepyfile(test_environ='''
import os, time
from unibazzar_health.judges.runbook import runbook_check

def reading_for(seconds):
    def observe(ctx):
        end, reads = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            for _ in os.environ.items():
                pass
            reads += 1
        return {"reads": reads}
    return observe
''' + "\n".join(f'''
@runbook_check("{cid}", observe=reading_for({0.05 * (n + 1)}))
def test_{n}(observed):
    assert observed["reads"] > 0
''' for n, cid in enumerate(ids)))
    result, summary = run(pytester, *mode)
    assert result.ret == 0, result.stdout.str()
    assert {c["outcome"] for c in summary["checks"]} == {"passed"}, summary["checks"]


def test_budget_exhausted_reports_not_run_and_keeps_the_others(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "b"\n[deadlines]\ncheck = 60\n')
    pytester.makepyfile(test_budget='''
import time
from unibazzar_health.judges.runbook import runbook_check

def quick(ctx):
    return {"ok": True}

def hung(ctx):
    time.sleep(30)

@runbook_check("auth.postgresql-connectivity", observe=quick)
def test_quick(observed):
    assert observed["ok"]

@runbook_check("ai.redis-cache-performance", observe=hung)
def test_hung(observed):
    pass
''')
    result, summary = run(pytester, "-p", "no:xdist", "--budget", "1")
    checks = by_id(summary)
    assert checks["auth.postgresql-connectivity"]["outcome"] == "passed"
    assert checks["ai.redis-cache-performance"]["outcome"] == "not-run"
    assert checks["ai.redis-cache-performance"]["message"].startswith("not run: budget exhausted")
    assert summary["verdict"]["status"] == "incomplete"
    result.stdout.fnmatch_lines(["VERDICT INCOMPLETE*", "  NOT RUN ai-service*"])


def test_an_observation_past_its_limit_fails_and_is_abandoned(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "l"\n[deadlines]\ncheck = 0.5\n')
    pytester.makepyfile(test_limit='''
import time
from unibazzar_health.judges.runbook import runbook_check

def ignores_its_deadline(ctx):
    time.sleep(60)

@runbook_check("ai.redis-cache-performance", observe=ignores_its_deadline)
def test_hung(observed):
    pass
''')
    result, summary = run(pytester, "-p", "no:xdist")
    check = by_id(summary)["ai.redis-cache-performance"]
    assert check["outcome"] == "failed"
    assert check["message"] == (
        "ObservationTimeout: the check's probes took longer than its 0.5 s limit "
        "(deadlines.check): slow answers added up, or a probe ignored its deadline")
    assert result.ret == 1


def test_an_abandoned_observation_gives_its_slot_back(pytester: pytest.Pytester) -> None:
    """With one slot, a stuck check must not hold back the checks queued behind it."""
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "l"\n[deadlines]\ncheck = 0.5\n')
    pytester.makepyfile(test_slots='''
import time
from unibazzar_health.judges.runbook import runbook_check

def stuck(ctx):
    time.sleep(60)

def quick(ctx):
    return {"ok": True}

@runbook_check("ai.redis-cache-performance", observe=stuck)
def test_a_stuck(observed):
    pass

@runbook_check("auth.postgresql-connectivity", observe=quick)
def test_b_quick(observed):
    assert observed["ok"]
''')
    _, summary = run(pytester, "-p", "no:xdist", "--concurrency", "1", "--budget", "20")
    checks = by_id(summary)
    assert checks["ai.redis-cache-performance"]["outcome"] == "failed"
    assert checks["auth.postgresql-connectivity"]["outcome"] == "passed"
    assert summary["duration_s"] < 5


def test_an_unknown_check_id_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "u"\n')
    pytester.makepyfile(test_unknown='''
from unibazzar_health.judges.runbook import runbook_check

@runbook_check("auth.no-such-step", observe=lambda ctx: None)
def test_x(observed):
    pass
''')
    result, _ = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x: check id 'auth.no-such-step' is not in the catalog*"])


def test_the_catalog_covers_every_check_in_the_suite() -> None:
    """Each check in checks/ names a catalog id, and every catalog id is some check's: no
    orphan on either side. Read from the check modules' own marks (parametrized ones
    included), as pytest sees them."""
    import importlib.util
    import sys

    from unibazzar_health.verdict.catalog import load_catalog

    def check_ids(marks: list[pytest.Mark]) -> set[str]:
        return {m.args[0] for m in marks if m.name == "check"}

    used: set[str] = set()
    root = Path(__file__).resolve().parent.parent / "checks"
    for path in sorted(root.rglob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"checks_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        for name, test in vars(module).items():
            if not name.startswith("test_"):
                continue
            marks = list(getattr(test, "pytestmark", []))
            used |= check_ids(marks)
            for mark in marks:
                if mark.name == "parametrize":
                    for param in mark.args[1]:
                        used |= check_ids([m.mark for m in getattr(param, "marks", ())])
    assert used == set(load_catalog().checks)
