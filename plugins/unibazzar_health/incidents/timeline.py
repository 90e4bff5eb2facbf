"""An incident's timeline, and a post-mortem draft, from what the store remembers.

    python -m unibazzar_health timeline [--env NAME | --env-file=PATH | --state FILE]
                                        [--environment NAME] [--reports-dir DIR] [KEY]
    python -m unibazzar_health postmortem [same options] [KEY] [--output FILE]

KEY is an incident's root cause key (``dependency:redis``) or id; without it, the latest
incident still open, else the latest resolved. The rendering is plain functions over the
state (``timeline``, ``postmortem``); the commands only find the store.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unibazzar_health.config.errors import EnvironmentFileError
from unibazzar_health.incidents.state import (
    SENT,
    Delivery,
    EnvironmentState,
    Incident,
    StoreError,
)
from unibazzar_health.reports.messages import sev
from unibazzar_health.verdict.model import Summary, stored_summaries
from unibazzar_health.verdict.policy import (
    CHECKLIST_WITHIN,
    LEVELS,
    clock,
    human_duration,
)
from unibazzar_health.verdict.policy import parse_time as at

# The runbook's Post-Incident Procedures, word for word, by checklist.
CHECKLISTS = {
    "Immediate": ["Confirm full service restoration", "Document timeline and actions taken",
                  "Notify all stakeholders of resolution", "Update monitoring/alerting if needed"],
    "Follow-up": ["Schedule post-mortem meeting", "Gather feedback from all participants",
                  "Create action items for prevention", "Update runbooks based on learnings"],
    "Post-Mortem": ["Conduct blameless post-mortem", "Document root cause analysis",
                    "Create prevention and detection improvements",
                    "Share learnings with broader team"],
}


def _within(delta: Any) -> str:
    """As the runbook says it: 2 hours, 24 hours, 1 week."""
    hours = delta.total_seconds() / 3600
    if hours % 168 == 0:
        weeks = int(hours // 168)
        return f"{weeks} week{'s' if weeks > 1 else ''}"
    return f"{hours:g} hours"


def _when(iso: str | None) -> str:
    return clock(at(iso)) if iso else "—"


def _delivery_line(d: Delivery) -> tuple[str, str]:
    """(when, what) for one message to one notifier."""
    what = f"{d.kind} → {d.notifier}"
    if d.status == SENT:
        extra = f" (ticket #{d.receipt['number']})" if d.receipt and d.kind == "alert" and \
            "number" in d.receipt else ""
        return d.sent_at or d.created_at, f"posted {what}{extra}: {d.headline}"
    if d.status == "pending":
        return d.updated_at or d.created_at, (
            f"{what} not delivered yet ({d.last_error or 'not attempted'}; "
            f"{d.attempts} attempt(s))")
    if d.status == "unknown":
        return d.updated_at or d.created_at, f"{what} UNKNOWN: {d.last_error}"
    if d.status == "superseded":
        return d.updated_at or d.created_at, f"{what} superseded by a newer message"
    return d.updated_at or d.created_at, f"{what} {d.status}: {d.last_error or ''}".rstrip(": ")


def _rows(state: EnvironmentState, incident: Incident) -> list[tuple[str, str]]:
    rows = [(e.at, f"{e.kind}: {e.text}" + (f" ({e.by})" if e.by and e.by not in e.text
                                              else "")) for e in incident.events]
    rows += [_delivery_line(d) for d in state.deliveries_of(incident)]
    return sorted(rows, key=lambda r: at(r[0]))


def _alerted(state: EnvironmentState, incident: Incident) -> str:
    """When a receiver accepted the alert — only that is "alerted": a decided alert that no
    notifier took, or none configured, says so."""
    alerts = [d for d in state.deliveries_of(incident) if d.kind == "alert"]
    accepted = sorted(d.sent_at for d in alerts if d.status == SENT and d.sent_at)
    if accepted:
        return _when(accepted[0])
    if not incident.alerted:
        return "not yet"
    if not alerts:
        return "never posted (no [notify])"
    return "not delivered (" + "; ".join(
        f"{d.notifier} {d.status}" + (f": {d.last_error}" if d.last_error else "")
        for d in alerts) + ")"


def _duration(incident: Incident, now: datetime) -> str:
    began = at(incident.first_failure_at)
    if incident.resolved_at:
        return human_duration((at(incident.resolved_at) - began).total_seconds())
    return f"{human_duration((now - began).total_seconds())} so far (open)"


def timeline(state: EnvironmentState, incident: Incident, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    ticket = state.ticket_of(incident.id)
    checks = incident.all_checks
    lines = [
        f"# Incident timeline: {incident.title} ({state.environment})",
        "",
        f"- Key: `{incident.key}` · severity {sev(incident.severity)} · services "
        f"{', '.join(incident.services)}",
        f"- First failure: {_when(incident.first_failure_at)} · alerted: "
        f"{_alerted(state, incident)} · resolved: {_when(incident.resolved_at)} · duration: "
        f"{_duration(incident, now)}",
        f"- Checks: {', '.join(checks)}",
        f"- Internal escalation reached: Level {incident.escalation_level} — "
        f"{LEVELS[incident.escalation_level]}",
    ]
    if ticket:
        lines.append(f"- Ticket: #{ticket.get('number')} {ticket.get('url') or ''}".rstrip())
    if incident.silenced:
        lines.append(f"- Silenced: {incident.silenced['reason']} (until "
                     f"{_when(incident.silenced['until'])})")
    lines += ["", "| time | what |", "|---|---|"]
    lines += [f"| {_when(when)} | {what.replace('|', '/')} |"
              for when, what in _rows(state, incident)]
    return "\n".join(lines) + "\n"


def postmortem(state: EnvironmentState, incident: Incident,
               stored: Mapping[str, Summary], now: datetime | None = None) -> str:
    """A post-mortem draft: the facts, the timeline, what failed, and the runbook's
    Post-Incident checklists with this incident's due times."""
    now = now or datetime.now(UTC)
    resolved = at(incident.resolved_at) if incident.resolved_at else None
    deliveries = state.deliveries_of(incident)
    ticket = state.ticket_of(incident.id)
    last = stored.get(incident.last_failing_run_id) or stored.get(incident.first_run_id)
    report_url = last.incident.report_url if last else None
    lines = [
        f"# Post-mortem (draft): {incident.title} — {state.environment}",
        "",
        f"Drafted {clock(now)} by `python -m unibazzar_health postmortem` from the incident "
        "store. Blameless: it records what the checks saw and what was posted; the why is "
        "for the meeting.",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| Severity | {sev(incident.severity)} |",
        f"| Services | {', '.join(incident.services)} |",
        f"| Root cause (as the checks pinned it) | `{incident.key}`"
        + (f" — dependency {incident.dependency}" if incident.dependency else "") + " |",
        f"| First failure | {_when(incident.first_failure_at)} |",
        f"| Alerted | {_when(incident.alerted_at)} |",
        f"| Resolved | {_when(incident.resolved_at)} |",
        f"| Duration | {_duration(incident, now)} |",
        f"| Escalation reached | Level {incident.escalation_level} — "
        f"{LEVELS[incident.escalation_level]} |",
    ]
    if ticket:
        lines.append(f"| Ticket | #{ticket.get('number')} {ticket.get('url') or ''} |")
    if report_url:
        lines.append(f"| Report | {report_url} |")
    lines += ["", "## What failed", ""]
    for check_id in incident.all_checks:
        info = incident.check_info.get(check_id, {})
        lines.append(f"- **{info.get('severity') or '?'}** {info.get('service', '?')} · "
                     f"{info.get('step', '')} [`{check_id}`]")
        if info.get("message"):
            lines.append(f"  - Last evidence: {info['message']}")
        lines.extend(f"  - Runbook fix: {fix}" for fix in info.get("fixes") or [])
    lines += ["", "## Timeline", "", "| time | what |", "|---|---|"]
    lines += [f"| {_when(when)} | {what.replace('|', '/')} |"
              for when, what in _rows(state, incident)]
    lines += ["", "## Post-Incident Procedures", ""]
    facts = _facts(state, incident, deliveries)
    for name, items in CHECKLISTS.items():
        within = CHECKLIST_WITHIN[name]
        due = (f"due {clock(resolved + within)}" if resolved
               else f"due {_within(within)} after the resolution (still open)")
        lines += [f"### {name} (within {_within(within)}: {due})", ""]
        for item in items:
            fact = facts.get(item)
            lines.append(f"- [ ] {item}" + (f" — {fact}" if fact else ""))
        lines.append("")
    lines += ["## Root cause analysis", "", "_To write: why it failed, why the checks saw it "
              "when they did, what would have caught it earlier._", "",
              "## Action items", "", "| action | owner | due |", "|---|---|---|",
              "| | | |", ""]
    return "\n".join(lines)


def _facts(state: EnvironmentState, incident: Incident, deliveries: list[Delivery]
           ) -> dict[str, str]:
    """What this incident already says about each checklist item."""
    facts: dict[str, str] = {}
    if incident.resolved_at:
        facts["Confirm full service restoration"] = (
            f"every check of it passed from {_when(incident.resolved_at)} "
            f"({', '.join(incident.all_checks)})")
    else:
        facts["Confirm full service restoration"] = (
            f"not yet: still failing: {', '.join(incident.checks) or 'healing'}")
    facts["Document timeline and actions taken"] = "the timeline above, from the incident store"
    told = [d for d in deliveries if d.kind == "resolved"]
    if told:
        facts["Notify all stakeholders of resolution"] = "; ".join(
            f"{d.notifier} {'posted ' + _when(d.sent_at) if d.status == SENT else d.status}"
            for d in told)
    else:
        facts["Notify all stakeholders of resolution"] = "no resolution posted yet"
    if incident.alerted_at:
        lag = (at(incident.alerted_at) - at(incident.first_failure_at)).total_seconds()
        facts["Update monitoring/alerting if needed"] = (
            f"alerted {human_duration(lag)} after the first failing run"
            + (f"; silenced for a while: {incident.silenced['reason']}"
               if incident.silenced else ""))
    fixes = sorted({fix for info in incident.check_info.values()
                    for fix in info.get("fixes") or []})
    if fixes:
        # The checks only suggested them: whether anyone applied one is for people to record.
        facts["Create action items for prevention"] = (
            "the runbook's fixes the checks suggested (not applied by them; note which were "
            "done): " + "; ".join(fixes))
    if incident.dependency:
        facts["Document root cause analysis"] = (
            f"the checks pinned it on {incident.dependency}, failing for "
            f"{', '.join(incident.services)}")
    return facts


# ---- the commands -----------------------------------------------------------------------
def add_commands(commands: Any) -> None:
    """The ``timeline`` and ``postmortem`` subcommands of ``python -m unibazzar_health``."""
    for name, run, helptext in (
            ("timeline", _timeline_command, "an incident's timeline (Markdown) from the store"),
            ("postmortem", _postmortem_command, "write a post-mortem draft with the runbook's "
                                                "Post-Incident checklists")):
        parser = commands.add_parser(name, help=helptext)
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--env", metavar="NAME", help="environments/NAME.toml")
        where.add_argument("--env-file", metavar="PATH", help="the environment file")
        where.add_argument("--state", metavar="FILE", help="a SQLite incident store")
        parser.add_argument("--environment", metavar="NAME",
                            help="with --state: which environment (default: its only one)")
        parser.add_argument("--reports-dir", default="reports", metavar="DIR",
                            help="the runs' reports directory (default: reports)")
        parser.add_argument("key", nargs="?", metavar="INCIDENT_KEY",
                            help="e.g. dependency:redis (default: the latest incident)")
        if name == "postmortem":
            parser.add_argument("--output", metavar="FILE",
                                help="default: REPORTS_DIR/postmortem-<key>-<date>.md")
        parser.set_defaults(run=run)


def _open(args: argparse.Namespace) -> tuple[Any, str]:
    """(store, environment) the options name. With --env or --env-file only the file's
    [incident_state] is used: no other secret of it needs to be set."""
    # Imported here: the command line builds its parser from this module for every command;
    # only finding a store needs sqlite3 or the environment file's settings (pydantic models).
    from unibazzar_health.incidents.sqlite_store import SqliteStore

    if args.state:
        path = Path(args.state)
        if not path.is_file():
            raise SystemExit(f"{path}: no such incident store")
        store = SqliteStore(path)
        names = store.environments()
        name = args.environment or (names[0] if len(names) == 1 else None)
        if name is None:
            raise SystemExit(f"{path}: holds {', '.join(names) or 'no environment'}: "
                             "choose one with --environment")
        return store, name
    from unibazzar_health.config.environment import choose_environment_file
    from unibazzar_health.incidents.config import open_store_of_file

    path = choose_environment_file(Path.cwd(), args.env, args.env_file, os.environ)
    try:
        opened, name = open_store_of_file(path, Path(args.reports_dir), os.environ)
    except EnvironmentFileError as exc:
        raise SystemExit(str(exc)) from None
    if not opened.exists():
        raise SystemExit(f"{opened.where}: no incident store yet (no run has posted)")
    return opened, name


def _find(args: argparse.Namespace) -> tuple[Any, EnvironmentState, Incident]:
    store, name = _open(args)
    try:
        state = store.peek(name)
    except StoreError as exc:
        raise SystemExit(str(exc)) from None
    incident = state.find(args.key)
    if incident is None:
        known = sorted({*state.incidents, *(i.key for i in state.closed)})
        raise SystemExit(f"no incident {args.key!r} in {name}" if args.key else
                         f"no incident in {name}" + (f" (known: {', '.join(known)})"
                                                     if known else ""))
    return store, state, incident


def _timeline_command(args: argparse.Namespace) -> int:
    store, state, incident = _find(args)
    store.close()
    sys.stdout.write(timeline(state, incident))
    return 0


def _postmortem_command(args: argparse.Namespace) -> int:
    store, state, incident = _find(args)
    try:
        stored = stored_summaries(store.runs(state.environment, [
            incident.first_run_id, incident.last_failing_run_id]))
    except StoreError:
        stored = {}
    store.close()
    text = postmortem(state, incident, stored)
    day = (incident.resolved_at or incident.first_failure_at)[:10]
    slug = incident.key.replace(":", "-").replace("/", "-")
    output = Path(args.output) if args.output else \
        Path(args.reports_dir) / f"postmortem-{slug}-{day}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(output)
    return 0
