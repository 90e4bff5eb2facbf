"""The posting layer called directly (incidents/posting.py), with summaries built by
summary.build_summary at chosen times and real receivers on loopback: an incident of
1 h 23 min posted to Slack and PagerDuty, then its timeline and post-mortem draft from the
store through the commands; a dry run changes nothing; a store that cannot be reached is
reported, never raised; a claim left by a dead process on another host waits for its lease."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from receivers import PagerDutyReceiver, SlackReceiver, serving

from unibazzar_health.catalog import load_catalog
from unibazzar_health.incidents.posting import Poster, stale_claim
from unibazzar_health.incidents.sqlite_store import SqliteStore
from unibazzar_health.incidents.state import Delivery
from unibazzar_health.redaction import Redactor
from unibazzar_health.results import CheckResult, Outcome
from unibazzar_health.settings import load_environment
from unibazzar_health.severity import severity_of
from unibazzar_health.summary import Response, RunInfo, build_summary

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
SLACK_PATH = "/services/T0PLANTED/B0PLANTED/xoxbDirectS3cret"
ROUTING_KEY = "R0utingKeyDirect7a1"


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
    def __init__(self, tmp_path: Path, stack: ExitStack) -> None:
        self.slack = stack.enter_context(serving(SlackReceiver("slack")))
        self.pagerduty = stack.enter_context(serving(PagerDutyReceiver("pagerduty")))
        self.reports = tmp_path / "reports"
        self.env_file = tmp_path / "production.toml"
        self.env_file.write_text(f"""
[environment]
name = "production"

[oncall]
primary = "@alice"

[report]
url = "https://reports.example/prod/index.html"

[notify]
deadline = 1.0
budget = 5.0

[notify.slack]
webhook_url_env = "SLACK_URL"

[notify.pagerduty]
routing_key_env = "PD_KEY"
api_url = "{self.pagerduty.base}/v2/enqueue"
""")
        self.environ = {"SLACK_URL": self.slack.base + SLACK_PATH, "PD_KEY": ROUTING_KEY}
        self.clock = Clock()

    def poster(self, dry_run: bool = False) -> Poster:
        env = load_environment(self.env_file, self.environ)
        return Poster(env, "oncall", self.reports, env.redactor(), dry_run=dry_run,
                      clock=self.clock)

    def run(self, minutes: float, results: list[CheckResult], dry_run: bool = False) -> Any:
        self.clock.now = T0 + timedelta(minutes=minutes, seconds=3)
        poster = self.poster(dry_run)
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
