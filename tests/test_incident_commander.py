"""The incident commander's loop (issue #16): ``python -m unibazzar_health incident …`` on
the real store, with the posting layer's runs (test_incident_posting.World: summaries at
chosen times, real receivers on loopback as strict as the services).

A game day of a whole night: fault on → alert → ack → no internal escalation while
acknowledged → note → the next update carries it → severity rises → escalation despite
the ack → fault off → resolution with its duration and notes → the post-mortem shows every
person's event in order. Serially (SQLite), and with two runners at each step (Redis)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from receivers import start_redis
from test_incident_posting import (
    HEALTHY,
    REDIS_DOWN,
    T0,
    World,
    failed,
    passed,
    statuses,
)

from unibazzar_health.incidents.commander import ActionError, add_note, find_open
from unibazzar_health.incidents.state import EnvironmentState, Incident

NIGHT_SETTINGS = """
[oncall]
primary = "@alice"
secondary = "@bob"

[escalation]
ack_timeout_minutes = 240
"""
# Redis down, and now an outage of ai-service pinned on it too: SEV1.
WORSE = [*REDIS_DOWN, failed("ai.scope-and-impact", "ai-service: no pod ready")]
HEALED = [*HEALTHY, passed("ai.scope-and-impact")]


@pytest.fixture
def night(tmp_path: Path) -> Iterator[Callable[..., World]]:
    with ExitStack() as stack:
        def make(**options: Any) -> World:
            world = World(tmp_path, stack, notifiers=("pagerduty", "slack"), **options)
            text = world.env_file.read_text().replace('[oncall]\nprimary = "@alice"\n', "")
            world.env_file.write_text(text + NIGHT_SETTINGS)
            return world
        yield make


def act(world: World, *args: str) -> Any:
    """An action a person takes just after the last run (on the runs' clock)."""
    when = (world.clock.now + timedelta(seconds=30)).isoformat()
    done = world.command("incident", *args, f"--env-file={world.env_file}",
                         f"--reports-dir={world.reports}",
                         *(("--at", when) if args[0] != "list" else ()))
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def slack_heads(world: World) -> list[str]:
    return [b["text"].split("\n")[0] for b in world.slack.bodies()]


def test_a_whole_night(night: Callable[..., World]) -> None:
    world = night()
    world.run(0, REDIS_DOWN)  # 03:00, SEV2: the alert
    assert slack_heads(world) == ["🚨 INCIDENT ALERT - SEV 2"]
    acked = act(world, "ack", "dependency:redis", "--by", "@alice")
    assert acked.stdout.splitlines()[0] == (
        "ACK dependency:redis by @alice: internal escalation paused for 240 min, unless its "
        "severity rises")
    assert [b["event_action"] for b in world.pagerduty.bodies()] == ["trigger", "acknowledge"]
    assert world.pagerduty.open_alerts() != {}  # acknowledged is still open

    listed = act(world, "list").stdout.splitlines()
    assert listed[0].split() == ["KEY", "SEVERITY", "AGE", "IC", "LEVEL", "ACKNOWLEDGED",
                                 "BY", "NEXT", "UPDATE", "DUE"]
    assert listed[1].split()[:2] == ["dependency:redis", "SEV2"]
    assert "@alice" in listed[1]

    # 04:05: past Level 2 for SEV2 (60 min) and the response time: acknowledged, so neither
    # the Level 2 escalation nor the secondary.
    world.run(65, REDIS_DOWN)
    assert "⏫ INCIDENT ESCALATION - SEV 2" not in slack_heads(world)
    act(world, "note", "dependency:redis", "restarted redis-0, replica resyncing",
        "--by", "@alice")
    act(world, "ic", "dependency:redis", "@carol", "--by", "@alice")
    update = world.run(95, REDIS_DOWN)  # the update due every 30 min carries the note
    assert ("slack", "update", "sent") in statuses(update)
    text = world.slack.bodies()[-1]["text"]
    assert "Actions taken: restarted redis-0, replica resyncing (@alice); checks: no change" \
        in text

    worse = world.run(100, WORSE)  # SEV1 now: escalates despite the ack
    heads = slack_heads(world)
    assert "⏫ INCIDENT ESCALATION - SEV 1" in heads, heads
    escalation = world.slack.bodies()[heads.index("⏫ INCIDENT ESCALATION - SEV 1")]["text"]
    assert "IC: @carol" in escalation
    assert ("pagerduty", "update", "sent") in statuses(worse)  # re-triggered at SEV1

    act(world, "resolve", "dependency:redis", "--reason", "failed over to redis-1",
        "--by", "@carol")
    world.run(130, HEALED)
    resolution = world.slack.bodies()[-1]["text"].split("\n")
    assert resolution[0] == "✅ INCIDENT RESOLVED - SEV 1"
    assert resolution[2].startswith("Resolution: failed over to redis-1 (@carol); confirmed: ")
    assert resolution[3] == "Duration: 2 h 10 min (2026-11-27 03:00 UTC → 2026-11-27 05:10 UTC)"
    assert world.pagerduty.open_alerts() == {}

    state = world.reports / "state" / "incidents.sqlite3"
    draft = Path(world.command("postmortem", f"--state={state}",
                               f"--reports-dir={world.reports}").stdout.strip()).read_text()
    kinds = ("ack", "note", "ic", "resolve")
    people = [line.split(" | ")[1].split(":")[0] for line in draft.splitlines()
              if line.startswith("| ") and line.split(" | ")[1].split(":")[0] in kinds]
    assert people == ["ack", "note", "ic", "resolve"], draft
    assert "| note: restarted redis-0, replica resyncing (@alice) |" in draft


def test_no_ack_pages_the_secondary_once_within_the_response_time(
        night: Callable[..., World]) -> None:
    world = night()
    world.run(0, REDIS_DOWN)
    world.run(30, REDIS_DOWN)
    assert not any("ESCALATION" in h for h in slack_heads(world))
    world.run(61, REDIS_DOWN)  # SEV2 responds within 60 min: nobody acknowledged
    escalations = [b["text"] for b in world.slack.bodies() if "ESCALATION" in b["text"]]
    assert any("Escalated to: Level 1 — On-call engineer (secondary) (@bob)" in t
               for t in escalations), escalations
    assert any("Why: not acknowledged by @alice within the SEV 2 response time (1 h)" in t
               for t in escalations)
    world.run(62, REDIS_DOWN)
    assert sum("(secondary)" in b["text"] for b in world.slack.bodies()) == 1


def test_a_hand_resolution_that_the_checks_contradict_reopens(
        night: Callable[..., World]) -> None:
    world = night()
    world.run(0, REDIS_DOWN)
    act(world, "resolve", "dependency:redis", "--reason", "flushed it", "--by", "@alice")
    still = world.run(5, REDIS_DOWN)
    assert ("slack", "update", "sent") in statuses(still)  # said at once: not resolved
    state = world.poster().store.peek("production")
    incident = state.incidents["dependency:redis"]
    assert incident.human_resolution is None
    assert [e.kind for e in incident.events][-2:] == ["reopened", "update"]


def test_a_silence_set_by_hand_mutes_the_incident_until_it_ends(
        night: Callable[..., World]) -> None:
    world = night()
    world.run(0, REDIS_DOWN)
    said = act(world, "silence", "dependency:redis", "--for", "1h", "--reason",
               "redis migration")
    assert "nothing posted for its checks until then" in said.stdout
    quiet = world.run(40, [*REDIS_DOWN[:1], passed("ai.redis-cache-performance")])
    assert [r for r in quiet.results if r.status == "sent"] == []
    assert any("redis migration" in s["reason"] for s in quiet.silenced)


@pytest.mark.parametrize(("args", "error"), [
    (("ack", "dependency:nothing"), "incident ack: no open incident 'dependency:nothing' in "
                                    "production (open: dependency:redis)"),
    (("note", "dependency:redis", "   "), "incident note: the note is empty: say what was "
                                         "done"),
    (("silence", "dependency:redis", "--for", "soon", "--reason", "x"),
     "incident silence: --for 'soon': not a duration (30m, 2h, 1d2h)"),
])
def test_bad_input_is_one_line(night: Callable[..., World], args: tuple[str, ...],
                               error: str) -> None:
    world = night()
    world.run(0, REDIS_DOWN)
    done = world.command("incident", *args, f"--env-file={world.env_file}",
                         f"--reports-dir={world.reports}")
    assert done.returncode == 2
    assert done.stderr.strip() == error


def test_a_resolved_incident_takes_no_action(night: Callable[..., World]) -> None:
    world = night()
    world.run(0, REDIS_DOWN)
    world.run(5, HEALTHY)
    done = world.command("incident", "ack", "dependency:redis", f"--env-file={world.env_file}",
                         f"--reports-dir={world.reports}")
    assert done.returncode == 2
    assert done.stderr.startswith("incident ack: incident dependency:redis is resolved (since ")


def test_two_people_noting_at_once_lose_no_event(night: Callable[..., World]) -> None:
    world = night()
    world.run(0, REDIS_DOWN)
    notes = [f"step {n}" for n in range(6)]
    threads = [threading.Thread(target=act, args=(world, "note", "dependency:redis", text,
                                                  "--by", f"@p{n}"))
               for n, text in enumerate(notes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    incident = world.poster().store.peek("production").incidents["dependency:redis"]
    assert sorted(n["text"] for n in incident.notes) == notes


def test_the_actions_are_pure_and_say_who() -> None:
    state = EnvironmentState("production")
    state.incidents["k"] = Incident(
        id="i", key="k", title="t", services=["s"], dependency=None, severity="SEV2",
        first_failure_at=T0.isoformat(), first_run_id="r", last_failure_at=T0.isoformat(),
        last_failing_run_id="r", checks=["c"], all_checks=["c"], alerted=True)
    decision = add_note(state, "k", "did a thing", "@dana", T0)
    assert state.incidents["k"].notes == []  # the input is not changed
    assert decision.state.incidents["k"].events[-1].by == "@dana"
    with pytest.raises(ActionError, match="--by names nobody"):
        add_note(state, "k", "x", "  ", T0)
    assert find_open(decision.state, "i").key == "k"  # by id too


def test_a_whole_night_with_two_runners_on_redis(night: Callable[..., World],
                                                 tmp_path: Path) -> None:
    process, server = start_redis(tmp_path)
    try:
        world = night()
        world.env_file.write_text(world.env_file.read_text() + f"""
[incident_state]
backend = "redis"
url = "{server.url}"
password_env = "STORE_PASSWORD"
""")
        world.environ["STORE_PASSWORD"] = server.password

        def both(minutes: float, results: list[Any]) -> None:
            threads = [threading.Thread(target=world.run, args=(minutes, results))
                       for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)

        both(0, REDIS_DOWN)
        act(world, "ack", "dependency:redis", "--by", "@alice")
        both(65, REDIS_DOWN)
        act(world, "note", "dependency:redis", "restarted redis-0", "--by", "@alice")
        both(95, REDIS_DOWN)
        both(100, WORSE)
        both(130, HEALED)
        heads = slack_heads(world)
        assert heads.count("🚨 INCIDENT ALERT - SEV 2") == 1
        assert heads.count("✅ INCIDENT RESOLVED - SEV 1") == 1
        assert heads.count("⏫ INCIDENT ESCALATION - SEV 1") == 1
        assert not any(h == "⏫ INCIDENT ESCALATION - SEV 2" for h in heads)
        assert any("restarted redis-0 (@alice)" in b["text"] for b in world.slack.bodies())
        assert [b["event_action"] for b in world.pagerduty.bodies()] == [
            "trigger", "acknowledge", "trigger", "resolve"]
        assert world.pagerduty.open_alerts() == {}
    finally:
        process.terminate()
        process.wait(10)


def test_the_infrastructure_team_is_called_when_the_cluster_fails() -> None:
    from unibazzar_health.verdict.policy import external_teams

    assert ("infrastructure_team", "infrastructure: the Kubernetes cluster failing") in \
        external_teams(["degradation"], ["kubernetes"])
    assert not [t for t, _ in external_teams(["degradation"], ["redis"])
                if t == "infrastructure_team"]


def test_a_slack_mention_in_contacts_is_kept_so_it_notifies() -> None:
    from unibazzar_health.incidents.notifiers.slack.blocks import _escape

    assert _escape("Level 2 — <!subteam^S0614TZR7> & <@U024BE7LH> <script>") == (
        "Level 2 — <!subteam^S0614TZR7> &amp; <@U024BE7LH> &lt;script&gt;")
