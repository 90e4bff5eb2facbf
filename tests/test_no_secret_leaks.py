"""No secret value reaches the terminal, any file a run writes or anything it posts:
distinctive values are planted in every secret the environment names, the run fails on them
(they are the wrong credentials), and nothing it printed or wrote — summary.json,
incident.md, the CI step summary, JUnit XML, Allure results and attachments, the single-file
HTML report, posting.json — holds any of them, nor does any payload that real receivers on
loopback (Slack, PagerDuty, a webhook, a ticket tracker) got. The notifiers' own secrets (the
Slack URL's token, the routing key, the tracker's token) appear only where their service
needs them: never in the terminal or a file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from receivers import (
    GitHubReceiver,
    PagerDutyReceiver,
    Receiver,
    SlackReceiver,
    WebhookReceiver,
    serving,
)

from conftest import ROOT, SANDBOX_TOML, run_checks, sandbox_logs_kept

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]


NOTIFIER_SECRETS = {"PLANTED_SLACK_TOKEN": "T0PLANT/B0PLANT/Pl4ntedSlackT0ken9c",
                    "PLANTED_ROUTING_KEY": "Pl4ntedR0utingKey00000000000009c",
                    "PLANTED_GITHUB_TOKEN": "ghp_Pl4ntedGitHubT0ken00000000009c",
                    "PLANTED_WEBHOOK_SECRET": "Pl4ntedWebhookS1gningSecret9c"}


def planted_environment(tmp_path: Path, receivers: dict[str, Receiver]
                        ) -> tuple[Path, dict[str, str]]:
    text = SANDBOX_TOML.read_text()
    names = sorted(set(re.findall(r'_env = "([A-Z0-9_]+)"', text)))
    planted = {name: f"Pl4nted-{name.lower().replace('_', '-')}-7f3a9c" for name in names}
    values = planted | {"PLANTED_SLACK_URL":
                        f"{receivers['slack'].base}/services/"
                        f"{NOTIFIER_SECRETS['PLANTED_SLACK_TOKEN']}"} | NOTIFIER_SECRETS
    (tmp_path / "planted.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    text = re.sub(r'(?m)^secrets_file = .*$', 'secrets_file = "planted.env"', text)
    text += f"""
[notify]
deadline = 1.0
retries = 1
budget = 8.0

[notify.slack]
webhook_url_env = "PLANTED_SLACK_URL"

[notify.pagerduty]
routing_key_env = "PLANTED_ROUTING_KEY"
api_url = "{receivers['pagerduty'].base}/v2/enqueue"

[notify.webhook]
url = "{receivers['webhook'].base}/hook"
secret_env = "PLANTED_WEBHOOK_SECRET"

[notify.ticket]
api_url = "{receivers['github'].base}"
repository = "unibazzar/incidents"
token_env = "PLANTED_GITHUB_TOKEN"
"""
    path = tmp_path / "planted.toml"
    path.write_text(text)
    return path, planted


@pytest.mark.parametrize("mode", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_planted_secrets_reach_no_output(tmp_path: Path, mode: list[str]) -> None:
    with ExitStack() as stack:
        receivers: dict[str, Receiver] = {
            "slack": stack.enter_context(serving(SlackReceiver("slack"))),
            "pagerduty": stack.enter_context(serving(PagerDutyReceiver("pagerduty"))),
            "webhook": stack.enter_context(serving(WebhookReceiver("webhook"))),
            "github": stack.enter_context(serving(GitHubReceiver(
                "github", token=NOTIFIER_SECRETS["PLANTED_GITHUB_TOKEN"])))}
        run_planted(tmp_path, mode, receivers)


def run_planted(tmp_path: Path, mode: list[str], receivers: dict[str, Receiver]) -> None:
    env_file, planted = planted_environment(tmp_path, receivers)
    assert len(planted) >= 5, planted  # database, Redis, provider key, webhook secret, ...
    reports = tmp_path / "reports"
    step_summary = reports / "step-summary.md"
    reports.mkdir()
    # Real variables win over the secrets file: none of these may be exported here.
    assert not set(planted) & set(os.environ)
    with sandbox_logs_kept():  # the wrong canary password logs failed logins
        result, summary = run_checks(
            tmp_path, *mode, "--run-mode=oncall", f"--alluredir={reports / 'allure-results'}",
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
    notifier_secrets = list(NOTIFIER_SECRETS.values())
    leaks = [(name, secret) for name, text in outputs.items()
             for secret in [*planted.values(), *notifier_secrets] if secret in text]
    assert not leaks, leaks
    # Posted: an alert reached every receiver, and no platform secret rode along.
    for name, receiver in receivers.items():
        assert receiver.received, f"{name} got nothing"
        posted = receiver.all_text()
        assert not [s for s in planted.values() if s in posted], name
