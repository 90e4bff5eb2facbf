"""Incident lifecycle and posting end to end: real pytest runs of a small check suite (its
observe functions read a fault file) against real HTTP receivers on loopback playing Slack,
PagerDuty, a webhook and GitHub Issues, with the incident state in SQLite or in a real Redis.

- the main sequence: fault on → one alert everywhere; still on → nothing; a second service
  fails for the same cause → one update with the delta; healed → one resolution with the
  right duration, PagerDuty resolved under the same dedup_key, the ticket commented and closed;
  exact texts, and no planted secret anywhere it must not be;
- two runs started at the same moment against one store post one alert (SQLite, Redis);
- a run killed while posting (after the receiver got it, before it was recorded) does not
  page twice: Slack's delivery becomes unknown and is named; PagerDuty's is resent (harmless);
  the ticket's create is resent after looking for the issue it made (one ticket);
- a receiver down or too slow neither hangs the run nor loses the summary: what surely did
  not arrive, or what the ticket can look for, the next run delivers once; a Slack or
  webhook post that may have arrived (no answer) is unknown, named, never sent twice;
- a state the store holds that this version cannot read is reported, never an
  INTERNALERROR: the verdict and summary.json are as always.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from receivers import (
    GitHubReceiver,
    PagerDutyReceiver,
    RedisServer,
    SlackReceiver,
    WebhookReceiver,
    serving,
    start_redis,
)

from unibazzar_health.incidents.lifecycle import dedup_key
from unibazzar_health.incidents.notifiers.webhook import signature
from unibazzar_health.verdict.policy import clock, human_duration
from unibazzar_health.verdict.policy import parse_time as at

SLACK_TOKEN = "T0PLANTED/B0PLANTED/xoxbSl4ckS3cretT0kenQ7"
ROUTING_KEY = "R0utingKeyPl4nted9f2e61a0c4d5e6f"  # 32 characters
GITHUB_TOKEN = "ghp_Pl4ntedGitHubT0ken8d1b"
WEBHOOK_SECRET = "whsecPl4nted5a7c3e"
SECRETS = (SLACK_TOKEN, ROUTING_KEY, GITHUB_TOKEN, WEBHOOK_SECRET)

CHECKS = '''
import json
import os
from pathlib import Path

from unibazzar_health.probes import FailureKind, ProbeError
from unibazzar_health.judges.runbook import runbook_check


def observe(check_id):
    def run(ctx):
        path = Path(os.environ["UNIBAZZAR_TEST_FAULTS"])
        fault = json.loads(path.read_text()).get(check_id) if path.exists() else None
        if fault == "redis":
            raise ProbeError("redis", "cache:6379/0", "connection refused", 1.0,
                             kind=FailureKind.REFUSED)
        return fault
    return run


@runbook_check("listing.related-systems", observe=observe("listing.related-systems"))
def test_listing_backends(observed):
    assert observed is None, observed


@runbook_check("ai.redis-cache-performance", observe=observe("ai.redis-cache-performance"))
def test_ai_cache(observed):
    assert observed is None, observed


@runbook_check("order.saga-orchestration", observe=observe("order.saga-orchestration"))
def test_order_sagas(observed):
    assert observed is None, "2 saga(s) stuck past 15 min: s-1, s-2"
'''


class Services:
    """The four receivers, their environment file section, and the planted secrets."""

    def __init__(self, stack: ExitStack) -> None:
        self.slack = stack.enter_context(serving(SlackReceiver("slack")))
        self.pagerduty = stack.enter_context(serving(PagerDutyReceiver("pagerduty")))
        self.webhook = stack.enter_context(serving(WebhookReceiver("webhook")))
        self.github = stack.enter_context(serving(GitHubReceiver("github", token=GITHUB_TOKEN)))

    @property
    def all(self) -> list[Any]:
        return [self.slack, self.pagerduty, self.webhook, self.github]

    def environ(self) -> dict[str, str]:
        return {"TEST_SLACK_WEBHOOK_URL": f"{self.slack.base}/services/{SLACK_TOKEN}",
                "TEST_PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "TEST_GITHUB_TOKEN": GITHUB_TOKEN,
                "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}

    def notify(self, budget: float = 6.0, only: tuple[str, ...] = ()) -> str:
        sections = {
            "slack": '[notify.slack]\nwebhook_url_env = "TEST_SLACK_WEBHOOK_URL"\n',
            "pagerduty": f'[notify.pagerduty]\nrouting_key_env = "TEST_PAGERDUTY_ROUTING_KEY"\n'
                         f'api_url = "{self.pagerduty.base}/v2/enqueue"\n',
            "webhook": f'[notify.webhook]\nurl = "{self.webhook.base}/hook"\n'
                       f'secret_env = "TEST_WEBHOOK_SECRET"\n',
            "ticket": f'[notify.ticket]\napi_url = "{self.github.base}"\n'
                      f'repository = "unibazzar/incidents"\ntoken_env = "TEST_GITHUB_TOKEN"\n',
        }
        chosen = only or tuple(sections)
        return (f"[notify]\ndeadline = 1.0\nretries = 1\nbudget = {budget}\n\n"
                + "\n".join(sections[name] for name in chosen))


class Suite:
    """A directory holding the check suite, its environment file and its fault file; runs
    pytest there as a scheduler would (a subprocess)."""

    def __init__(self, path: Path, services: Services, state: str,
                 notify: str | None = None) -> None:
        self.path, self.services = path, services
        path.mkdir(parents=True, exist_ok=True)
        (path / "conftest.py").write_text('pytest_plugins = ["unibazzar_health.plugin"]\n')
        (path / "test_checks.py").write_text(CHECKS)
        (path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
        (path / "env.toml").write_text(f"""
[environment]
name = "pytester"

[deadlines]
default = 1.0
check = 3.0

[oncall]
primary = "@alice"

[report]
url = "https://reports.example/pytester/index.html"
war_room = "#incidents-test"

{state}

{notify if notify is not None else services.notify()}
""")
        self.faults = path / "faults.json"
        self.reports = path / "reports"

    def fault(self, **checks: str) -> None:
        self.faults.write_text(json.dumps({k.replace("_", ".", 1).replace("_", "-"): v
                                           for k, v in checks.items()}))

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
        env.update(self.services.environ(), UNIBAZZAR_TEST_FAULTS=str(self.faults))
        return env

    def command(self, *args: str) -> list[str]:
        serial = [] if "-n" in args else ["-p", "no:xdist"]
        return [sys.executable, "-m", "pytest", "--env-file=env.toml",
                f"--reports-dir={self.reports}", "--run-mode=oncall", *serial, *args]

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), cwd=self.path, env=self.environ(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run(self, *args: str) -> Run:
        started = time.monotonic()
        done = subprocess.run(self.command(*args), cwd=self.path, env=self.environ(),
                              capture_output=True, text=True, timeout=120)
        return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started,
                   self.summary(), self.posting())

    def summary(self) -> dict[str, Any]:
        path = self.reports / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def posting(self) -> dict[str, Any]:
        path = self.reports / "posting.json"
        return json.loads(path.read_text()) if path.exists() else {}


class Run:
    def __init__(self, code: int, output: str, seconds: float, summary: dict[str, Any],
                 posting: dict[str, Any]) -> None:
        self.code, self.output, self.seconds = code, output, seconds
        self.summary, self.posting = summary, posting

    def statuses(self) -> list[tuple[str, str, str]]:
        return [(r["notifier"], r["kind"], r["status"]) for r in self.posting["results"]]


SQLITE = '[incident_state]\nbackend = "sqlite"\npath = "{path}"\n'


@pytest.fixture
def services() -> Iterator[Services]:
    with ExitStack() as stack:
        yield Services(stack)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    process, server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    process.terminate()
    process.wait(10)


def sqlite_state(tmp_path: Path) -> str:
    return SQLITE.format(path=tmp_path / "state" / "incidents.sqlite3")


def redis_state(server: RedisServer) -> str:
    return (f'[incident_state]\nbackend = "redis"\nurl = "{server.url}"\n'
            f'password_env = "TEST_REDIS_PASSWORD"\nkey_prefix = "test-{uuid.uuid4().hex[:8]}"\n')


def eta(summary: dict[str, Any], minutes: int) -> str:
    from datetime import timedelta

    due = at(summary["finished_at"]) + timedelta(minutes=minutes)
    return f"{human_duration(minutes * 60)} ({clock(due)})"


def slack_texts(receiver: SlackReceiver) -> list[str]:
    return [body["text"] for body in receiver.bodies("POST")]


def incident_ids(services: Services) -> dict[str, str]:
    """Each incident key's occurrence id, as the webhook documents carried them."""
    return {b["incident"]["key"]: b["incident"]["id"] for b in services.webhook.bodies()}


def test_an_incident_from_alert_to_resolution(tmp_path: Path, services: Services) -> None:
    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path))
    suite.fault(listing_related_systems="redis")
    first = suite.run()
    assert first.code == 1, first.output
    alert_lines = [
        "🚨 INCIDENT ALERT - SEV 2",
        "Service: listing-service",
        "Impact: Buyers and sellers may see missing listings or images, and new listings may "
        "fail to save.",
        "IC: @alice",
        "War Room: #incidents-test",
        f"ETA for update: {eta(first.summary, 30)}"]
    assert slack_texts(services.slack) == ["\n".join(alert_lines)]
    slack = services.slack.bodies()[0]
    assert slack["blocks"][0] == {"type": "section", "text": {
        "type": "mrkdwn", "text": "\n".join(alert_lines)}}
    assert slack["blocks"][1]["text"]["text"].startswith(
        "*Details* — pytester, run of ")
    assert slack["blocks"][2]["elements"][0]["text"] == (
        "pytester · `service:listing-service` · "
        "<https://reports.example/pytester/index.html|report>")
    # One key per occurrence (the incident's id), the same the webhook was told.
    key = dedup_key("pytester", incident_ids(services)["service:listing-service"])
    assert services.webhook.bodies()[0]["dedup_key"] == key
    trigger = services.pagerduty.bodies()
    assert [(e["event_action"], e["dedup_key"]) for e in trigger] == [("trigger", key)]
    assert trigger[0]["payload"]["severity"] == "error"
    assert trigger[0]["payload"]["summary"] == \
        "🚨 INCIDENT ALERT - SEV 2: listing-service (pytester)"
    assert trigger[0]["links"] == [{"href": "https://reports.example/pytester/index.html",
                                    "text": "Health check report"}]
    hook = services.webhook.received[0]
    assert hook.body["schema"] == "unibazzar-health/notification/v1"
    assert (hook.body["kind"], hook.body["message"]["lines"]) == ("alert", alert_lines)
    assert hook.headers["X-UniBazzar-Signature"] == "sha256=" + signature(
        WEBHOOK_SECRET, hook.headers["X-UniBazzar-Timestamp"], hook.raw)
    assert list(services.github.issues) == [1]
    issue = services.github.issues[1]
    assert issue["title"] == "[pytester] SEV 2: listing-service"
    assert issue["body"].startswith("# Incident: pytester — SEV 2 High\n\n```\n"
                                    + "\n".join(alert_lines) + "\n```\n")
    assert "Report: https://reports.example/pytester/index.html" in issue["body"]
    assert first.statuses() == [("pagerduty", "alert", "sent"), ("slack", "alert", "sent"),
                                ("ticket", "alert", "sent"), ("webhook", "alert", "sent")]
    assert "POSTED slack alert service:listing-service: 🚨 INCIDENT ALERT - SEV 2" in \
        first.output
    assert "POSTED ticket alert service:listing-service (ticket #1)" in first.output

    still = suite.run()
    assert still.code == 1 and still.posting["results"] == []
    assert [len(r.received) for r in services.all] == [1, 1, 1, 1]
    # The store told the summary when the incident began.
    assert still.summary["incident"]["first_failure_at"] == first.summary["started_at"]

    suite.fault(listing_related_systems="redis", ai_redis_cache_performance="redis")
    grown = suite.run()
    update = slack_texts(services.slack)[1].split("\n")
    assert update[:4] == ["📊 INCIDENT UPDATE - SEV 2", "Service: ai-service, listing-service",
                          "Status: INVESTIGATING",
                          "Actions taken: newly failing: ai.redis-cache-performance"]
    assert update[5] == f"Next update: {eta(grown.summary, 30)}"
    assert grown.statuses() == [("slack", "update", "sent"), ("ticket", "update", "sent"),
                                ("webhook", "update", "sent")]
    assert len(services.pagerduty.received) == 1  # paged once
    assert services.github.comments[1][0].startswith("```\n📊 INCIDENT UPDATE - SEV 2\n")

    suite.fault()
    healed = suite.run()
    assert healed.code == 0, healed.output
    began, ended = at(first.summary["started_at"]), at(healed.summary["started_at"])
    assert slack_texts(services.slack)[2].split("\n") == [
        "✅ INCIDENT RESOLVED - SEV 2",
        "Service: ai-service, listing-service",
        "Resolution: every check of ai-service, listing-service passes again (2 recovered: "
        "ai.redis-cache-performance, listing.related-systems)",
        f"Duration: {human_duration((ended - began).total_seconds())} ({clock(began)} → "
        f"{clock(ended)})",
        f"Post-mortem: due {clock(ended + __import__('datetime').timedelta(weeks=1))} "
        "(within 1 week, Post-Incident Procedures)"]
    assert [(e["event_action"], e["dedup_key"]) for e in services.pagerduty.bodies()] == [
        ("trigger", key), ("resolve", key)]
    assert services.github.issues[1]["state"] == "closed"
    assert services.github.comments[1][1].startswith("```\n✅ INCIDENT RESOLVED - SEV 2\n")
    assert [b["kind"] for b in services.webhook.bodies()] == ["alert", "update", "resolved"]
    assert len(services.github.issues) == 1  # one ticket, opened, updated, closed

    again = suite.run()
    assert again.posting["results"] == [] and len(services.slack.received) == 3

    # No planted secret in any payload (the routing key only where the Events API needs
    # it, the token only in its header), in the store, in reports/ or on the terminal.
    for receiver in services.all:
        for request in receiver.received:
            body = dict(request.body)
            if receiver is services.pagerduty:
                assert body.pop("routing_key") == ROUTING_KEY
            text = json.dumps(body, ensure_ascii=False) + json.dumps(
                {k: v for k, v in request.headers.items() if k != "Authorization"})
            assert not [s for s in SECRETS if s in text], (receiver.name, text[:300])
    outputs = [first.output, still.output, grown.output, healed.output, again.output]
    for path in [*suite.reports.rglob("*"), *(tmp_path / "state").rglob("*")]:
        if path.is_file():
            outputs.append(path.read_bytes().decode("utf-8", "replace"))
    for path in (tmp_path / "state").glob("incidents.sqlite3*"):
        import zlib

        raw = path.read_bytes()
        outputs.append(raw.decode("latin-1"))
        # Payloads and summaries are stored compressed: look inside them too.
        import sqlite3

        if path.name == "incidents.sqlite3":
            with sqlite3.connect(path) as db:
                for (blob,) in db.execute("SELECT payload FROM outbox UNION ALL "
                                          "SELECT summary FROM runs"):
                    outputs.append(zlib.decompress(blob).decode())
    assert not [s for s in SECRETS for text in outputs if s in text]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_two_runs_at_the_same_moment_post_one_alert(tmp_path: Path, services: Services,
                                                    backend: str,
                                                    request: pytest.FixtureRequest) -> None:
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        state = redis_state(server)
        os.environ["TEST_REDIS_PASSWORD"] = server.password
    else:
        state = sqlite_state(tmp_path)
    try:
        suites = [Suite(tmp_path / f"runner-{n}", services, state) for n in range(2)]
        for suite in suites:
            suite.fault(order_saga_orchestration="stuck")
        processes = [suite.start() for suite in suites]
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    finally:
        os.environ.pop("TEST_REDIS_PASSWORD", None)
    assert [p.returncode for p in processes] == [1, 1], outputs
    assert [len(r.received) for r in services.all] == [1, 1, 1, 1], outputs
    assert len(services.github.issues) == 1
    postings = [suite.posting() for suite in suites]
    sent = sorted((r["notifier"], r["kind"]) for p in postings for r in p["results"]
                  if r["status"] == "sent")
    assert sent == [("pagerduty", "alert"), ("slack", "alert"), ("ticket", "alert"),
                    ("webhook", "alert")]


@pytest.mark.parametrize("notifier", ["slack", "pagerduty", "ticket"])
def test_a_run_killed_between_posting_and_recording_does_not_page_twice(
        tmp_path: Path, services: Services, notifier: str) -> None:
    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path),
                  notify=services.notify(budget=60, only=(notifier,)))
    receiver = {"slack": services.slack, "pagerduty": services.pagerduty,
                "ticket": services.github}[notifier]
    # It records the request (the tracker also creates the issue), then never answers.
    receiver.behaviour = "stall" if notifier == "ticket" else "block"
    suite.fault(order_saga_orchestration="stuck")
    poster = suite.start()
    assert receiver.arrived.wait(60), "the alert never reached the receiver"
    poster.send_signal(signal.SIGKILL)
    poster.wait(10)
    receiver.behaviour = "ok"
    receiver.released.set()
    assert len(receiver.received) == 1
    after = suite.run()
    if notifier == "pagerduty":
        # PagerDuty deduplicates by dedup_key: the resend is the same PagerDuty incident.
        assert after.statuses() == [("pagerduty", "alert", "sent")]
        keys = {body["dedup_key"] for body in receiver.bodies()}
        assert len(receiver.received) == 2 and len(keys) == 1
    elif notifier == "ticket":
        # The resend looks for the issue by its marker first: found, not created again.
        assert after.statuses() == [("ticket", "alert", "sent")]
        assert [(r.method, r.path.split("?")[0]) for r in receiver.received] == [
            ("POST", "/repos/unibazzar/incidents/issues"),
            ("GET", "/repos/unibazzar/incidents/issues")]
        assert len(services.github.issues) == 1
        assert "POSTED ticket alert service:order-service (ticket #1)" in after.output
    else:
        assert len(receiver.received) == 1, "the alert was posted twice"
        assert after.statuses() == [("slack", "alert", "unknown")]
        assert "POST slack alert service:order-service UNKNOWN: the run sending it (" in \
            after.output
        assert "not resent, so nobody is notified twice — check slack by hand" in after.output
        assert suite.run().posting["results"] == []  # and it stays settled


def test_a_receiver_down_neither_hangs_the_run_nor_loses_a_message(
        tmp_path: Path, services: Services) -> None:
    budget = 4.0
    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path),
                  notify=services.notify(budget=budget))
    services.slack.down()
    services.webhook.behaviour = "error"
    suite.fault(order_saga_orchestration="stuck")
    first = suite.run()
    # Bounded: the run's own time plus at most the posting budget (and start-up slack),
    # never a client's default timeout.
    assert first.seconds < budget + 5 + first.summary["duration_s"], first.output
    assert first.code == 1 and first.summary["verdict"]["status"] == "failing"
    statuses = dict(((n, k), s) for n, k, s in first.statuses())
    assert statuses[("slack", "alert")] == statuses[("webhook", "alert")] == "pending"
    assert statuses[("pagerduty", "alert")] == statuses[("ticket", "alert")] == "sent"
    line = next(line for line in first.output.splitlines()
                if line.startswith("POST slack alert"))
    assert line.endswith(": will retry next run"), line
    assert len(services.webhook.received) == 0
    # Back to health: the next run delivers what was missed, once.
    services.slack.behaviour = services.webhook.behaviour = "ok"
    # Slack is back, on a new port: the webhook URL (the secret) says so.
    with serving(services.slack):
        second = suite.run()
    assert sorted(second.statuses()) == [("slack", "alert", "sent"),
                                         ("webhook", "alert", "sent")]
    assert len(services.slack.received) == 1 and len(services.webhook.received) == 1
    assert services.slack.bodies()[0]["text"].startswith("🚨 INCIDENT ALERT - SEV 2\n")
    assert len(services.pagerduty.received) == 1 and len(services.github.issues) == 1
    assert suite.run().posting["results"] == []


def test_a_receiver_too_slow_to_answer_hangs_nothing_and_posts_nothing_twice(
        tmp_path: Path, services: Services) -> None:
    budget = 5.0
    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path),
                  notify=services.notify(budget=budget))
    # Each holds the request past the 1 s deadline: it may have arrived.
    services.slack.behaviour = services.webhook.behaviour = services.github.behaviour = "slow"
    suite.fault(order_saga_orchestration="stuck")
    first = suite.run()
    assert first.seconds < budget + 5 + first.summary["duration_s"], first.output
    assert first.code == 1 and first.summary["verdict"]["status"] == "failing"
    assert first.statuses() == [("pagerduty", "alert", "sent"), ("slack", "alert", "unknown"),
                                ("ticket", "alert", "pending"), ("webhook", "alert", "unknown")]
    assert "POST slack alert service:order-service UNKNOWN: no answer within 1 s (may have " \
           "been delivered): not resent, so nobody is notified twice — check slack by hand" \
        in first.output
    # Slack and the webhook are never resent (they could post twice); the ticket is, after
    # looking for the issue the unanswered create may have made (none: one is created).
    services.slack.behaviour = services.webhook.behaviour = services.github.behaviour = "ok"
    second = suite.run()
    assert second.statuses() == [("ticket", "alert", "sent")]
    # It looked among the newest issues, then searched, then created it.
    assert [r.method for r in services.github.received] == ["GET", "GET", "POST"]
    assert len(services.github.issues) == 1
    assert len(services.slack.received) == len(services.webhook.received) == 0
    assert suite.run().posting["results"] == []


def test_a_state_this_version_cannot_read_is_reported_not_an_internal_error(
        tmp_path: Path, services: Services) -> None:
    import sqlite3

    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path),
                  notify=services.notify(only=("slack",)))
    suite.fault(order_saga_orchestration="stuck")
    assert suite.run().code == 1
    path = tmp_path / "state" / "incidents.sqlite3"
    with sqlite3.connect(path) as db:  # as a newer version might have written it
        (document,) = db.execute("SELECT document FROM state").fetchone()
        data = json.loads(document)
        data["incidents"]["service:order-service"]["paged_by_drone"] = "@bob"
        db.execute("UPDATE state SET document = ?", (json.dumps(data),))
    (suite.reports / "summary.json").unlink()
    after = suite.run()
    assert after.code == 1, after.output[-3000:]
    assert "INTERNALERROR" not in after.output and "Traceback" not in after.output
    assert after.summary["verdict"]["status"] == "failing"
    assert after.posting["error"].startswith(f"sqlite at {path}: the state of pytester cannot "
                                             "be read (TypeError: ")
    assert f"POSTING skipped: sqlite at {path}: the state of pytester cannot be read" in \
        after.output
    assert len(services.slack.received) == 1


def test_an_xdist_run_posts_once_from_its_controller(tmp_path: Path, services: Services) -> None:
    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path))
    suite.fault(order_saga_orchestration="stuck", listing_related_systems="redis")
    run = suite.run("-n", "2")
    assert run.code == 1, run.output
    assert sorted(run.statuses()) == sorted(
        (notifier, "alert", "sent") for notifier in ("pagerduty", "slack", "ticket", "webhook")
        for _ in range(2))
    keys = sorted(b["dedup_key"] for b in services.pagerduty.bodies())
    ids = incident_ids(services)
    assert keys == sorted([dedup_key("pytester", ids["service:listing-service"]),
                           dedup_key("pytester", ids["service:order-service"])])
    assert len(services.slack.received) == 2 and len(services.github.issues) == 2


def test_a_runner_killed_after_its_trigger_arrived_leaves_pagerduty_resolved(
        tmp_path: Path, services: Services) -> None:
    """A sends the trigger and dies before recording it; B runs healthy: the trigger is not
    resent after the resolve (it is superseded), the resolve goes out, nothing stays open."""
    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path),
                  notify=services.notify(budget=60, only=("pagerduty",)))
    services.pagerduty.behaviour = "stall"  # acts on the trigger, never answers
    suite.fault(order_saga_orchestration="stuck")
    poster = suite.start()
    assert services.pagerduty.arrived.wait(60), "the trigger never reached PagerDuty"
    poster.send_signal(signal.SIGKILL)
    poster.wait(10)
    services.pagerduty.behaviour = "ok"
    services.pagerduty.released.set()
    suite.fault()
    healthy = suite.run()
    assert healthy.code == 0, healthy.output
    assert [b["event_action"] for b in services.pagerduty.bodies()] == ["trigger", "resolve"]
    assert services.pagerduty.open_alerts() == {}, services.pagerduty.alerts
    assert ("pagerduty", "resolved", "sent") in healthy.statuses()


def test_a_refused_post_is_a_metric_and_a_line_not_a_retry(tmp_path: Path,
                                                            services: Services) -> None:
    suite = Suite(tmp_path / "suite", services, sqlite_state(tmp_path),
                  notify=services.notify(only=("slack",)))
    services.slack.answers.append((400, {}, "invalid_blocks"))
    suite.fault(order_saga_orchestration="stuck")
    metrics = tmp_path / "health.prom"
    run = suite.run(f"--metrics-file={metrics}")
    assert run.statuses() == [("slack", "alert", "failed")]
    assert "POST slack alert service:order-service REFUSED (HTTP 400: invalid_blocks): not " \
           "resent" in run.output
    assert 'unibazzar_health_posting_deliveries{answer="refused",environment="pytester",' \
           'notifier="slack",status="failed"} 1.0' in metrics.read_text()
    assert suite.run().posting["results"] == []  # never sent again
