"""``python -m unibazzar_health incident …``: the incident commander's loop on the store.

    incident list                              open incidents: severity, age, IC, level, ack
    incident ack KEY [--by @name]              someone has it: escalation pauses, PagerDuty acks
    incident ic KEY @name [--by @name]         assign the Incident Commander, or hand over
    incident note KEY "text" [--by @name]      an action taken: the next Status Update says it
    incident resolve KEY --reason "…"          resolved by hand: the next run confirms or reopens
    incident silence KEY --for 2h --reason "…" nothing posted for its checks until then

The store is the environment's ``[incident_state]`` (SQLite or Redis); of the file's secrets
only the store's is needed (a laptop has no Slack URL). Each action runs under the store's
lock (two people at once: both events kept) and writes an event with who and when. What it
sends (PagerDuty's ``acknowledge``) goes out at once where the notifiers' secrets are set,
else with the next run. Bad input is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unibazzar_health.config.errors import EnvironmentFileError
from unibazzar_health.incidents import commander
from unibazzar_health.incidents.commander import ActionError
from unibazzar_health.incidents.lifecycle import Policy, acknowledged
from unibazzar_health.incidents.notifiers import NOTIFIERS, kinds_of
from unibazzar_health.incidents.state import StoreError
from unibazzar_health.verdict.policy import clock, human_duration
from unibazzar_health.verdict.policy import parse_time as at

DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?")


def add_commands(commands: Any) -> None:
    incident = commands.add_parser("incident", help="acknowledge, assign, note, resolve or "
                                                    "silence an incident (the store)")
    actions = incident.add_subparsers(dest="action", required=True)

    def action(name: str, helptext: str) -> Any:
        parser = actions.add_parser(name, help=helptext)
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--env", metavar="NAME", help="environments/NAME.toml")
        where.add_argument("--env-file", metavar="PATH", help="the environment file")
        parser.add_argument("--reports-dir", default="reports", metavar="DIR",
                            help="the runs' reports directory (a SQLite store's home)")
        if name != "list":
            parser.add_argument("key", metavar="KEY",
                                help="the incident's key (dependency:redis) or id")
            parser.add_argument("--by", default=_whoami(), metavar="@NAME",
                                help="who does it (default: your login name)")
            parser.add_argument("--at", type=_when, default=None, metavar="TIME",
                                help="when it was done, ISO 8601 with its zone, e.g. "
                                     "2026-11-27T03:40Z (default: now): an action recorded "
                                     "after the fact keeps its place in the timeline")
        parser.set_defaults(run=_run, action_name=name)
        return parser

    action("list", "open incidents: key, severity, age, IC, level, acknowledged by, next "
                   "update due")
    ack = action("ack", "acknowledge: internal escalation pauses (until the severity rises "
                        "or the ack times out); PagerDuty is acknowledged")
    ack.add_argument("--no-post", action="store_true", help="queue PagerDuty's acknowledge "
                                                            "for the next run")
    ic = action("ic", "assign the Incident Commander (or hand over)")
    ic.add_argument("who", metavar="@NAME")
    note = action("note", "note an action taken (the next Status Update carries it)")
    note.add_argument("text")
    resolve = action("resolve", "resolved by hand: the next run confirms it or reopens it")
    resolve.add_argument("--reason", required=True)
    silence = action("silence", "a timed silence of the incident's checks")
    silence.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                         help="30m, 2h, 1d2h")
    silence.add_argument("--reason", required=True)


def _whoami() -> str:
    try:
        return "@" + getpass.getuser()
    except (KeyError, OSError):
        return "@unknown"


def _when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (2026-11-27T03:40Z)"
                                         ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone (write Z or +01:00)")
    return when.astimezone(UTC)


def minutes_of(text: str) -> float:
    """``30m``, ``2h``, ``1d2h`` (or a bare number of minutes) in minutes."""
    text = text.strip().lower()
    if text.isdigit():
        return float(text)
    match = DURATION.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise ActionError(f"--for {text!r}: not a duration (30m, 2h, 1d2h)")
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return days * 1440.0 + hours * 60.0 + minutes


def _run(args: argparse.Namespace) -> int:
    # Imported here: the command line builds its parser from this module for every command;
    # only an incident action reads the environment file's settings (pydantic models).
    from unibazzar_health.config.environment import choose_environment_file, read_environment_file
    from unibazzar_health.incidents.config import open_store_of_file

    path = choose_environment_file(Path.cwd(), args.env, args.env_file, os.environ)
    try:
        spec, _ = read_environment_file(path)
        store, environment = open_store_of_file(path, Path(args.reports_dir), os.environ)
    except EnvironmentFileError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not store.exists():
        print(f"{store.where}: no incident store yet (no run has remembered an incident)",
              file=sys.stderr)
        return 2
    now = getattr(args, "at", None) or datetime.now(UTC)
    try:
        if args.action_name == "list":
            print("\n".join(listing(store.peek(environment), now, spec)))
            return 0
        with store.transaction(environment) as tx:
            decision, said = _act(args, tx.state, now, spec)
            tx.save(decision.state, run=None, deliveries=decision.deliveries,
                    changes=decision.changes, now=now.isoformat(timespec="seconds"))
    except ActionError as exc:
        print(f"incident {args.action_name}: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        store.close()
    print(said)
    if decision.deliveries:
        for line in _post_now(path, args, [d.notifier for d in decision.deliveries]):
            print(line)
    return 0


def _act(args: argparse.Namespace, state: Any, now: datetime, spec: Any) -> tuple[Any, str]:
    key, by = args.key, args.by
    if args.action_name == "ack":
        timeout = spec.escalation.ack_timeout_minutes
        decision = commander.acknowledge(state, key, by, now, _policy(spec), timeout)
        incident = commander.find_open(decision.state, key)
        return decision, (f"ACK {incident.key} by {by}: internal escalation paused for "
                          f"{timeout:g} min, unless its severity rises")
    if args.action_name == "ic":
        decision = commander.assign_ic(state, key, args.who, by, now)
        return decision, f"IC {commander.find_open(decision.state, key).key}: {args.who}"
    if args.action_name == "note":
        decision = commander.add_note(state, key, args.text, by, now)
        return decision, (f"NOTE {commander.find_open(decision.state, key).key} ({by}): the "
                          "next Status Update carries it")
    if args.action_name == "resolve":
        decision = commander.resolve_by_hand(state, key, args.reason, by, now)
        return decision, (f"RESOLVE {commander.find_open(decision.state, key).key} ({by}): "
                          "the next run that sees its checks pass sends the resolution; "
                          "one that sees them fail reopens it")
    minutes = minutes_of(args.duration)
    decision = commander.silence(state, key, minutes, args.reason, by, now)
    until = datetime.fromisoformat(decision.state.silences[-1]["until"])
    return decision, (f"SILENCED {commander.find_open(decision.state, key).key} until "
                      f"{clock(until)} ({by}): nothing posted for its checks until then")


def _policy(spec: Any) -> Any:
    """The policy an action enqueues with: the environment's name and its notifiers (their
    kinds, read without their secrets)."""
    tables = spec.notify.tables if spec.notify is not None else {}
    configured = [name for name in NOTIFIERS if name in tables]
    return Policy(environment=spec.environment.name,
                  notifiers=tuple((name, kinds_of(name)) for name in configured))


def _post_now(path: Path, args: argparse.Namespace, notifiers: list[str]) -> list[str]:
    """Send what the action queued, where this shell has the notifiers' secrets; else say
    the next run sends it."""
    from unibazzar_health.incidents.config import enabled, load_environment
    from unibazzar_health.incidents.posting import Poster

    names = ", ".join(dict.fromkeys(notifiers))
    if getattr(args, "no_post", False):
        return [f"queued for {names}: the next run sends it"]
    try:
        env = load_environment(path, os.environ)
    except EnvironmentFileError as exc:
        return [f"queued for {names}: the next run sends it (not sent from here: "
                f"{exc.reason})"]
    if not enabled(env):
        return []
    report = Poster(env, "oncall", Path(args.reports_dir), env.redactor()).deliver()
    return [line for line in report.lines() if not line.startswith("posting:")]


def listing(state: Any, now: datetime, spec: Any) -> list[str]:
    """The open incidents as a table a person reads at 3 a.m."""
    policy = Policy(environment=spec.environment.name,
                    ack_timeout_minutes=spec.escalation.ack_timeout_minutes)
    rows = [("KEY", "SEVERITY", "AGE", "IC", "LEVEL", "ACKNOWLEDGED BY", "NEXT UPDATE DUE")]
    for incident in sorted(state.incidents.values(), key=lambda i: i.first_failure_at):
        if not incident.alerted:
            continue
        age = human_duration((now - at(incident.first_failure_at)).total_seconds())
        ack = "-"
        if incident.acknowledged_by:
            ack = incident.acknowledged_by + ("" if acknowledged(incident, now, policy)
                                              else " (timed out or worse since)")
        due = clock(at(incident.next_update_at)) if incident.next_update_at else "-"
        rows.append((incident.key, incident.severity, age,
                     incident.ic or spec.oncall.primary, str(incident.escalation_level), ack,
                     due))
    if len(rows) == 1:
        return [f"no open incident in {spec.environment.name}"]
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]
