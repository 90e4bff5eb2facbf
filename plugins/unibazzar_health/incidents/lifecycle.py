"""The incident commander's policy, as a pure function: given what an environment remembers,
this run's summary, the policy and the time, what changes and what is to be posted.

No I/O: the caller holds the store's lock, hands in the state, the stored run summaries an
open incident needs (verdict/model.py's Summary, read back with ``model_validate``) and the
policy (the catalog's severities included), and saves what
``decide`` returns. Messages come from messages.py
(alerts per root cause; update(first, previous, current); resolved(first, last_failing,
healthy)), each over a summary narrowed to one incident's checks (``scope``).

- An incident is a root cause of the summary (``Summary.root_causes``); a cause that
  shares a check, a dependency or its key with an open incident is that incident (redis
  failing for one service, then for two, is one incident that grew).
- Alert after ``alert_after`` consecutive failing runs; resolve after ``resolve_after``
  consecutive runs that saw every check of it pass. Only runs that observed a check count:
  ``pytest -m auth-service`` neither heals nor prolongs an order-service incident.
- A Status Update at once when the severity or the set of failing checks changes, else when
  due (every 30 min for SEV1/2, configurable for SEV3/4, else the response time).
- Internal escalation when the incident outlives its level's time (policy.internal_level),
  only from a run that judged its checks or carries them failing (a healing incident does
  not escalate); external teams by the incident's own failing checks.
- Silences and maintenance windows mute failing checks: a muted check alerts nothing and
  keeps no incident going, and neither its severity nor its service reaches a message; an
  incident whose every check is muted posts nothing.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from unibazzar_health.incidents.state import (
    PENDING,
    SEVERITY_CHANGE,
    SUPERSEDED,
    Delivery,
    EnvironmentState,
    Event,
    Incident,
    StatusChange,
)
from unibazzar_health.reports import messages
from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.model import (
    Check,
    Escalation,
    InternalEscalation,
    Outage,
    RootCause,
    Silenced,
    Summary,
    Verdict,
)
from unibazzar_health.verdict.policy import (
    DEFAULT_ESCALATION_MINUTES,
    LEVELS,
    BusinessCalendar,
    clock,
    human_duration,
    internal_level,
    next_update,
)
from unibazzar_health.verdict.policy import parse_time as at
from unibazzar_health.verdict.results import Outcome
from unibazzar_health.verdict.severity import combined_severity, rank, response_minutes
from unibazzar_health.verdict.summary import external_escalation, outages

# alert_after / resolve_after by run mode: an engineer's run alerts at once; a scheduled probe
# waits for a second failing run (and a second passing one), damping a flapping check.
DEFAULT_ALERT_AFTER = {"oncall": 1, "scheduled": 2, "ci": 1}
DEFAULT_RESOLVE_AFTER = {"oncall": 1, "scheduled": 2, "ci": 1}
KEEP_CLOSED = 50  # resolved incidents remembered per environment (timeline, post-mortem)
# What a check's entry keeps in the state, to speak of it once its run summary is gone.
CHECK_INFO_KEYS = ("id", "service", "step", "title", "severity", "impact", "impact_statement",
                   "message", "fixes", "commands", "failed_dependencies")


@dataclass(frozen=True)
class Mute:
    """A silence ([[silences]]) or a maintenance window ([[maintenance]]): failing checks it
    covers alert nothing while it lasts."""

    reason: str
    until: datetime
    start: datetime | None = None  # maintenance windows begin; silences begin when written
    service: str | None = None  # None with check None: every service (a window for all)
    check: str | None = None
    kind: Literal["silence", "maintenance"] = "silence"

    def active(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and now < self.until

    def covers(self, check: Check) -> bool:
        if self.check is not None:
            return check.id == self.check
        return self.service is None or check.service == self.service


def _catalog_severities() -> Mapping[str, Any]:
    return load_catalog().severities


@dataclass(frozen=True)
class Policy:
    environment: str
    alert_after: int = 1
    resolve_after: int = 1
    # Minutes between Status Updates for SEV3/SEV4 when the environment sets them.
    update_every_minutes: Mapping[str, float] = field(default_factory=dict)
    # The catalog's response times (severity.SEVERITY_TABLE), unless the caller says.
    respond_within_minutes: Mapping[str, int] = field(default_factory=response_minutes)
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    escalation_minutes: Mapping[str, Mapping[int, float]] | None = None
    contacts: Mapping[int, str] = field(default_factory=dict)  # internal level -> who
    # External escalation: aws_support, payment_provider, security_team -> who.
    external_contacts: Mapping[str, str] = field(default_factory=dict)
    # The catalog's severities (title, response time), read once when the policy is built.
    severities: Mapping[str, Any] = field(default_factory=_catalog_severities)
    # (name, kinds it takes), in the order deliveries are made.
    notifiers: tuple[tuple[str, frozenset[str]], ...] = ()
    mutes: tuple[Mute, ...] = ()
    # An acknowledged incident does not escalate internally for this long (unless its
    # severity rises); Level 1 goes to the secondary when the primary has not acknowledged
    # within the severity's response time.
    ack_timeout_minutes: float = 60.0
    secondary: str | None = None


@dataclass
class Decision:
    state: EnvironmentState
    deliveries: list[Delivery] = field(default_factory=list)
    changes: list[StatusChange] = field(default_factory=list)
    # Failing checks that alert nothing (the summary's ``silenced``).
    silenced: list[Silenced] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, for the terminal


def digest(*parts: str, length: int = 32) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:length]


def dedup_key(environment: str, incident_id: str) -> str:
    """PagerDuty's dedup_key and the webhook's: one per occurrence of an incident (its id)
    in an environment, the same from every runner, so a resend is harmless; the next
    occurrence of the same cause has its own, so an alert left acknowledged never swallows
    it."""
    return digest(environment, incident_id)


def stored_mutes(state: EnvironmentState, now: datetime) -> list[Mute]:
    """The timed silences people set on incidents (``incident silence``), still in force:
    one per check of the incident."""
    found = []
    for silence in state.silences:
        until = at(silence["until"])
        if until > now:
            found += [Mute(reason=silence["reason"], until=until, check=check)
                      for check in silence["checks"]]
    return found


def active_mutes(mutes: Iterable[Mute], now: datetime) -> list[Mute]:
    """Those in force now: an expired silence is ignored."""
    return [m for m in mutes if m.active(now)]


def muted_checks(summary: Summary, mutes: Iterable[Mute], now: datetime) -> dict[str, Mute]:
    """Failing checks of the summary that a mute in force covers."""
    live = active_mutes(mutes, now)
    found = {}
    for check in summary.failed:
        for mute in live:
            if mute.covers(check):
                found[check.id] = mute
                break
    return found


def silenced_report(summary: Summary, mutes: Iterable[Mute], now: datetime) -> list[Silenced]:
    """The summary's ``silenced`` block: each failing check that alerts nothing, and why."""
    by_id = {c.id: c for c in summary.checks}
    return [Silenced(check=check_id, service=by_id[check_id].service, kind=mute.kind,
                     reason=mute.reason, until=mute.until.isoformat(timespec="seconds"))
            for check_id, mute in muted_checks(summary, mutes, now).items()]


def first_failure_at(state: EnvironmentState, failing: Collection[str]) -> datetime | None:
    """When the incident behind these failing checks began, as far as the store remembers:
    the earliest open (or pending) incident they belong to."""
    starts = [at(i.first_failure_at) for i in state.incidents.values()
              if set(i.all_checks) & set(failing)]
    return min(starts) if starts else None


def runs_needed(state: EnvironmentState) -> set[str]:
    """The stored summaries ``decide`` reads: each open incident's first, last told and last
    failing runs (their messages fall back to what the state keeps when one is gone)."""
    ids: set[str] = set()
    for incident in state.incidents.values():
        ids.update(i for i in (incident.first_run_id, incident.last_posted_run_id,
                               incident.last_failing_run_id) if i)
    return ids


# ---- narrowing a summary to one incident ------------------------------------------------
def scope(summary: Summary, checks: Collection[str], incident: Incident,
          severities: Mapping[str, Any], carried: Collection[str] = (),
          muted: Collection[str] = (), severity: str | None = None) -> Summary:
    """The summary as if the run had judged only this incident's ``checks``; ``carried``
    are failing checks this run did not observe, taken from what the state keeps; ``muted``
    are checks whose failure the run does not count (an outage needs its unmuted checks to
    fail). The severity is its failing checks' and its services' outages (``severity``
    says it instead, where the incident's own is meant)."""
    wanted = list(dict.fromkeys(checks))
    present = {c.id: c for c in summary.checks if c.id in wanted}
    for check_id in carried:
        if check_id not in present or present[check_id].outcome not in (Outcome.PASSED,
                                                                        Outcome.FAILED):
            present[check_id] = _carried_entry(incident, check_id)
    entries = sorted((present[i] for i in wanted if i in present),
                     key=lambda c: (not c.failed, rank(c.severity), c.id))
    failed = [c for c in entries if c.failed]
    failed_ids = {c.id for c in failed}
    services = sorted({c.service for c in failed})
    down = _outages(summary.checks, services, muted)
    level = severity or combined_severity((c.severity for c in failed), outage=bool(down))
    known = severities.get(level) if level else None
    verdict = summary.verdict.model_copy(update={
        "status": "failing" if failed else "healthy", "severity": level,
        "title": known.title if known else None,
        "respond_within": known.respond_within if known else None,
        "failing_checks": [c.id for c in failed], "broken_checks": []})
    causes = [RootCause(key=incident.key,
                        title=_title(incident.dependency, services, incident.title),
                        dependency=incident.dependency, services=services,
                        checks=verdict.failing_checks, severity=level)] if failed else []
    return summary.model_copy(update={
        "checks": entries, "verdict": verdict, "root_causes": causes,
        "incidents": [i for i in summary.incidents if set(i.checks) & failed_ids],
        "outages": down,
        "incident": summary.incident.model_copy(
            update={"first_failure_at": incident.first_failure_at})})


def _outages(entries: Iterable[Check], services: Collection[str],
             muted: Collection[str]) -> list[Outage]:
    """The outages (severity.service_outages) of these services, counting only their
    unmuted checks: a silenced check's failure makes no outage."""
    return outages(c for c in entries if c.service in services and c.id not in muted)


def _carried_entry(incident: Incident, check_id: str) -> Check:
    """A failing check this run did not observe, as the incident state keeps it."""
    info = incident.check_info.get(check_id, {})
    return Check(id=check_id, service=info.get("service", "?"), step=info.get("step", ""),
                 title=info.get("title", check_id), outcome=Outcome.FAILED,
                 severity=info.get("severity"), impact=info.get("impact"),
                 impact_statement=info.get("impact_statement"),
                 message=info.get("message") or "still failing when last observed",
                 fixes=list(info.get("fixes", [])), commands=list(info.get("commands", [])),
                 failed_dependencies=list(info.get("failed_dependencies", [])), evidence=None)


def _synthetic(started_at: str, checks: Iterable[str], severity: str | None,
               incident: Incident) -> Summary:
    """A summary of one past run rebuilt from the state: what update() and resolved() read
    of it (when it began, its failing checks, its severity)."""
    entries = [_carried_entry(incident, c) for c in checks]
    return Summary(started_at=started_at, finished_at=started_at,
                   verdict=Verdict(status="failing" if entries else "healthy",
                                   severity=severity),
                   checks=entries)


def _title(dependency: str | None, services: list[str], fallback: str) -> str:
    if dependency and len(services) > 1:
        return f"{dependency} failing for {', '.join(services)}"
    return ", ".join(services) or fallback


# ---- the decision -----------------------------------------------------------------------
@dataclass
class _Run:
    """What the decision reads of this run."""

    summary: Summary
    run_id: str
    now: datetime
    outcomes: dict[str, str]
    entries: dict[str, Check]
    failing: set[str]  # failing and not muted
    muted: dict[str, Mute]

    @property
    def iso(self) -> str:
        return self.now.isoformat(timespec="seconds")

    def observed(self, check_id: str) -> bool:
        """Passed, or failed and not muted: a run that judged it (a muted failure tells
        nothing the incident may act on)."""
        return self.outcomes.get(check_id) == "passed" or check_id in self.failing

    def judged(self, check_id: str) -> bool:
        """Passed or failed, muted or not."""
        return self.outcomes.get(check_id) in ("passed", "failed")


def decide(state: EnvironmentState, summary: Summary, run_id: str, policy: Policy,
           now: datetime, runs: Mapping[str, Summary] | None = None) -> Decision:
    """The new state and what to post. ``runs`` are stored summaries by run id
    (``runs_needed``); missing ones are rebuilt from the state."""
    state = copy.deepcopy(state)
    policy = replace(policy, mutes=(*policy.mutes, *stored_mutes(state, now)))
    muted = muted_checks(summary, policy.mutes, now)
    run = _Run(summary=summary, run_id=run_id, now=now,
               outcomes={c.id: str(c.outcome) for c in summary.checks},
               entries={c.id: c for c in summary.checks},
               failing={c.id for c in summary.failed if c.id not in muted},
               muted=muted)
    decision = Decision(state=state, silenced=silenced_report(summary, policy.mutes, now))
    attached = _attach_causes(state, run, policy)
    stored = runs or {}
    for key in list(state.incidents):
        incident = state.incidents[key]
        causes = attached.get(key, [])
        if incident.alerted:
            _open_incident(decision, incident, causes, run, policy, stored)
        else:
            _pending_incident(decision, incident, causes, run, policy)
    state.closed = state.closed[-KEEP_CLOSED:]
    return decision


def _attach_causes(state: EnvironmentState, run: _Run,
                   policy: Policy) -> dict[str, list[RootCause]]:
    """Each root cause of the run (narrowed to its unmuted failing checks) joined to the
    incident it belongs to, the oldest on a tie; a cause that matches none opens a pending
    incident."""
    attached: dict[str, list[RootCause]] = {}
    for cause in messages.root_causes(run.summary):
        checks = [c for c in cause.checks if c in run.failing]
        if not checks:
            continue
        if checks != cause.checks:
            cause = _unmuted(cause, checks, run)
        matches = sorted((i for i in state.incidents.values() if _belongs(cause, i)),
                         key=lambda i: (i.first_failure_at, i.key))
        if matches:
            attached.setdefault(matches[0].key, []).append(cause)
            continue
        incident = Incident(
            id=digest(policy.environment, cause.key, run.iso, length=16), key=cause.key,
            title=cause.title, services=list(cause.services),
            dependency=cause.dependency, severity=_level(cause),
            first_failure_at=run.summary.started_at, first_run_id=run.run_id,
            last_failure_at=run.summary.started_at, last_failing_run_id=run.run_id,
            checks=[], all_checks=[])
        state.incidents[incident.key] = incident
        attached[incident.key] = [cause]
    return attached


def _unmuted(cause: RootCause, checks: list[str], run: _Run) -> RootCause:
    """The cause as if its muted checks had not failed: their severity, their services and
    the outages they make are not its own."""
    entries = [run.entries[c] for c in checks]
    services = sorted({e.service for e in entries})
    down = _outages(run.entries.values(), services, run.muted)
    return cause.model_copy(update={
        "checks": checks, "services": services,
        "title": _title(cause.dependency, services, cause.title),
        "severity": combined_severity((e.severity for e in entries), outage=bool(down))})


def _level(cause: RootCause) -> str:
    """A cause's severity (every cause has failing checks, each with its severity; the
    lowest, were one without)."""
    return cause.severity or "SEV4"


def _belongs(cause: RootCause, incident: Incident) -> bool:
    return (cause.key == incident.key or bool(set(cause.checks) & set(incident.all_checks))
            or (cause.dependency is not None and cause.dependency == incident.dependency))


def _now_failing(incident: Incident, causes: list[RootCause], run: _Run) -> tuple[
        list[str], list[str]]:
    """(failing checks now, those of them carried over because this run did not observe
    them)."""
    failing = [c for cause in causes for c in cause.checks]
    failing += [c for c in incident.checks if c in run.failing]
    carried = [c for c in incident.checks if not run.observed(c)]
    return list(dict.fromkeys(failing + carried)), carried


def _absorb(incident: Incident, causes: list[RootCause], failing: list[str],
            run: _Run) -> str:
    """Take this run's view of the incident; returns its severity now."""
    for check_id in failing:
        entry = run.entries.get(check_id)
        if entry is not None and entry.failed:
            kept = entry.model_dump(mode="json")
            incident.check_info[check_id] = {k: kept[k] for k in CHECK_INFO_KEYS}
    incident.all_checks = list(dict.fromkeys([*incident.all_checks, *failing]))
    if causes:
        widest = max(causes, key=lambda c: (len(c.services), -rank(c.severity)))
        incident.dependency = widest.dependency or incident.dependency
        incident.services = sorted({s for c in causes for s in c.services}
                                   | {incident.check_info.get(c, {}).get("service", "?")
                                      for c in failing} - {"?"})
        incident.title = _title(incident.dependency, incident.services, widest.title)
    levels = [c.severity for c in causes]
    levels += [incident.check_info.get(c, {}).get("severity") for c in failing]
    return combined_severity(levels) or incident.severity


def _pending_incident(decision: Decision, incident: Incident, causes: list[RootCause],
                      run: _Run, policy: Policy) -> None:
    failing, carried = _now_failing(incident, causes, run)
    state = decision.state
    if causes:
        first = not incident.checks
        incident.severity = _absorb(incident, causes, failing, run)
        incident.checks = failing
        incident.failing_runs += 1
        incident.last_failure_at, incident.last_failing_run_id = run.summary.started_at, \
            run.run_id
        if first:
            incident.events.append(Event(run.iso, "failing", (
                f"{', '.join(failing)} failing ({incident.severity})")))
        if incident.failing_runs >= policy.alert_after:
            _alert(decision, incident, run, policy, carried)
        else:
            decision.notes.append(
                f"HOLD {incident.key}: failing {incident.failing_runs} of {policy.alert_after} "
                f"consecutive runs before the alert")
    elif not carried and any(run.observed(c) for c in incident.checks):
        # Passed before it failed long enough to alert: a flap, forgotten.
        del state.incidents[incident.key]
        decision.notes.append(f"FLAP {incident.key}: passed again before alerting; no alert")


def _alert(decision: Decision, incident: Incident, run: _Run, policy: Policy,
           carried: list[str]) -> None:
    incident.alerted, incident.alerted_at = True, run.iso
    open_minutes = (run.now - at(incident.first_failure_at)).total_seconds() / 60
    incident.escalation_level = internal_level(incident.severity, open_minutes,
                                               policy.escalation_minutes)
    current = _current(incident, incident.checks, carried, run, policy)
    message = messages.alerts(current, run.now)[0]
    message = _with_next_update(message, incident, run, policy)
    incident.events.append(Event(run.iso, "alert", (
        f"Initial Notification: {messages.sev(incident.severity)} {incident.title} — "
        f"{', '.join(incident.checks)}")))
    _told(incident, run)
    _enqueue(decision, incident, "alert", message, current, policy, run.iso)


def _open_incident(decision: Decision, incident: Incident, causes: list[RootCause],
                   run: _Run, policy: Policy, stored: Mapping[str, Summary]) -> None:
    failing, carried = _now_failing(incident, causes, run)
    before = list(incident.checks)
    if not causes and not any(run.judged(c) for c in incident.all_checks):
        # A run that did not look at it (-m another-service, all broken): it tells nothing
        # new, so no update; only time moves the escalation on.
        if incident.silenced is None:
            _escalate_if_due(decision, incident, run, policy, carried)
        return
    if failing and incident.human_resolution is not None and causes:
        # Resolved by hand, but this run still sees it failing: reopened, and said so.
        who = incident.human_resolution["by"]
        incident.events.append(Event(run.iso, "reopened", (
            f"still failing after {who} resolved it by hand: "
            f"{', '.join(c for c in failing if c in run.failing)}")))
        incident.human_resolution = None
        incident.next_update_at = run.iso  # the next Status Update goes out now
    if failing:
        severity = _absorb(incident, causes, failing, run)
        if causes or set(failing) & run.failing:
            incident.last_failure_at, incident.last_failing_run_id = \
                run.summary.started_at, run.run_id
        incident.passing_runs, incident.first_passing_run_id = 0, None
        incident.first_passing_at = None
        mute = _all_muted(incident, failing, run)
        if mute is not None:
            incident.checks = failing
            if incident.silenced is None:
                incident.silenced = {"reason": mute.reason,
                                     "until": mute.until.isoformat(timespec="seconds")}
                incident.events.append(Event(run.iso, "silenced", (
                    f"{mute.kind}: {mute.reason} (until {clock(mute.until)}): nothing posted "
                    f"while it lasts")))
            decision.notes.append(f"SILENCED {incident.key}: {mute.reason} (until "
                                  f"{clock(mute.until)})")
            return
        if incident.silenced is not None:
            incident.silenced = None
            incident.events.append(Event(run.iso, "unsilenced", "silence over"))
        _update_if_due(decision, incident, before, failing, carried, severity, run, policy,
                       stored)
        _escalate_if_due(decision, incident, run, policy, carried)
        return
    # Every check of it passed in this run (else it would be carried): healing.
    if not any(run.observed(c) for c in [*before, *incident.all_checks]):
        return
    if before:
        incident.last_failing_checks = before
        incident.checks = []
        incident.first_passing_run_id, incident.first_passing_at = run.run_id, \
            run.summary.started_at
    incident.passing_runs += 1
    # A person's resolution is confirmed by the first run that sees every check pass.
    if incident.passing_runs >= policy.resolve_after or incident.human_resolution:
        _resolve(decision, incident, run, policy, stored)
    else:
        decision.notes.append(f"HEALING {incident.key}: passing {incident.passing_runs} of "
                              f"{policy.resolve_after} runs before the resolution")


def _all_muted(incident: Incident, failing: list[str], run: _Run) -> Mute | None:
    mutes = [run.muted.get(c) for c in failing]
    if mutes and all(m is not None for m in mutes):
        return max((m for m in mutes if m is not None), key=lambda m: m.until)
    return None


def _update_if_due(decision: Decision, incident: Incident, before: list[str],
                   failing: list[str], carried: list[str], severity: str, run: _Run,
                   policy: Policy, stored: Mapping[str, Summary]) -> None:
    changed_checks = set(failing) != set(before)
    changed_severity = severity != incident.severity
    if changed_severity:
        incident.events.append(Event(run.iso, "severity", (
            f"severity {messages.sev(incident.severity)} → {messages.sev(severity)}")))
    if changed_checks:
        newly = [c for c in failing if c not in before]
        recovered = [c for c in before if c not in failing]
        incident.events.append(Event(run.iso, "checks", "; ".join(
            part for part in (f"newly failing: {', '.join(newly)}" if newly else "",
                              f"recovered: {', '.join(recovered)}" if recovered else "")
            if part)))
    incident.severity, incident.checks = severity, failing
    due = incident.next_update_at is not None and run.now >= at(incident.next_update_at)
    if not (changed_checks or changed_severity or due):
        return
    first = _stored_or_rebuilt(stored, incident.first_run_id, incident.first_failure_at,
                               incident.all_checks, None, incident, policy)
    previous = _stored_or_rebuilt(stored, incident.last_posted_run_id,
                                  incident.posted_started_at or incident.first_failure_at,
                                  incident.posted_checks, incident.posted_severity, incident,
                                  policy, narrow_to=incident.posted_checks)
    current = _current(incident, failing, carried, run, policy)
    message = messages.update(first, previous, current, run.now)
    message = _with_next_update(message, incident, run, policy)
    message = _with_notes(message, incident, since=incident.last_update_at)
    why = "changed" if changed_checks or changed_severity else "due"
    incident.events.append(Event(run.iso, "update", f"Status Update ({why}): "
                                 + message.lines[3].removeprefix("Actions taken: ")))
    _told(incident, run)
    _enqueue(decision, incident, "update", message, current, policy, run.iso,
             severity_changed=changed_severity)


def acknowledged(incident: Incident, now: datetime, policy: Policy) -> bool:
    """Someone has it: acknowledged, not timed out, and not more severe than when they
    took it."""
    if incident.acknowledged_at is None:
        return False
    if now - at(incident.acknowledged_at) >= timedelta(minutes=policy.ack_timeout_minutes):
        return False
    return rank(incident.severity) >= rank(incident.acknowledged_severity or
                                           incident.severity)


def _escalate_if_due(decision: Decision, incident: Incident, run: _Run, policy: Policy,
                     carried: list[str]) -> None:
    if not incident.checks:
        return  # healing: every check of it passed when last judged; nothing to escalate
    if acknowledged(incident, run.now, policy):
        return  # a person has it: the pager's rule, until it times out or gets worse
    open_minutes = (run.now - at(incident.first_failure_at)).total_seconds() / 60
    _page_secondary_if_due(decision, incident, run, policy, carried, open_minutes)
    level = internal_level(incident.severity, open_minutes, policy.escalation_minutes)
    if level <= incident.escalation_level:
        return
    incident.escalation_level = level
    thresholds = {**DEFAULT_ESCALATION_MINUTES, **(policy.escalation_minutes or {})}.get(
        incident.severity, {})
    contact = policy.contacts.get(level)
    current = _current(incident, incident.checks, carried, run, policy,
                       severity=incident.severity)
    message = messages.escalated(current, level, LEVELS[level], contact,
                                 float(thresholds.get(level, 0.0)),
                                 at(incident.first_failure_at))
    incident.events.append(Event(run.iso, "escalation", (
        f"escalated to Level {level} — {LEVELS[level]}" + (f" ({contact})" if contact else "")
        + f" after {human_duration(open_minutes * 60)} at {messages.sev(incident.severity)}")))
    _enqueue(decision, incident, "escalation", message, current, policy, run.iso)


def _page_secondary_if_due(decision: Decision, incident: Incident, run: _Run,
                           policy: Policy, carried: list[str], open_minutes: float) -> None:
    """Level 1 reaches the secondary on-call when nobody acknowledged within the severity's
    response time (once per incident)."""
    within = policy.respond_within_minutes.get(incident.severity)
    if (policy.secondary is None or incident.secondary_paged_at is not None
            or incident.acknowledged_at is not None or within is None
            or open_minutes < within):
        return
    incident.secondary_paged_at = run.iso
    primary = policy.contacts.get(1)
    current = _current(incident, incident.checks, carried, run, policy,
                       severity=incident.severity)
    message = messages.escalated(current, 1, f"{LEVELS[1]} (secondary)", policy.secondary,
                                 float(within), at(incident.first_failure_at))
    lines = list(message.lines)
    lines[3] = (f"Why: not acknowledged{f' by {primary}' if primary else ''} within the "
                f"{messages.sev(incident.severity)} response time "
                f"({human_duration(within * 60)})")
    message = messages.Message(message.kind, message.key, message.severity, lines,
                               message.details)
    incident.events.append(Event(run.iso, "escalation", (
        f"Level 1 secondary ({policy.secondary}): not acknowledged within "
        f"{human_duration(within * 60)}")))
    _enqueue(decision, incident, "escalation", message, current, policy, run.iso)


def _with_notes(message: messages.Message, incident: Incident, since: str | None
                ) -> messages.Message:
    """The Status Update's "Actions taken" starts with what people noted since the last
    update (``incident note``), then what the checks saw change."""
    notes = [n for n in incident.notes if since is None or n["at"] > since]
    if not notes:
        return message
    told = "; ".join(f"{n['text']} ({n['by']})" for n in notes)
    lines = [f"Actions taken: {told}; checks: {line.removeprefix('Actions taken: ')}"
             if line.startswith("Actions taken: ") else line for line in message.lines]
    return messages.Message(message.kind, message.key, message.severity, lines,
                            message.details)


def _resolve(decision: Decision, incident: Incident, run: _Run, policy: Policy,
             stored: Mapping[str, Summary]) -> None:
    last = incident.last_failing_checks or incident.posted_checks
    first = _stored_or_rebuilt(stored, incident.first_run_id, incident.first_failure_at,
                               incident.all_checks, None, incident, policy)
    last_failing = _stored_or_rebuilt(stored, incident.last_failing_run_id,
                                      incident.last_failure_at, last, incident.severity,
                                      incident, policy, narrow_to=last)
    healthy_at = incident.first_passing_at or run.summary.started_at
    healthy = _synthetic(healthy_at, [], None, incident)
    message = _told_by_people(messages.resolved(first, last_failing, healthy), incident)
    incident.resolved_at, incident.resolved_run_id = healthy_at, incident.first_passing_run_id
    incident.events.append(Event(run.iso, "resolved", message.lines[3]))
    current = scope(run.summary, incident.all_checks, incident, policy.severities)
    _enqueue(decision, incident, "resolved", message, current, policy, run.iso)
    del decision.state.incidents[incident.key]
    decision.state.closed.append(incident)


def _told_by_people(message: messages.Message, incident: Incident) -> messages.Message:
    """The Resolution says the reason a person gave (``incident resolve --reason``) before
    what the checks saw, and the actions noted during the incident in its details."""
    resolution = incident.human_resolution
    if resolution is not None:
        incident.resolution_reason = f"{resolution['reason']} ({resolution['by']})"
        incident.human_resolution = None
    lines = list(message.lines)
    if incident.resolution_reason:
        lines = [f"Resolution: {incident.resolution_reason}; confirmed: "
                 f"{line.removeprefix('Resolution: ')}" if line.startswith("Resolution: ")
                 else line for line in lines]
    details = [f"- {clock(at(n['at']))} {n['by']}: {n['text']}" for n in incident.notes]
    if details:
        details = ["**Actions taken** (noted during the incident)", *details]
    return messages.Message(message.kind, message.key, message.severity, lines,
                            [*message.details, *details])


def _stored_or_rebuilt(stored: Mapping[str, Summary], run_id: str | None,
                       started_at: str, checks: list[str], severity: str | None,
                       incident: Incident, policy: Policy, narrow_to: list[str] | None = None
                       ) -> Summary:
    """A past run of the incident: its stored summary narrowed to the incident (to
    ``narrow_to`` when given: what that run told), else rebuilt from the state."""
    summary = stored.get(run_id) if run_id else None
    if summary is not None:
        return scope(summary, narrow_to if narrow_to is not None else checks, incident,
                     policy.severities)
    return _synthetic(started_at, checks, severity or incident.severity, incident)


def _told(incident: Incident, run: _Run) -> None:
    """Remember what the alert or update just decided tells, for the next update's delta."""
    incident.last_update_at = run.iso
    incident.last_posted_run_id = run.run_id
    incident.posted_started_at = run.summary.started_at
    incident.posted_checks = list(incident.checks)
    incident.posted_severity = incident.severity


def _next_update_due(level: str, now: datetime, policy: Policy) -> datetime:
    minutes = policy.update_every_minutes.get(level)
    if minutes is not None:
        return now + timedelta(minutes=minutes)
    return next_update(level, policy.respond_within_minutes.get(level, 1440), now,
                       policy.calendar)


def _with_next_update(message: messages.Message, incident: Incident, run: _Run,
                      policy: Policy) -> messages.Message:
    """Remember when the next update is due; where the environment sets its own cadence
    (SEV3/SEV4), the message's ETA line says that time instead of the response time."""
    due = _next_update_due(incident.severity, run.now, policy)
    incident.next_update_at = due.isoformat(timespec="seconds")
    if incident.severity not in policy.update_every_minutes:
        return message
    eta = f"{human_duration((due - run.now).total_seconds())} ({clock(due)})"
    lines = [f"ETA for update: {eta}" if line.startswith("ETA for update: ")
             else f"Next update: {eta}" if line.startswith("Next update: ") else line
             for line in message.lines]
    return messages.Message(message.kind, message.key, message.severity, lines,
                            message.details)


def _current(incident: Incident, checks: Collection[str], carried: Collection[str],
             run: _Run, policy: Policy, severity: str | None = None) -> Summary:
    """This run's summary narrowed to the incident, with its own escalation block."""
    current = scope(run.summary, checks, incident, policy.severities, carried, run.muted,
                    severity)
    if incident.ic:  # assigned by a person (``incident ic``): named from then on
        current = current.model_copy(update={
            "incident": current.incident.model_copy(update={"ic": incident.ic})})
    return current.model_copy(
        update={"escalation": _escalation(incident, run, policy, current.failed)})


def _escalation(incident: Incident, run: _Run, policy: Policy,
                failed: list[Check]) -> Escalation:
    """The summary's escalation block for this incident alone: its level by its own
    severity and time open; the external teams its own failing checks call for."""
    open_minutes = (run.now - at(incident.first_failure_at)).total_seconds() / 60
    level = max(internal_level(incident.severity, open_minutes, policy.escalation_minutes),
                incident.escalation_level)
    return Escalation(
        internal=InternalEscalation(level=level, title=LEVELS[level],
                                    contact=policy.contacts.get(level)),
        external=external_escalation((c.impact for c in failed if c.impact),
                                     (d for c in failed for d in c.failed_dependencies),
                                     policy.external_contacts))


def _enqueue(decision: Decision, incident: Incident, kind: str, message: messages.Message,
             current: Summary | None, policy: Policy, created_at: str,
             severity_changed: bool = False) -> None:
    """Each notifier's delivery of ``message``; its payload carries ``current``, the summary
    narrowed to the incident, as plain JSON (``{}`` where a person's action has none)."""
    number = incident.messages.get(kind, 0) + 1
    incident.messages[kind] = number
    payload = {
        "message": {"kind": message.kind, "key": incident.key, "severity": message.severity,
                    "lines": message.lines, "details": message.details},
        "incident": {"id": incident.id, "key": incident.key, "title": incident.title,
                     "severity": incident.severity, "services": incident.services,
                     "checks": incident.checks or incident.all_checks,
                     "first_failure_at": incident.first_failure_at,
                     "resolved_at": incident.resolved_at,
                     "report_url": current.incident.report_url if current else None},
        "summary": current.to_dict() if current else {},
    }
    # An occurrence keeps the key its first delivery went out under (one opened by a version
    # that keyed by cause resolves what it triggered).
    key = next((d.dedup_key for d in decision.state.outbox if d.incident_id == incident.id),
               dedup_key(policy.environment, incident.id))
    for name, kinds in policy.notifiers:
        if kind not in kinds and not (kind == "update" and severity_changed
                                      and SEVERITY_CHANGE in kinds):
            continue
        if kind != "alert":
            _supersede(decision, incident, name, kind)
        decision.deliveries.append(Delivery(
            id=digest(incident.id, kind, str(number), name, length=24),
            environment=policy.environment, incident_id=incident.id, incident_key=incident.key,
            kind=kind, notifier=name, payload=payload, dedup_key=key, created_at=created_at,
            headline=message.lines[0]))


def _supersede(decision: Decision, incident: Incident, notifier: str, kind: str) -> None:
    """An update (or escalation) still waiting to go out is stale once a newer one, or the
    resolution, is queued for the same notifier: one catch-up message, not a backlog."""
    replaced = {"update": {"update"}, "escalation": {"escalation"},
                "resolved": {"update", "escalation"}}.get(kind, set())
    for queued in decision.state.outbox:
        if (queued.incident_id == incident.id and queued.notifier == notifier
                and queued.kind in replaced and queued.status == PENDING):
            queued.status = SUPERSEDED
            decision.changes.append(StatusChange(queued.id, SUPERSEDED, expected=PENDING))
