"""The exit status as a gate (--fail-on, defaults by run mode, the incomplete status) and the
JUnit XML properties, end to end with pytester, with and without xdist."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from test_summary_schema import schema_errors

from unibazzar_health.reports.gate import EXIT_FAILING, EXIT_HEALTHY, EXIT_INCOMPLETE, exit_status
from unibazzar_health.verdict.model import Counts, Summary, Verdict

MODES = pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]],
                                ids=["serial", "xdist"])


def summary(status: str, severity: str | None, broken: int = 0, not_run: int = 0) -> Summary:
    return Summary(started_at="2026-11-27T03:00:00+00:00",
                   verdict=Verdict(status=status, severity=severity,
                                   broken_checks=["x"] * broken),
                   counts=Counts(not_run=not_run))


@pytest.mark.parametrize(("verdict", "fail_on", "expected"), [
    (summary("failing", "SEV3"), "SEV2", EXIT_HEALTHY),
    (summary("failing", "SEV2"), "SEV2", EXIT_FAILING),
    (summary("failing", "SEV1"), "SEV2", EXIT_FAILING),
    (summary("failing", "SEV4"), "any", EXIT_FAILING),
    (summary("failing", "SEV1"), "never", EXIT_HEALTHY),
    (summary("failing", "SEV3", broken=1), "SEV2", EXIT_INCOMPLETE),
    (summary("failing", "SEV1", broken=1), "SEV2", EXIT_FAILING),
    (summary("incomplete", None, not_run=2), "any", EXIT_INCOMPLETE),
    (summary("incomplete", None, broken=1), "never", EXIT_INCOMPLETE),
    (summary("healthy", None), "any", EXIT_HEALTHY),
    # Every check of a service skipped: nothing of it was judged.
    (summary("incomplete", None), "any", EXIT_INCOMPLETE),
])
def test_exit_status_by_verdict_and_threshold(verdict: Summary, fail_on: str,
                                              expected: int) -> None:
    assert exit_status(verdict, fail_on) == expected


CHECKS = '''
from unibazzar_health.judges.runbook import runbook_check

def observe(ctx):
    return {"served": "999", "stored": "1999"}

@runbook_check("listing.cache-freshness", observe=observe)
def test_stale(observed):
    assert observed["served"] == observed["stored"], "stale data: served 999, stored 1999"

@runbook_check("auth.postgresql-connectivity", observe=observe)
def test_fine(observed):
    pass
'''

BROKEN = '''
from unibazzar_health.judges.runbook import runbook_check

def observe(ctx):
    return {}["missing"]

@runbook_check("auth.postgresql-connectivity", observe=observe)
def test_crashes(observed):
    pass
'''


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "gate"\n')
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--env-file=env.toml", f"--reports-dir={pytester.path / 'reports'}", *args)


@MODES
@pytest.mark.parametrize(("fail_on", "expected"), [("SEV2", 0), ("SEV3", 1), ("any", 1),
                                                    ("never", 0)])
def test_fail_on_sets_the_exit_status(suite: pytest.Pytester, mode: list[str], fail_on: str,
                                      expected: int) -> None:
    suite.makepyfile(test_checks=CHECKS)
    result = run(suite, *mode, f"--fail-on={fail_on}")
    assert result.ret == expected, result.stdout.str()
    result.stdout.fnmatch_lines([f"exit {expected}: verdict SEV3 *--fail-on {fail_on})"])


@pytest.mark.parametrize(("run_mode", "expected"), [("ci", 0), ("oncall", 1), ("scheduled", 1)])
def test_fail_on_defaults_by_run_mode(suite: pytest.Pytester, run_mode: str,
                                      expected: int) -> None:
    suite.makepyfile(test_checks=CHECKS)
    assert run(suite, "-p", "no:xdist", f"--run-mode={run_mode}").ret == expected


@MODES
def test_an_incomplete_verdict_has_its_own_status(suite: pytest.Pytester,
                                                  mode: list[str]) -> None:
    suite.makepyfile(test_checks=BROKEN)
    result = run(suite, *mode, "--fail-on=any")
    assert result.ret == EXIT_INCOMPLETE, result.stdout.str()
    result.stdout.fnmatch_lines(["exit 6: verdict incomplete*"])


@MODES
def test_junit_properties_are_plain_strings(suite: pytest.Pytester, mode: list[str]) -> None:
    suite.makepyfile(test_checks=CHECKS)
    run(suite, *mode, "--junitxml=junit.xml")
    root = ET.parse(suite.path / "junit.xml").getroot()
    cases = {case.get("name"): {p.get("name"): p.get("value")
                                for p in case.iter("property")}
             for case in root.iter("testcase")}
    assert cases["test_stale"] == {
        "unibazzar.check": "listing.cache-freshness", "unibazzar.service": "listing-service",
        "unibazzar.step": "Clear Redis cache if stale data: the API serves what DynamoDB holds",
        "unibazzar.outcome": "failed", "unibazzar.impact": "minor", "unibazzar.severity": "SEV3"}
    assert cases["test_fine"]["unibazzar.outcome"] == "passed"
    assert "unibazzar.severity" not in cases["test_fine"]


ALLURE_CHECKS = '''
from unibazzar_health.probes import FailureKind, ProbeError
from unibazzar_health.judges.runbook import runbook_check

def observe(ctx):
    return {"served": "999", "stored": "1999"}

def observe_unreachable(ctx):
    raise ProbeError("redis", "127.0.0.1:6379/0", "connection refused", 1.0,
                     kind=FailureKind.REFUSED)

def observe_crash(ctx):
    return {}["missing"]

@runbook_check("listing.cache-freshness", observe=observe)
def test_stale(observed):
    assert observed["served"] == observed["stored"], "stale data: served 999, stored 1999"

@runbook_check("ai.redis-cache-performance", observe=observe_unreachable)
def test_unreachable(observed):
    pass

@runbook_check("order.saga-orchestration", observe=observe_crash)
def test_crash(observed):
    pass

@runbook_check("auth.postgresql-connectivity", observe=observe)
def test_fine(observed):
    pass
'''


@MODES
def test_allure_results_agree_with_the_summary(suite: pytest.Pytester, mode: list[str]) -> None:
    """Every check's Allure result has the summary's outcome (a probe failure is failed, not
    broken), its severity as Allure's, the runbook's place as epic/feature/story, a tag per
    backend, and its redacted evidence attached; the run files sit beside the results."""
    import json

    suite.makepyfile(test_checks=ALLURE_CHECKS)
    results = suite.path / "allure-results"
    run(suite, *mode, f"--alluredir={results}")
    summary = json.loads((suite.path / "reports" / "summary.json").read_text())
    assert schema_errors(summary) == []  # a real run's summary.json, failures and all
    allure = {}
    for path in results.glob("*-result.json"):
        data = json.loads(path.read_text())
        labels = {}
        for label in data["labels"]:
            labels.setdefault(label["name"], []).append(label["value"])
        allure[data["fullName"].rsplit("#", 1)[-1]] = (data, labels)
    by_test = {c["nodeid"].rsplit("::", 1)[-1]: c for c in summary["checks"]}
    assert set(allure) == set(by_test)
    allure_status = {"failed": "failed", "broken": "broken", "passed": "passed"}
    for name, check in by_test.items():
        data, labels = allure[name]
        assert data["status"] == allure_status[check["outcome"]], name
        assert labels["epic"] == ["UniBazzar"]
        assert labels["feature"] == [check["service"]]
        assert labels["story"] == [check["step"]]
        assert set(check["depends_on"]) <= set(labels["tag"])
    assert allure["test_unreachable"][0]["status"] == "failed"  # a ProbeError: the platform
    assert allure["test_crash"][0]["status"] == "broken"
    assert allure["test_stale"][1]["severity"] == ["normal"]  # SEV3
    assert allure["test_fine"][1]["severity"] == ["blocker"]  # its class (outage), passed or not
    stale = allure["test_stale"][0]
    assert "Clear Redis cache if stale data" in stale["description"]
    [attachment] = stale["attachments"]
    evidence = json.loads((results / attachment["source"]).read_text())
    assert evidence["evidence"] == {"served": "999", "stored": "1999"}
    properties = (results / "environment.properties").read_text()
    assert "environment=gate\n" in properties and "verdict=failing SEV3\n" in properties
    categories = json.loads((results / "categories.json").read_text())
    assert [c["name"] for c in categories][:1] == ["Budget exhausted (not run)"]


def test_allure_executor_names_the_ci_run(suite: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    for name, value in {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
                        "GITHUB_REPOSITORY": "unibazzar/health", "GITHUB_RUN_ID": "42",
                        "GITHUB_RUN_NUMBER": "7", "GITHUB_WORKFLOW": "post-deploy"}.items():
        monkeypatch.setenv(name, value)
    suite.makepyfile(test_checks=CHECKS)
    run(suite, "-p", "no:xdist", f"--alluredir={suite.path / 'ar'}")
    executor = json.loads((suite.path / "ar" / "executor.json").read_text())
    assert executor["buildUrl"] == "https://github.com/unibazzar/health/actions/runs/42"
    assert executor["buildName"] == "post-deploy #7"


CRASHING = '''
import os
from unibazzar_health.judges.runbook import runbook_check

def observe(ctx):
    return {}

@runbook_check("auth.postgresql-connectivity", observe=observe)
def test_fine(observed):
    pass

@runbook_check("ai.redis-cache-performance", observe=observe)
def test_dies(observed):
    os._exit(13)  # the worker process dies mid-check
'''


def test_a_check_whose_worker_crashed_is_broken_never_healthy(suite: pytest.Pytester) -> None:
    import json

    suite.makepyfile(test_checks=CRASHING)
    result = run(suite, "-n", "2", "--fail-on=any")
    summary = json.loads((suite.path / "reports" / "summary.json").read_text())
    crashed = [c for c in summary["checks"] if c["outcome"] == "broken"]
    assert [c["nodeid"] for c in crashed] == ["test_checks.py::test_dies"], summary["checks"]
    assert "crashed" in crashed[0]["message"]
    assert summary["verdict"]["status"] == "incomplete"
    assert schema_errors(summary) == []
    assert result.ret == EXIT_INCOMPLETE, result.stdout.str()


def test_a_run_stopped_early_is_incomplete_and_says_so(suite: pytest.Pytester) -> None:
    import json

    suite.makepyfile(test_checks=BROKEN + '''

@runbook_check("ai.redis-cache-performance", observe=lambda ctx: {})
def test_never_reached(observed):
    pass
''')
    result = run(suite, "-p", "no:xdist", "-x", "--fail-on=any")
    summary = json.loads((suite.path / "reports" / "summary.json").read_text())
    assert summary["verdict"]["interrupted"] is True
    assert summary["verdict"]["status"] == "incomplete"
    assert result.ret == EXIT_INCOMPLETE
    result.stdout.fnmatch_lines(["VERDICT INCOMPLETE: the run was stopped before every check*"])
