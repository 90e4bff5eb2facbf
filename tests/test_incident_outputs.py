"""One incident, told the same everywhere: with a fault in the sandbox (Redis stopped; the
payments webhook secret wrong; a forged token accepted), the terminal, incident.md,
summary.json and the Allure results name the same severity, services, steps, fixes, commands
and escalation. With and without xdist."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from test_summary_schema import schema_errors

from conftest import SANDBOX_TOML, environment_with, fault, run_checks, sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]


@contextmanager
def stopped(component: str) -> Iterator[None]:
    sandbox("stop", component)
    try:
        yield
    finally:
        sandbox("start", component)


FAULTS: dict[str, dict[str, Any]] = {
    "redis-stopped": {"faulted": lambda: stopped("redis"), "select": "ai-service or "
                      "listing-service", "severity": "SEV2"},
    "webhook-secret-wrong": {"faulted": nullcontext, "select": "order-service",
                             "severity": "SEV2",
                             "settings": {"webhook_secret_env":
                                          '"UNIBAZZAR_HEALTH_SELFTEST_WRONG_SECRET"'},
                             "env": {"UNIBAZZAR_HEALTH_SELFTEST_WRONG_SECRET":
                                     "whsec_not_the_providers"}},
    "forged-token-accepted": {"faulted": lambda: fault("auth-service.accept-forged-tokens"),
                              "select": "auth-service", "severity": "SEV1"},
}


def allure_results(directory: Path) -> dict[str, dict[str, Any]]:
    """Allure's results by test name (ours: "service · title", one per check)."""
    found = {}
    for path in directory.glob("*-result.json"):
        data = json.loads(path.read_text())
        found[data["name"]] = data
    return found


@pytest.mark.parametrize("mode", [[], ["-n", "2"]], ids=["serial", "xdist"])
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_output_tells_the_same_incident(tmp_path: Path, name: str,
                                              mode: list[str]) -> None:
    spec = FAULTS[name]
    env_file = (environment_with(tmp_path, **spec["settings"]) if "settings" in spec
                else SANDBOX_TOML)
    faulted: AbstractContextManager[Any] = spec["faulted"]()
    with faulted:
        result, summary = run_checks(tmp_path, "-m", spec["select"], *mode,
                                     f"--alluredir={tmp_path / 'allure'}", env_file=env_file,
                                     extra_env=spec.get("env"))
    verdict = summary["verdict"]
    assert (verdict["status"], verdict["severity"]) == ("failing", spec["severity"]), \
        result.stdout[-3000:]
    assert schema_errors(summary) == []  # a real incident's summary.json: its contract
    failed = [c for c in summary["checks"] if c["outcome"] == "failed"]
    incident = (tmp_path / "reports" / "incident.md").read_text()
    terminal = result.stdout
    level = verdict["severity"].replace("SEV", "SEV ")
    assert f"🚨 INCIDENT ALERT - {level}" in incident
    assert f"🚨 INCIDENT ALERT - {level}" in terminal
    assert terminal.count("🚨 INCIDENT ALERT") == incident.count("🚨 INCIDENT ALERT") \
        == len(summary["root_causes"])
    escalation = summary["escalation"]["internal"]
    assert f"Escalation: Level {escalation['level']} — {escalation['title']}" in incident
    assert f"ESCALATE Level {escalation['level']} {escalation['title']}" in terminal
    for team in summary["escalation"]["external"]:
        assert team["team"] in incident and team["team"] in terminal
    by_name = allure_results(tmp_path / "allure")
    for check in failed:
        for text in (terminal, incident):
            assert check["id"] in text and check["service"] in text
            assert check["step"] in text
            for fix in check["fixes"]:
                assert fix in text, (check["id"], fix)
            for command in check["commands"]:
                assert command in text, (check["id"], command)
        assert f"FAIL {check['severity']} {check['service']} · {check['step']}" in terminal
        assert f"**{check['severity']}** {check['service']} · {check['step']}" in incident
        allure = by_name[f"{check['service']} · {check['title']}"]
        assert allure["status"] == "failed"
        labels = {label["name"]: label["value"] for label in allure["labels"]}
        expected = {"SEV1": "blocker", "SEV2": "critical", "SEV3": "normal", "SEV4": "minor"}
        assert labels["severity"] == expected[check["severity"]]
        assert (labels["feature"], labels["story"]) == (check["service"], check["step"])
        # A symptom's summary leads with its cause's fixes (summary.lead_with_causes, known
        # once every check ran); Allure, written as each check ends, has its own.
        borrowed = {line for other in failed if other is not check
                    and other["service"] == check["service"]
                    for line in [*other["fixes"], *other["commands"]]}
        for line in [*check["fixes"], *check["commands"]]:
            assert line in allure["description"] or line in borrowed, (check["id"], line)
    passed = {c["id"] for c in summary["checks"] if c["outcome"] == "passed"}
    assert {d["name"] for d in by_name.values() if d["status"] == "passed"} == {
        f"{c['service']} · {c['title']}" for c in summary["checks"] if c["id"] in passed}
