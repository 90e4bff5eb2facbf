"""No secret value reaches the terminal or any file a run writes: distinctive values are
planted in every secret the environment names, the run fails on them (they are the wrong
credentials), and nothing it printed or wrote — summary.json, incident.md, the CI step
summary, JUnit XML, Allure results and attachments, the single-file HTML report — holds
any of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SANDBOX_TOML, run_checks, sandbox_logs_kept

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]


def planted_environment(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    text = SANDBOX_TOML.read_text()
    names = sorted(set(re.findall(r'_env = "([A-Z0-9_]+)"', text)))
    planted = {name: f"Pl4nted-{name.lower().replace('_', '-')}-7f3a9c" for name in names}
    (tmp_path / "planted.env").write_text("".join(f"{k}={v}\n" for k, v in planted.items()))
    text = re.sub(r'(?m)^secrets_file = .*$', 'secrets_file = "planted.env"', text)
    path = tmp_path / "planted.toml"
    path.write_text(text)
    return path, planted


@pytest.mark.parametrize("mode", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_planted_secrets_reach_no_output(tmp_path: Path, mode: list[str]) -> None:
    env_file, planted = planted_environment(tmp_path)
    assert len(planted) >= 5, planted  # database, Redis, provider key, webhook secret, ...
    reports = tmp_path / "reports"
    step_summary = reports / "step-summary.md"
    reports.mkdir()
    # Real variables win over the secrets file: none of these may be exported here.
    assert not set(planted) & set(os.environ)
    with sandbox_logs_kept():  # the wrong canary password logs failed logins
        result, summary = run_checks(
            tmp_path, *mode, f"--alluredir={reports / 'allure-results'}",
            f"--junitxml={reports / 'junit.xml'}", env_file=env_file,
            extra_env={"GITHUB_STEP_SUMMARY": str(step_summary)})
    assert summary["verdict"]["status"] == "failing", result.stdout[-2000:]
    assert (reports / "incident.md").exists() and step_summary.exists()
    built = subprocess.run(
        [sys.executable, "-m", "unibazzar_health", "report", f"--root={ROOT}",
         f"--results={reports / 'allure-results'}", f"--output={reports / 'allure-report'}",
         f"--history={reports / 'allure-history.jsonl'}"],
        capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stderr
    outputs = {"stdout": result.stdout, "stderr": result.stderr}
    for path in reports.rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert any("allure-results" in name and name.endswith("attachment.json")
               for name in outputs), "no evidence attachment was written"
    leaks = [(name, secret) for name, text in outputs.items()
             for secret in planted.values() if secret in text]
    assert not leaks, leaks
