"""What a person does to an incident — the runbook's Initial Response ("Acknowledge the
alert", "Assign an Incident Commander"), its Status Update's "Actions taken", a resolution
told by hand, a timed silence — as pure functions over the environment's state, like
lifecycle.decide: the caller (``incident`` commands, commands.py) holds the store's lock,
so two people acting at once each see the other's event, and saves what they return.

Each action appends an event with who and when (the timeline and the post-mortem read
them) and raises ActionError, one line, for what cannot be done: an unknown key, an
incident already resolved, an empty note.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

from unibazzar_health.incidents.lifecycle import Decision, Policy, _enqueue
from unibazzar_health.incidents.state import ACKNOWLEDGED, EnvironmentState, Event, Incident
from unibazzar_health.reports import messages
from unibazzar_health.verdict.policy import clock


class ActionError(Exception):
    """An action that cannot be done, said in one line."""


def find_open(state: EnvironmentState, key: str) -> Incident:
    """The open incident ``key`` names (its key, or its id); ActionError otherwise."""
    for incident in state.incidents.values():
        if key in (incident.key, incident.id):
            if not incident.alerted:
                raise ActionError(f"incident {key} has not alerted yet (failing "
                                  f"{incident.failing_runs} run(s)): nothing to act on")
            return incident
    closed = [i for i in state.closed if key in (i.key, i.id)]
    if closed:
        raise ActionError(f"incident {key} is resolved (since {closed[-1].resolved_at}): "
                          "nothing to act on")
    known = ", ".join(i.key for i in state.incidents.values() if i.alerted) or "none"
    raise ActionError(f"no open incident {key!r} in {state.environment} (open: {known})")


def _words(text: str, empty: str) -> str:
    """The text on one line; ActionError ``empty`` when nothing is left."""
    words = " ".join(text.split())
    if not words:
        raise ActionError(empty)
    return words


def _person(by: str) -> str:
    who = by.strip()
    if not who:
        raise ActionError("--by names nobody: say who (@name)")
    return who


def _start(state: EnvironmentState, key: str) -> tuple[Decision, Incident]:
    decision = Decision(state=copy.deepcopy(state))
    return decision, find_open(decision.state, key)


def acknowledge(state: EnvironmentState, key: str, by: str, now: datetime,
                policy: Policy, ack_timeout_minutes: float) -> Decision:
    """Someone has it: internal escalation stops until the severity rises or the
    acknowledgement times out; PagerDuty hears ``acknowledge``, the chat and the ticket
    who took it."""
    who = _person(by)
    decision, incident = _start(state, key)
    iso = now.isoformat(timespec="seconds")
    incident.acknowledged_by, incident.acknowledged_at = who, iso
    incident.acknowledged_severity = incident.severity
    until = now + timedelta(minutes=ack_timeout_minutes)
    incident.events.append(Event(iso, "ack", f"acknowledged by {who}", by=who))
    lines = [f"👀 INCIDENT ACKNOWLEDGED - {messages.sev(incident.severity)}",
             f"Service: {', '.join(incident.services)}",
             f"Acknowledged by: {who}",
             f"IC: {incident.ic or who}",
             f"Escalation: paused until {clock(until)} unless the severity rises"]
    message = messages.Message(ACKNOWLEDGED, incident.key, incident.severity, lines)
    _enqueue(decision, incident, ACKNOWLEDGED, message, None, policy, iso)
    return decision


def assign_ic(state: EnvironmentState, key: str, ic: str, by: str, now: datetime
              ) -> Decision:
    """Assign the Incident Commander, or hand over: the messages name them from now on."""
    who, assigned = _person(by), _person(ic)
    decision, incident = _start(state, key)
    before = incident.ic
    incident.ic = assigned
    text = (f"IC handed over from {before} to {assigned}" if before and before != assigned
            else f"IC: {assigned}")
    incident.events.append(Event(now.isoformat(timespec="seconds"), "ic", text, by=who))
    return decision


def add_note(state: EnvironmentState, key: str, text: str, by: str, now: datetime
             ) -> Decision:
    """An action taken, for the next Status Update's "Actions taken", the resolution and
    the post-mortem's timeline."""
    who = _person(by)
    words = _words(text, "the note is empty: say what was done")
    decision, incident = _start(state, key)
    iso = now.isoformat(timespec="seconds")
    incident.notes.append({"at": iso, "by": who, "text": words})
    incident.events.append(Event(iso, "note", words, by=who))
    return decision


def resolve_by_hand(state: EnvironmentState, key: str, reason: str, by: str, now: datetime
                    ) -> Decision:
    """A person says it is resolved, and why: the next run that judges its checks confirms
    it (the resolution goes out at once, with this reason) or reopens it (still failing:
    said in a Status Update)."""
    who = _person(by)
    words = _words(reason, "--reason is empty: say what resolved it")
    decision, incident = _start(state, key)
    iso = now.isoformat(timespec="seconds")
    incident.human_resolution = {"at": iso, "by": who, "reason": words}
    incident.events.append(Event(iso, "resolve", f"resolved by hand: {words} (the next run "
                                                 "confirms it)", by=who))
    return decision


def silence(state: EnvironmentState, key: str, minutes: float, reason: str, by: str,
            now: datetime) -> Decision:
    """A timed silence of the incident's checks: nothing is posted for them until it ends
    (as the environment file's [[silences]], without editing the file mid-incident)."""
    who = _person(by)
    words = _words(reason, "--reason is empty: say why it is silenced")
    if minutes <= 0:
        raise ActionError(f"--for {minutes:g} min: a silence must last a while")
    decision, incident = _start(state, key)
    iso = now.isoformat(timespec="seconds")
    until = now + timedelta(minutes=minutes)
    decision.state.silences = [s for s in decision.state.silences
                               if datetime.fromisoformat(s["until"]) > now]
    decision.state.silences.append({
        "incident": incident.key, "checks": list(incident.all_checks),
        "until": until.isoformat(timespec="seconds"), "reason": f"{words} ({who})",
        "by": who})
    incident.events.append(Event(iso, "silence", f"silenced until {clock(until)}: {words}",
                                 by=who))
    return decision
