"""The posting layer called directly (incidents/posting.py), with summaries built by
summary.build_summary at chosen times and real receivers on loopback: an incident of
1 h 23 min posted to Slack and PagerDuty, then its timeline and post-mortem draft from the
store through the commands; a dry run changes nothing; a store that cannot be reached, a
state written by another version or a bug of ours is reported, never raised; a claim left by
a dead process on another host waits for its lease; a post that may have arrived is never
sent twice; the ticket's resolution comments once and closes, request by request within the
budget; PagerDuty hears a severity change."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from receivers import (
    GitHubReceiver,
    PagerDutyReceiver,
    SlackApiReceiver,
    SlackReceiver,
    WebhookReceiver,
    serving,
)

from unibazzar_health.config.errors import EnvironmentFileError
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.incidents.config import load_environment
from unibazzar_health.incidents.posting import Poster, stale_claim
from unibazzar_health.incidents.sqlite_store import SqliteStore
from unibazzar_health.incidents.state import Delivery
from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.results import CheckResult, Outcome
from unibazzar_health.verdict.severity import severity_of
from unibazzar_health.verdict.summary import Response, RunInfo, build_summary

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
SLACK_PATH = "/services/T0PLANTED/B0PLANTED/xoxbDirectS3cret"
ROUTING_KEY = "R0utingKeyDirect7a1b2c3d4e5f6a7b"  # 32, as the Events API wants
GITHUB_TOKEN = "ghp_D1rectT0kenPl4nted"
SLACK_BOT_TOKEN = "xoxb-1111-2222-B0tT0kenPl4nted"


def failed(check_id: str, message: str) -> CheckResult:
    entry = load_catalog().check(check_id)
    return CheckResult(id=entry.id, service=entry.service, step=entry.step, title=entry.title,
                       nodeid=entry.id, outcome=Outcome.FAILED, impact=entry.impact,
                       severity=severity_of(entry.impact).level, message=message,
                       fixes=list(entry.fixes), failed_dependencies=["redis"],
                       impact_statement=entry.impact_statement)


def passed(check_id: str) -> CheckResult:
    entry = load_catalog().check(check_id)
    return CheckResult(id=entry.id, service=entry.service, step=entry.step, title=entry.title,
                       nodeid=entry.id, outcome=Outcome.PASSED)


REDIS_DOWN = [failed("listing.related-systems", "redis at cache:6379/0: connection refused"),
              failed("ai.redis-cache-performance", "redis at cache:6379/1: connection refused")]
HEALTHY = [passed("listing.related-systems"), passed("ai.redis-cache-performance")]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self, tmp_path: Path, stack: ExitStack,
                 notifiers: tuple[str, ...] = ("slack", "pagerduty"), budget: float = 5.0,
                 webhook_scheme: str = "http") -> None:
        self.slack = stack.enter_context(serving(SlackReceiver("slack")))
        self.pagerduty = stack.enter_context(serving(PagerDutyReceiver("pagerduty")))
        self.github = stack.enter_context(serving(GitHubReceiver("github",
                                                                 token=GITHUB_TOKEN)))
        # As strict as a receiver behind the default max_bytes would be.
        self.webhook = stack.enter_context(serving(WebhookReceiver("webhook",
                                                                   max_bytes=256 * 1024)))
        # Slack's Web API for the bot-token mode ("slack-thread"): one channel the bot is in,
        # one it is not.
        self.slack_api = stack.enter_context(serving(SlackApiReceiver(
            "slack-api", token=SLACK_BOT_TOKEN,
            channels={"C0INCIDENTS": True, "C0OUTSIDE": False})))
        self.reports = tmp_path / "reports"
        self.env_file = tmp_path / "production.toml"
        sections = {
            "slack": '[notify.slack]\nwebhook_url_env = "SLACK_URL"\n',
            "pagerduty": f'[notify.pagerduty]\nrouting_key_env = "PD_KEY"\n'
                         f'api_url = "{self.pagerduty.base}/v2/enqueue"\n',
            "ticket": f'[notify.ticket]\napi_url = "{self.github.base}"\n'
                      f'repository = "unibazzar/incidents"\ntoken_env = "GH_TOKEN"\n',
            "webhook": f'[notify.webhook]\nurl = "{webhook_scheme}://127.0.0.1:'
                       f'{self.webhook.port}/hook"\n',
            "slack-thread": f'[notify.slack]\ntoken_env = "SLACK_TOKEN"\n'
                            f'channel = "C0INCIDENTS"\napi_url = "{self.slack_api.base}/api/"\n'}
        self.env_file.write_text(f"""
[environment]
name = "production"

[oncall]
primary = "@alice"

[report]
url = "https://reports.example/prod/index.html"

[notify]
deadline = 1.0
budget = {budget}

""" + "\n".join(sections[name] for name in notifiers))
        self.environ = {"SLACK_URL": self.slack.base + SLACK_PATH, "PD_KEY": ROUTING_KEY,
                        "GH_TOKEN": GITHUB_TOKEN, "SLACK_TOKEN": SLACK_BOT_TOKEN}
        self.clock = Clock()

    def poster(self, dry_run: bool = False, clock: Clock | None = None) -> Poster:
        env = load_environment(self.env_file, self.environ)
        return Poster(env, "oncall", self.reports, env.redactor(), dry_run=dry_run,
                      clock=clock or self.clock)

    def run(self, minutes: float, results: list[CheckResult], dry_run: bool = False) -> Any:
        """One runner's posting at T0 + minutes (its own clock: runners may overlap)."""
        clock = Clock()
        clock.now = self.clock.now = T0 + timedelta(minutes=minutes, seconds=3)
        poster = self.poster(dry_run, clock)
        started = T0 + timedelta(minutes=minutes)
        began = poster.first_failure_at([r.id for r in results if r.outcome is Outcome.FAILED])
        summary = build_summary(
            results, load_catalog(),
            RunInfo("production", str(self.env_file), started, started + timedelta(seconds=2),
                    []),
            replace(Response(ic="@alice", report_url="https://reports.example/prod/index.html"),
                    first_failure_at=began))
        report = poster.post(summary)
        poster.write(report)
        return report

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "unibazzar_health", *args],
                              capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", **self.environ})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with ExitStack() as stack:
        yield World(tmp_path, stack)


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    with ExitStack() as stack:
        yield lambda **options: World(tmp_path, stack, **options)


def incident_of_83_minutes(world: World) -> None:
    world.run(0, REDIS_DOWN)
    world.run(5, REDIS_DOWN)
    world.run(30, REDIS_DOWN)
    world.run(83, HEALTHY)


def test_an_incident_posted_then_told_as_a_timeline_and_a_post_mortem(world: World) -> None:
    incident_of_83_minutes(world)
    assert [b["text"].split("\n")[0] for b in world.slack.bodies()] == [
        "🚨 INCIDENT ALERT - SEV 2", "📊 INCIDENT UPDATE - SEV 2", "✅ INCIDENT RESOLVED - SEV 2"]
    assert world.slack.bodies()[2]["text"].split("\n")[3] == \
        "Duration: 1 h 23 min (2026-11-27 03:00 UTC → 2026-11-27 04:23 UTC)"
    assert [b["event_action"] for b in world.pagerduty.bodies()] == ["trigger", "resolve"]
    state = world.reports / "state" / "incidents.sqlite3"
    shown = world.command("timeline", f"--state={state}")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == """\
# Incident timeline: redis failing for ai-service, listing-service (production)

- Key: `dependency:redis` · severity SEV 2 · services ai-service, listing-service
- First failure: 2026-11-27 03:00 UTC · alerted: 2026-11-27 03:00 UTC · resolved: \
2026-11-27 04:23 UTC · duration: 1 h 23 min
- Checks: listing.related-systems, ai.redis-cache-performance
- Internal escalation reached: Level 1 — On-call engineer

| time | what |
|---|---|
| 2026-11-27 03:00 UTC | failing: listing.related-systems, ai.redis-cache-performance \
failing (SEV2) |
| 2026-11-27 03:00 UTC | alert: Initial Notification: SEV 2 redis failing for ai-service, \
listing-service — listing.related-systems, ai.redis-cache-performance |
| 2026-11-27 03:00 UTC | posted alert → pagerduty: 🚨 INCIDENT ALERT - SEV 2 |
| 2026-11-27 03:00 UTC | posted alert → slack: 🚨 INCIDENT ALERT - SEV 2 |
| 2026-11-27 03:30 UTC | update: Status Update (due): no change since 2026-11-27 03:00 UTC: \
2 check(s) still failing |
| 2026-11-27 03:30 UTC | posted update → slack: 📊 INCIDENT UPDATE - SEV 2 |
| 2026-11-27 04:23 UTC | resolved: Duration: 1 h 23 min (2026-11-27 03:00 UTC → 2026-11-27 \
04:23 UTC) |
| 2026-11-27 04:23 UTC | posted resolved → pagerduty: ✅ INCIDENT RESOLVED - SEV 2 |
| 2026-11-27 04:23 UTC | posted resolved → slack: ✅ INCIDENT RESOLVED - SEV 2 |
"""
    written = world.command("postmortem", f"--state={state}",
                            f"--reports-dir={world.reports}")
    assert written.returncode == 0, written.stderr
    draft = Path(written.stdout.strip())
    assert draft.name == "postmortem-dependency-redis-2026-11-27.md"
    text = draft.read_text()
    for line in [
        "# Post-mortem (draft): redis failing for ai-service, listing-service — production",
        "| Duration | 1 h 23 min |",
        "| Report | https://reports.example/prod/index.html |",
        "### Immediate (within 2 hours: due 2026-11-27 06:23 UTC)",
        "- [ ] Confirm full service restoration — every check of it passed from 2026-11-27 "
        "04:23 UTC (listing.related-systems, ai.redis-cache-performance)",
        "- [ ] Notify all stakeholders of resolution — pagerduty posted 2026-11-27 04:23 UTC; "
        "slack posted 2026-11-27 04:23 UTC",
        "### Follow-up (within 24 hours: due 2026-11-28 04:23 UTC)",
        "- [ ] Schedule post-mortem meeting",
        "### Post-Mortem (within 1 week: due 2026-12-04 04:23 UTC)",
        "- [ ] Document root cause analysis — the checks pinned it on redis, failing for "
        "ai-service, listing-service",
        "  - Last evidence: redis at cache:6379/0: connection refused",
    ]:
        assert line in text.splitlines(), line
    missing = world.command("timeline", f"--state={state}", "service:auth-service")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "no incident 'service:auth-service' in production"


def test_a_dry_run_prints_what_it_would_post_and_changes_nothing(world: World) -> None:
    report = world.run(0, REDIS_DOWN, dry_run=True)
    assert [(r.notifier, r.kind, r.status) for r in report.results] == [
        ("pagerduty", "alert", "would-post"), ("slack", "alert", "would-post")]
    assert "🚨 INCIDENT ALERT - SEV 2" in report.preview
    assert world.slack.received == [] and world.pagerduty.received == []
    assert not (world.reports / "state").exists()  # not even an empty store
    world.run(0, REDIS_DOWN)
    before = SqliteStore(world.reports / "state" / "incidents.sqlite3").peek("production")
    report = world.run(5, [*REDIS_DOWN[:1], passed("ai.redis-cache-performance")],
                       dry_run=True)
    assert [(r.notifier, r.kind) for r in report.results] == [("slack", "update")]
    after = SqliteStore(world.reports / "state" / "incidents.sqlite3").peek("production")
    assert after == before and len(world.slack.received) == 1
    posting = json.loads((world.reports / "posting.json").read_text())
    assert posting["dry_run"] is True


def test_a_store_that_cannot_be_reached_is_reported_not_raised(world: World) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    world.env_file.write_text(world.env_file.read_text() + f"""
[incident_state]
backend = "redis"
url = "redis://127.0.0.1:{port}/7"
deadline = 0.5
""")
    report = world.run(0, REDIS_DOWN)
    assert report.error == f"redis at 127.0.0.1:{port}/7: connection refused"
    assert report.lines()[0] == (
        f"POSTING skipped: redis at 127.0.0.1:{port}/7: connection refused: nothing decided "
        "or posted in this run; the summary is written and the next run tries again")
    assert world.slack.received == []


def test_a_claim_of_a_process_on_another_host_is_stale_only_after_its_lease() -> None:
    claimed = Delivery(id="d", environment="e", incident_id="i", incident_key="k",
                       kind="alert", notifier="slack", payload={}, dedup_key="x",
                       created_at=T0.isoformat(), status="sending",
                       claimed_by="elsewhere:1:run", claimed_at=T0.isoformat())
    assert not stale_claim(claimed, T0 + timedelta(seconds=30), lease_s=50, host="here")
    assert stale_claim(claimed, T0 + timedelta(seconds=51), lease_s=50, host="here")
    # On this host, a process that no longer exists is known dead at once.
    dead = replace(claimed, claimed_by="here:999999999:run")
    assert stale_claim(dead, T0 + timedelta(seconds=1), lease_s=50, host="here")


def test_errors_and_the_slack_url_path_are_redacted() -> None:
    from unibazzar_health.incidents.notifiers.slack import SlackNotifier

    notifier = SlackNotifier("https://hooks.slack.example" + SLACK_PATH)
    redactor = Redactor(["https://hooks.slack.example" + SLACK_PATH, *notifier.hidden()])
    assert redactor.text(f"POST {SLACK_PATH} failed") == "POST *** failed"
    assert "xoxb" not in repr(notifier)


def statuses(report: Any) -> list[tuple[str, str, str]]:
    return [(r.notifier, r.kind, r.status) for r in report.results]


def test_a_post_that_may_have_arrived_is_unknown_and_never_sent_twice(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack",))
    world.slack.behaviour = "lag"  # it gets the alert, but answers after the 1 s deadline
    first = world.run(0, REDIS_DOWN)
    assert statuses(first) == [("slack", "alert", "unknown")]
    assert "POST slack alert dependency:redis UNKNOWN: no answer within 1 s (may have been " \
           "delivered): not resent, so nobody is notified twice — check slack by hand" in \
           first.lines()
    world.slack.behaviour = "ok"
    assert world.run(5, REDIS_DOWN).results == []
    assert len(world.slack.received) == 1


def test_a_ticket_resolution_whose_close_failed_comments_once(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("ticket",))
    world.run(0, REDIS_DOWN)
    world.github.fail.append(("PATCH", "/issues/1"))  # the close answers 502, once
    resolved = world.run(30, HEALTHY)
    assert [(r.kind, r.status, r.tries) for r in resolved.results] == [("resolved", "sent", 2)]
    assert world.github.issues[1]["state"] == "closed"
    assert [c.split("\n")[1] for c in world.github.comments[1]] == [
        "✅ INCIDENT RESOLVED - SEV 2"]


def test_a_ticket_resolution_is_budgeted_request_by_request(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("ticket",), budget=1.0)
    world.run(0, REDIS_DOWN)
    # Each request takes 0.6 s: the comment fits in the 1 s budget, the close cannot.
    world.github.behaviour, world.github.lag_s = "lag", 0.6
    first = world.run(30, HEALTHY)
    assert statuses(first) == [("ticket", "resolved", "pending")]
    world.github.behaviour = "ok"
    second = world.run(35, HEALTHY)
    assert statuses(second) == [("ticket", "resolved", "sent")]
    assert world.github.issues[1]["state"] == "closed"
    assert len(world.github.comments[1]) == 1


def test_pagerduty_is_triggered_again_when_the_severity_changes(world: World) -> None:
    world.run(0, REDIS_DOWN)  # SEV2
    world.run(5, [REDIS_DOWN[1], passed("listing.related-systems")])  # SEV3 now
    events = world.pagerduty.bodies()
    assert [(e["event_action"], e["payload"]["severity"]) for e in events] == [
        ("trigger", "error"), ("trigger", "warning")]
    assert events[0]["dedup_key"] == events[1]["dedup_key"]
    assert events[1]["payload"]["summary"].startswith("📊 INCIDENT UPDATE - SEV 3: ")
    assert len(world.slack.received) == 2


def test_a_state_written_by_another_version_is_reported_not_raised(world: World) -> None:
    world.run(0, REDIS_DOWN)
    path = world.reports / "state" / "incidents.sqlite3"

    def rewrite(change: Callable[[dict[str, Any]], None]) -> None:
        with sqlite3.connect(path) as db:
            (document,) = db.execute("SELECT document FROM state").fetchone()
            data = json.loads(document)
            change(data)
            db.execute("UPDATE state SET document = ?", (json.dumps(data),))

    # A field a newer version added to its incidents.
    rewrite(lambda d: d["incidents"]["dependency:redis"].update(paged_by_drone="@bob"))
    assert world.poster().first_failure_at(["listing.related-systems"]) is None  # no raise
    report = world.run(5, REDIS_DOWN)
    assert report.error is not None and report.error.startswith(
        f"sqlite at {path}: the state of production cannot be read (TypeError: ")
    assert report.lines()[0].startswith(f"POSTING skipped: sqlite at {path}: the state of ")
    assert json.loads((world.reports / "posting.json").read_text())["error"] == report.error
    # A newer layout is named as such.
    rewrite(lambda d: d.update(version=3))
    report = world.run(10, REDIS_DOWN)
    assert report.error == (
        f"sqlite at {path}: the state of production is version 3; this unibazzar-health "
        "reads versions 1 to 2: run the same version on every runner that shares the store "
        "(nothing decided, nothing changed)")
    assert len(world.slack.received) == 1


def test_a_bug_in_posting_is_reported_not_raised(world: World,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import unibazzar_health.incidents.lifecycle as lifecycle

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("started_at")

    monkeypatch.setattr(lifecycle, "decide", broken)
    report = world.run(0, REDIS_DOWN)
    assert report.error is not None
    assert report.error.startswith("KeyError: 'started_at' (at test_incident_posting.py:")
    assert report.lines()[0].startswith("POSTING skipped: KeyError: 'started_at' (at ")
    written = json.loads((world.reports / "posting.json").read_text())
    assert written["error"] == report.error and written["decided"] is False
    monkeypatch.undo()
    # After the decision is saved, what was not sent stays in the outbox.
    monkeypatch.setattr(Poster, "_drain", lambda *args: broken())
    report = world.run(5, REDIS_DOWN)
    assert report.decided and report.lines()[0].startswith(
        "POSTING stopped: KeyError: 'started_at' (at ")
    assert report.lines()[0].endswith(": what was not sent stays in the outbox; the next run "
                                      "sends it")


def test_the_timeline_of_an_environment_file_needs_only_the_stores_secret(
        world: World) -> None:
    incident_of_83_minutes(world)
    # No Slack URL, no routing key: a laptop reading the timeline has neither.
    shown = subprocess.run(
        [sys.executable, "-m", "unibazzar_health", "timeline", f"--env-file={world.env_file}",
         f"--reports-dir={world.reports}"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items()
                                         if k == "PYTHONPATH"}})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# Incident timeline: redis failing for ai-service, "
                                   "listing-service (production)\n")


def test_the_commands_resolve_the_stores_password_and_no_other_secret(tmp_path: Path) -> None:
    from unibazzar_health.incidents.config import open_store_of_file

    path = tmp_path / "prod.toml"
    path.write_text('[environment]\nname = "prod"\n\n[notify.slack]\n'
                    'webhook_url_env = "SLACK_URL"\n\n[incident_state]\nbackend = "redis"\n'
                    'url = "redis://cache.example:6380/2"\npassword_env = "STATE_PW"\n')
    with pytest.raises(EnvironmentFileError) as raised:
        open_store_of_file(path, tmp_path, {})
    assert str(raised.value) == (f"{path}: key 'incident_state.password_env': value "
                                 "'STATE_PW': environment variable STATE_PW is not set")
    store, name = open_store_of_file(path, tmp_path, {"STATE_PW": "pw"})
    assert (store.where, name) == ("redis at cache.example:6380/2", "prod")


# ---- what the real services do (issue #14) ------------------------------------------------
def run_concurrently(world: World, *runs: tuple[float, list[CheckResult]],
                     after_first_arrives: Any = None) -> list[Any]:
    """Runners as threads, each its own Poster, store connection and clock; the later ones
    start once the first one's request has reached ``after_first_arrives``."""
    import threading

    reports: dict[int, Any] = {}

    def runner(index: int, minutes: float, results: list[CheckResult]) -> None:
        reports[index] = world.run(minutes, results)

    first = threading.Thread(target=runner, args=(0, *runs[0]))
    first.start()
    if after_first_arrives is not None:
        assert after_first_arrives.arrived.wait(10), "the first runner never sent"
    others = [threading.Thread(target=runner, args=(n, *r)) for n, r in
              enumerate(runs[1:], 1)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(30)
    return [reports[n] for n in range(len(runs))]


@pytest.mark.parametrize("runners", [2, 3])
def test_a_resolve_never_overtakes_its_trigger_from_another_runner(
        make_world: Callable[..., World], runners: int) -> None:
    """Runner A's trigger is held by PagerDuty; B (and C) see the platform healthy and
    resolve meanwhile. Their resolve waits for A's trigger, whoever holds it, so PagerDuty
    hears trigger then resolve, and nothing stays open."""
    world = make_world(notifiers=("pagerduty",))
    world.pagerduty.hold_first_s = 0.8  # within the 1 s deadline: A's trigger is answered
    reports = run_concurrently(world, (0, REDIS_DOWN), *[(0.1 * (1 + n), HEALTHY)
                                                         for n in range(runners - 1)],
                               after_first_arrives=world.pagerduty)
    assert statuses(reports[0]) == [("pagerduty", "alert", "sent")]
    waiting = [r for report in reports[1:] for r in report.results]
    assert {(r.kind, r.status) for r in waiting} == {("resolved", "skipped")}
    assert "kept in order: an earlier pagerduty alert of this incident is being sent by " \
           "another runner" in {r.error for r in waiting}
    later = world.run(5, HEALTHY)
    assert statuses(later) == [("pagerduty", "resolved", "sent")]
    assert [b["event_action"] for b in world.pagerduty.bodies()] == ["trigger", "resolve"]
    assert world.pagerduty.open_alerts() == {}


def test_each_occurrence_pages_under_its_own_dedup_key(world: World) -> None:
    """An alert left acknowledged (or open) must not swallow the next occurrence's page."""
    world.run(0, REDIS_DOWN)
    world.run(10, HEALTHY)
    world.run(20, REDIS_DOWN)
    triggers = [b for b in world.pagerduty.bodies() if b["event_action"] == "trigger"]
    assert len(triggers) == 2 and triggers[0]["dedup_key"] != triggers[1]["dedup_key"]
    assert list(world.pagerduty.open_alerts().values()) == [1]


def test_a_refused_message_fails_at_once_and_holds_nothing_back(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack",))
    world.slack.answers.append((400, {}, "invalid_blocks"))
    first = world.run(0, REDIS_DOWN)
    assert [(r.status, r.answer, r.tries) for r in first.results] == [("failed", "refused", 1)]
    assert "POST slack alert dependency:redis REFUSED (HTTP 400: invalid_blocks): not resent" \
        in first.lines()
    posting = json.loads((world.reports / "posting.json").read_text())
    assert posting["results"][0]["answer"] == "refused"
    # The next message goes out; the refused one is never sent again.
    update = world.run(30, REDIS_DOWN)
    assert statuses(update) == [("slack", "update", "sent")]
    assert [b["text"].split("\n")[0] for b in world.slack.bodies()] == [
        "📊 INCIDENT UPDATE - SEV 2"]


def test_a_revoked_webhook_names_the_setting_to_fix(make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack",))
    world.slack.answers.append((404, {}, "no_service"))
    report = world.run(0, REDIS_DOWN)
    assert report.results[0].fix == ("the service refused our credentials: check "
                                     "[notify.slack] webhook_url_env (SLACK_URL)")
    assert report.lines()[0].endswith("— the service refused our credentials: check "
                                      "[notify.slack] webhook_url_env (SLACK_URL)")


def test_retry_after_is_waited_for_within_the_budget(make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack",))
    world.slack.answers.append((429, {"Retry-After": "1"}, "rate_limited"))
    report = world.run(0, REDIS_DOWN)
    assert [(r.status, r.tries) for r in report.results] == [("sent", 2)]
    first, second = world.slack.arrivals
    assert second - first >= 1.0, "resent before the Retry-After"


def test_retry_after_beyond_the_budget_waits_for_a_later_run(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack", "pagerduty"))
    world.slack.answers.append((429, {"Retry-After": "120"}, "rate_limited"))
    first = world.run(0, REDIS_DOWN)
    slack = next(r for r in first.results if r.notifier == "slack")
    assert (slack.status, slack.tries) == ("pending", 1)
    assert slack.not_before == "2026-11-27T03:02:03+00:00"
    assert len(world.slack.arrivals) == 1  # not hammered again in this run
    soon = world.run(1, REDIS_DOWN)
    assert [(r.status, r.error) for r in soon.results] == [
        ("skipped", "slack asked us to wait (rate limited) until 2026-11-27T03:02:03+00:00")]
    assert len(world.slack.arrivals) == 1
    later = world.run(3, REDIS_DOWN)
    assert statuses(later) == [("slack", "alert", "sent")]


def test_retry_after_as_an_http_date() -> None:
    from unibazzar_health.incidents.notifiers.base import retry_after

    now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC).timestamp()
    assert retry_after({"Retry-After": "Wed, 02 Dec 2026 03:00:30 GMT"}, lambda: now) == 30
    assert retry_after({"retry-after": "7"}) == 7
    assert retry_after({"Retry-After": "soon"}) is None and retry_after({}) is None


@pytest.mark.parametrize("headers", [
    {"retry-after": "1"},  # a secondary rate limit
    {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "{reset}"},  # the primary one
])
def test_githubs_403_rate_limits_are_waited_for_not_given_up(
        make_world: Callable[..., World], headers: dict[str, str]) -> None:
    import time

    world = make_world(notifiers=("ticket",))
    answer = {k: v.format(reset=int(time.time()) + 1) for k, v in headers.items()}
    world.github.answers.append((403, answer, {"message": "You have exceeded a secondary "
                                                          "rate limit"}))
    report = world.run(0, REDIS_DOWN)
    assert [(r.status, r.tries) for r in report.results] == [("sent", 2)], report.lines()
    assert len(world.github.issues) == 1


def test_one_ticket_even_when_github_drops_the_labels(make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("ticket",))
    world.github.can_push = False
    world.github.behaviour = "lag"  # creates the issue, answers after the deadline
    first = world.run(0, REDIS_DOWN)
    assert statuses(first) == [("ticket", "alert", "pending")]
    world.github.behaviour = "ok"
    second = world.run(5, REDIS_DOWN)
    assert statuses(second) == [("ticket", "alert", "sent")]
    assert len(world.github.issues) == 1, "a second ticket for one incident"


def test_a_create_whose_labels_were_dropped_says_so(make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("ticket",))
    world.github.can_push = False
    report = world.run(0, REDIS_DOWN)
    assert "  labels dropped by GitHub on that ticket: incident (the token cannot push to the " \
           "repository: give it triage or write access)" in report.lines()


def test_a_tls_failure_is_not_delivered_and_is_retried(make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("webhook",), webhook_scheme="https")  # a plain port
    report = world.run(0, REDIS_DOWN)
    [result] = report.results
    assert (result.status, result.answer) == ("pending", "retry"), result
    assert result.error.startswith("TLS handshake failed")


def test_posted_is_never_said_when_the_store_recorded_otherwise(
        make_world: Callable[..., World]) -> None:
    """A's send outlives its lease; B settles A's claim as unknown meanwhile; A's late
    success cannot be recorded, and A says what the store holds."""
    import threading

    world = make_world(notifiers=("slack",))
    world.slack.behaviour, world.slack.lag_s = "lag", 0.8
    world.env_file.write_text(world.env_file.read_text().replace("deadline = 1.0",
                                                                 "deadline = 3.0"))
    reports: list[Any] = []
    a = threading.Thread(target=lambda: reports.append(world.run(0, REDIS_DOWN)))
    a.start()
    assert world.slack.arrived.wait(10)
    world.run(60, REDIS_DOWN)  # an hour later on its clock: A's claim is past its lease
    a.join(10)
    [result] = reports[0].results
    assert result.status == "unknown"
    assert "another runner had already settled the delivery as 'unknown'" in result.error
    assert not any(line.startswith("POSTED") for line in reports[0].lines())


def every_check_dead(evidence_bytes: int) -> list[CheckResult]:
    """The largest incident we can make: every check of the catalog failing, with
    megabytes of evidence in all."""
    return [failed(check_id, f"{check_id}: " + "connection refused; " * (evidence_bytes // 20))
            for check_id in load_catalog().checks]


def test_the_largest_incident_fits_every_services_limits(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack", "pagerduty", "ticket", "webhook"), budget=20.0)
    report = world.run(0, every_check_dead(200_000))
    assert {(r.notifier, r.status) for r in report.results} == {
        ("slack", "sent"), ("pagerduty", "sent"), ("ticket", "sent"), ("webhook", "sent")}, \
        report.lines()
    [slack] = world.slack.bodies()
    assert len(slack["blocks"]) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in slack["blocks"])
    assert "more lines — see the report" in json.dumps(slack, ensure_ascii=False)
    [issue] = world.github.issues.values()
    assert len(issue["body"]) <= 65_536 and len(issue["title"]) <= 256
    assert issue["body"].rstrip().endswith("-->")  # the marker, whole
    # The evidence was cut first: every check is still there, each evidence shortened.
    assert all(f"[`{check_id}`]" in issue["body"] for check_id in load_catalog().checks)
    assert "connection refused; " * 60 not in issue["body"]
    [hook] = world.webhook.received
    assert len(hook.raw) <= 256 * 1024
    assert hook.body["truncated"]["report_url"] == "https://reports.example/prod/index.html"
    [event] = world.pagerduty.received
    assert len(event.raw) <= 512 * 1024 and len(event.body["payload"]["summary"]) <= 1024


def test_the_test_page_goes_through_every_notifier_and_prints_each_answer(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack", "pagerduty", "ticket", "webhook"))
    shown = world.command("notify", "test", f"--env-file={world.env_file}")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("pagerduty: ok — trigger: HTTP 202 (dedup_key "
                               "unibazzar-health-test-")
    assert lines[1] == "    resolve: HTTP 202"
    assert "slack: ok — HTTP 200 ok: the test message is in the channel" in lines
    assert any(line.startswith("ticket: ok — create: HTTP 201, issue #1") for line in lines)
    assert "    close: HTTP 200" in lines
    assert any(line.startswith("webhook: ok — HTTP 200: delivery test-") for line in lines)
    assert world.pagerduty.open_alerts() == {}  # triggered and resolved at once
    assert world.github.issues[1]["state"] == "closed"
    assert "TEST" in world.slack.bodies()[0]["text"]
    assert not (world.reports / "state").exists()  # no incident state touched
    assert SLACK_PATH not in shown.stdout and ROUTING_KEY not in shown.stdout


def test_the_test_page_says_which_setting_a_refusal_points_at(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack",))
    world.slack.answers.append((410, {}, "channel_is_archived"))
    shown = world.command("notify", "test", f"--env-file={world.env_file}")
    assert shown.returncode == 1
    assert shown.stdout.splitlines() == [
        "slack: FAILED — refused: HTTP 410: channel_is_archived",
        "    the service refused our credentials: check [notify.slack] webhook_url_env "
        "(SLACK_URL)"]


# ---- Slack's bot-token mode: one thread per incident (issue #16) --------------------------
def test_one_slack_thread_per_incident_its_root_edited_to_the_end(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack-thread",))
    incident_of_83_minutes(world)
    thread = world.slack_api.thread()
    assert [m["text"].split("\n")[0] for m in thread[1:]] == [
        "📊 INCIDENT UPDATE - SEV 2", "✅ INCIDENT RESOLVED - SEV 2"]
    root = thread[0]
    assert root["edits"][0].startswith("🚨 INCIDENT ALERT - SEV 2")  # posted as the alert
    assert root["text"] == ("✅ RESOLVED — SEV 2 redis failing for ai-service, "
                            "listing-service — 1 h 23 min (2026-11-27 03:00 UTC → 2026-11-27 "
                            "04:23 UTC)")
    assert all(m["metadata"]["event_type"] == "unibazzar_health_delivery" for m in thread)
    assert len([m for m in world.slack_api.messages if not m["thread_ts"]]) == 1


def test_a_slack_post_that_may_have_arrived_is_found_not_posted_twice(
        make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack-thread",))
    world.slack_api.behaviour = "lag"  # posts it, answers after the 1 s deadline
    first = world.run(0, REDIS_DOWN)
    assert statuses(first) == [("slack", "alert", "pending")]  # recoverable: not unknown
    world.slack_api.behaviour = "ok"
    second = world.run(5, REDIS_DOWN)
    assert statuses(second) == [("slack", "alert", "sent")]
    assert len(world.slack_api.messages) == 1, "the alert was posted twice"
    world.run(30, REDIS_DOWN)  # the update goes in the thread the lost answer started
    assert world.slack_api.messages[1]["thread_ts"] == world.slack_api.messages[0]["ts"]


@pytest.mark.parametrize(("change", "error", "fix"), [
    ({"SLACK_TOKEN": "xoxb-0000-revoked"}, "invalid_auth",
     "Slack refused the bot token: check [notify.slack] token_env (SLACK_TOKEN)"),
    ({"channel": "C0OUTSIDE"}, "not_in_channel",
     "the bot cannot post to C0OUTSIDE: check [notify.slack] channel (a channel ID, C…) and "
     "invite the bot to it"),
    ({"channel": "C0NOWHERE"}, "channel_not_found",
     "the bot cannot post to C0NOWHERE: check [notify.slack] channel (a channel ID, C…) and "
     "invite the bot to it"),
])
def test_slacks_refusals_name_the_setting_to_fix(make_world: Callable[..., World],
                                                 change: dict[str, str], error: str,
                                                 fix: str) -> None:
    world = make_world(notifiers=("slack-thread",))
    if "channel" in change:
        world.env_file.write_text(world.env_file.read_text().replace(
            'channel = "C0INCIDENTS"', f'channel = "{change["channel"]}"'))
    world.environ.update({k: v for k, v in change.items() if k != "channel"})
    report = world.run(0, REDIS_DOWN)
    [result] = report.results
    assert (result.status, result.answer, result.error, result.fix) == (
        "failed", "refused", error, fix)


def test_slacks_ratelimited_is_waited_for(make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack-thread",))
    world.slack_api.answers.append((429, {"Retry-After": "1"},
                                    {"ok": False, "error": "ratelimited"}))
    report = world.run(0, REDIS_DOWN)
    assert [(r.status, r.tries) for r in report.results] == [("sent", 2)]
    first, second = world.slack_api.arrivals[:2]  # (then the post itself)
    assert second - first >= 1.0
    assert len(world.slack_api.messages) == 1


def test_the_largest_incident_fits_a_slack_thread(make_world: Callable[..., World]) -> None:
    world = make_world(notifiers=("slack-thread",), budget=20.0)
    report = world.run(0, every_check_dead(200_000))
    assert statuses(report) == [("slack", "alert", "sent")], report.lines()
