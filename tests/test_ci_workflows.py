"""The GitHub workflows (.github/workflows/): their triggers and inputs, `run:` steps that only
call scripts/ and never see a secret or an input in their text, the secrets each environment
file names passed from the GitHub environment; and the post-deploy and scheduled workflows'
own command lines, run here against the sandbox with an ai-service outage, leaving the
artifacts the upload step lists and the step summary, and exiting by --fail-on."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import URI_DEFAULT
from receivers import LoopbackServer
from werkzeug import Request, Response

from unibazzar_health.reports.gate import FAIL_ON_CHOICES, exit_status
from unibazzar_health.verdict.model import Summary

from conftest import ROOT, SANDBOX_TOML, named_variables

WORKFLOWS = ROOT / ".github" / "workflows"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
AI_SERVICE = "http://127.0.0.1:28004"


def workflow(name: str) -> dict[str, Any]:
    doc: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def only_job(doc: dict[str, Any]) -> dict[str, Any]:
    (job,) = doc["jobs"].values()
    return job


def all_steps() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in workflow(path.name)["jobs"].values():
            for step in job.get("steps", []):
                yield path.name, step


# ---- what the workflows say -----------------------------------------------------------------

def test_post_deploy_runs_after_a_successful_deploy_or_on_call_with_its_inputs() -> None:
    doc = workflow("post-deploy.yml")
    on = doc["on"]
    assert "deployment_status" in on
    for trigger in ("workflow_dispatch", "workflow_call"):
        assert {"environment", "fail-on"} <= set(on[trigger]["inputs"]), trigger
    assert on["workflow_dispatch"]["inputs"]["fail-on"]["options"] == list(FAIL_ON_CHOICES)
    job = only_job(doc)
    assert "github.event.deployment_status.state == 'success'" in job["if"]
    # Secrets come from the GitHub environment named like the environment file.
    assert "inputs.environment" in job["environment"]
    assert "github.event.deployment.environment" in job["environment"]


def test_the_scheduled_probe_never_overlaps_and_keeps_the_incident_state() -> None:
    doc = workflow("scheduled-probe.yml")
    assert doc["on"]["schedule"][0]["cron"]
    assert doc["concurrency"]["cancel-in-progress"] is False
    uses = [step.get("uses", "") for step in only_job(doc)["steps"]]
    assert any(u.startswith("actions/cache/restore@") for u in uses)
    assert any(u.startswith("actions/cache/save@") for u in uses)


def test_the_self_tests_workflow_runs_the_ci_script() -> None:
    steps = only_job(workflow("ci.yml"))["steps"]
    assert any(step.get("run") == "bash .ci/run" for step in steps)


def test_run_steps_are_thin_and_never_carry_an_expression() -> None:
    """Secrets and inputs reach a step through env: only, never in its script's text (which
    GitHub would expand before the shell sees it: an injection, and an echo waiting to
    happen); each step of ours is one call to a script in scripts/."""
    for name, step in all_steps():
        script = step.get("run")
        if script is None:
            continue
        assert not EXPRESSION.search(script), f"{name}: {script!r} holds an expression"
        if name != "ci.yml":
            assert re.fullmatch(r"scripts/[\w-]+( --[\w-]+)*", script.strip()), \
                f"{name}: {script!r} is not one call to a script in scripts/"
            assert (ROOT / script.split()[0]).is_file()


def test_secrets_appear_only_as_job_environment_variables() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        text = path.read_text()
        for line in text.splitlines():
            if "secrets." in line:
                assert re.fullmatch(r"\s+[A-Z0-9_]+: \$\{\{ secrets\.[A-Z0-9_]+ \}\}", line), \
                    f"{path.name}: {line.strip()!r}"


def test_every_variable_an_environment_file_names_comes_from_a_secret() -> None:
    """Its commented-out examples too ([notify], [incident_state]): a team turns paging on by
    uncommenting them, and a variable the job does not pass stops that run at "not set"."""
    example = (ROOT / "environments" / "production.toml.example").read_text()
    named = named_variables(example)
    assert {"UNIBAZZAR_SLACK_WEBHOOK_URL", "UNIBAZZAR_PAGERDUTY_ROUTING_KEY",
            "UNIBAZZAR_INCIDENT_STATE_PASSWORD"} <= named
    for name in ("post-deploy.yml", "scheduled-probe.yml"):
        env = only_job(workflow(name))["env"]
        from_secrets = {k for k, v in env.items() if f"secrets.{k}" in str(v)}
        assert named <= from_secrets, f"{name} lacks {sorted(named - from_secrets)}"


def test_no_delivery_script_traces_its_commands() -> None:
    """`set -x` would print every expanded command line, secrets included."""
    for path in [*ROOT.joinpath("scripts").glob("ci-*"),
                 ROOT / "deploy" / "docker" / "entrypoint.sh"]:
        text = path.read_text()
        assert not re.search(r"(?m)^\s*set\s+-\w*x|set -o xtrace|bash -x", text), path


KUBECONFIG_ENVIRONMENT = """
[environment]
name = "kubeconfig-from-a-secret"

[kubernetes]
namespace = "unibazzar"
mode = "kubeconfig"
context = "from-the-secret"
"""
KUBECONFIG_DATA = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: 'https://127.0.0.1:6443'}
users:
- name: u
  user: {token: kubeconfig-token-never-printed}
contexts:
- name: from-the-secret
  context: {cluster: c, user: u}
"""


@pytest.mark.parametrize("script", ["ci-post-deploy", "ci-scheduled-probe"])
def test_both_ci_scripts_write_the_kubeconfig_secret_to_a_private_file_they_remove(
        tmp_path: Path, script: str) -> None:
    """Production's [kubernetes] mode is "kubeconfig", and the workflows pass the kubeconfig
    as the secret's text: each script must write it where the client and the environment
    file's check look (KUBECONFIG), or the run stops at "no kubeconfig file" (exit 4). One
    shared file does it for both; the kubeconfig is never printed and never left behind."""
    env_file = tmp_path / "kubeconfig.toml"
    env_file.write_text(KUBECONFIG_ENVIRONMENT)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    home = tmp_path / "home"  # no ~/.kube/config to fall back on
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "KUBECONFIG", "UNIBAZZAR_PUSHGATEWAY_URL")}
    env |= {"HOME": str(home), "RUNNER_TEMP": str(runner_temp),
            "UNIBAZZAR_ENV_FILE": str(env_file), "UNIBAZZAR_KUBECONFIG_DATA": KUBECONFIG_DATA,
            "UNIBAZZAR_REPORTS_DIR": str(tmp_path / "reports")}
    done = subprocess.run([str(ROOT / "scripts" / script), "--collect-only", "-q",
                           "-p", "no:xdist", "-m", "kubernetes"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "no kubeconfig file" not in output
    assert "kubeconfig-token-never-printed" not in output
    assert list(runner_temp.iterdir()) == [], "the kubeconfig was left behind"
    # Written in one place, sourced by both.
    shared = ROOT / "scripts" / "ci-kubeconfig.sh"
    assert "UNIBAZZAR_KUBECONFIG_DATA" in shared.read_text()
    text = (ROOT / "scripts" / script).read_text()
    assert re.search(r'(?m)^\. "?scripts/ci-kubeconfig\.sh"?$', text), script
    assert "UNIBAZZAR_KUBECONFIG_DATA\"" not in text.split("\nset -euo pipefail", 1)[1]


# ---- the workflows' own command lines, against the sandbox ----------------------------------

def faulted_environment(tmp_path: Path) -> Path:
    """The sandbox with ai-service gone (its address a closed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = SANDBOX_TOML.read_text()
    assert text.count(f'"{AI_SERVICE}"') == 1
    path = tmp_path / "faulted.toml"
    path.write_text(text.replace(f'"{AI_SERVICE}"', f'"http://127.0.0.1:{port}"'))
    return path


def job_environment(job: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    """What a step's process gets: this process's environment, the job's env: (literal
    values as written, expressions as ``given`` here: the GitHub contexts do not exist)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    for key, value in job.get("env", {}).items():
        text = str(value)
        if not EXPRESSION.search(text):
            env[key] = text
        elif key in given:
            env[key] = given[key]
    return {**env, **given, "CI": "true"}


def run_steps(job: dict[str, Any], env: dict[str, str]) -> dict[str, int]:
    """Every `run:` step in order, as GitHub runs them (bash -e, -o pipefail, in the
    checkout); after a failure only the steps marked always()."""
    statuses: dict[str, int] = {}
    failed = False
    for step in job["steps"]:
        if "run" not in step or (failed and "always()" not in str(step.get("if", ""))):
            continue
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               step["run"]], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        statuses[step["run"]] = done.returncode
        assert done.returncode in (0, 1, 6), f"{step['run']}: {done.stdout}{done.stderr}"
        failed = failed or done.returncode != 0
    return statuses


def uploaded_paths(job: dict[str, Any], env: dict[str, str]) -> list[Path]:
    (upload,) = [s for s in job["steps"]
                 if s.get("uses", "").startswith("actions/upload-artifact@")]
    lines = [line.strip() for line in upload["with"]["path"].splitlines() if line.strip()]
    return [ROOT / EXPRESSION.sub(lambda m: env[m.group(1).removeprefix("env.")], line)
            for line in lines]


@pytest.mark.sandbox
@pytest.mark.parametrize("fail_on", ["any", "never"])
def test_the_post_deploy_command_lines_leave_the_artifacts_and_the_step_summary(
        running_sandbox: None, tmp_path: Path, fail_on: str) -> None:
    job = only_job(workflow("post-deploy.yml"))
    reports = tmp_path / "reports"
    step_summary = tmp_path / "step_summary.md"
    env = job_environment(job, {
        "UNIBAZZAR_ENV": "sandbox", "UNIBAZZAR_ENV_FILE": str(faulted_environment(tmp_path)),
        "UNIBAZZAR_FAIL_ON": fail_on, "UNIBAZZAR_REPORTS_DIR": str(reports),
        "GITHUB_STEP_SUMMARY": str(step_summary), "RUNNER_TEMP": str(tmp_path),
        # The whole catalog works too; one service keeps the self-test short.
        "PYTEST_ADDOPTS": "-m ai-service -p no:xdist"})
    statuses = run_steps(job, env)
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["verdict"]["status"] == "failing"
    verdict_status = statuses["scripts/ci-post-deploy"]
    assert verdict_status == exit_status(Summary.model_validate(summary), fail_on)
    assert verdict_status == (1 if fail_on == "any" else 0)
    for path in uploaded_paths(job, env):
        assert path.is_file() and path.stat().st_size > 0, f"{path} was not left for upload"
    incident = (reports / "incident.md").read_text()
    assert incident in step_summary.read_text()
    assert "ai-service" in incident
    assert "<html" in (reports / "allure-report" / "index.html").read_text()[:2000].lower()


class Pushgateway:
    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.server = LoopbackServer()
        self.server.expect_request(URI_DEFAULT, method="POST").respond_with_handler(
            self._record)
        self.server.start()
        self.url = self.server.base

    def _record(self, request: Request) -> Response:
        self.bodies.append(request.get_data(as_text=True))
        return Response(status=200)


@pytest.mark.sandbox
def test_the_scheduled_probe_command_lines_leave_the_verdict_and_its_metrics(
        running_sandbox: None, tmp_path: Path) -> None:
    job = only_job(workflow("scheduled-probe.yml"))
    reports = tmp_path / "reports"
    gateway = Pushgateway()
    try:
        env = job_environment(job, {
            "UNIBAZZAR_ENV": "sandbox", "UNIBAZZAR_ENV_FILE": str(faulted_environment(tmp_path)),
            "UNIBAZZAR_REPORTS_DIR": str(reports), "UNIBAZZAR_PUSHGATEWAY_URL": gateway.url,
            "PYTEST_ADDOPTS": "-m ai-service -p no:xdist"})
        statuses = run_steps(job, env)
    finally:
        gateway.server.close()
    summary = json.loads((reports / "summary.json").read_text())
    assert "--run-mode=scheduled" in summary["arguments"]
    # fail-on never: the job's colour is no pager; only a verdict that could not be reached.
    assert statuses["scripts/ci-scheduled-probe"] == exit_status(
        Summary.model_validate(summary), "never")
    for path in uploaded_paths(job, env):
        assert path.is_file(), f"{path} was not left for upload"
    for text in ((reports / "metrics.prom").read_text(), *gateway.bodies):
        severity = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "unibazzar_health_verdict_severity"]
        assert severity and severity[0] > 0
    assert len(gateway.bodies) == 1
