"""The runbook's Communication Templates, filled in from run summaries, paste-ready.

Knows only summaries (summary.json, docs/summary.md), the runbook's policy on time
(policy.py) and its severity table (the catalog): never pytest, probes or the environment
file. Three messages:

- the Initial Notification, one per root cause of a failing summary (one dependency behind
  several services' failures is one incident, one message);
- the Status Update, from the incident's first failing summary, the previous one and the
  current one: what changed, what is still open;
- the Resolution Notification, from the first failing, the last failing and the first healthy
  summary: how long it lasted and when the post-mortem is due.

Each message is its template's lines (plain text, as the runbook writes them) and a details
block in Markdown (evidence, fixes, commands, escalation, the report link) for a ticket or a
chat thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from unibazzar_health.verdict.model import Calendar, Check, RootCause, Summary
from unibazzar_health.verdict.policy import clock, human_duration, next_update, post_mortem_due
from unibazzar_health.verdict.policy import parse_time as at
from unibazzar_health.verdict.severity import SEVERITY_TABLE, combined_severity

ALERT, UPDATE, RESOLVED = "🚨", "📊", "✅"
# Not a runbook template: its Internal Escalation, told in the templates' shape.
ESCALATION = "⏫"
DEFAULT_WAR_ROOM = "#incidents"


@dataclass(frozen=True)
class Message:
    kind: str  # alert | update | resolved
    key: str  # the root cause it speaks of (alerts), else "run"
    severity: str
    lines: list[str]  # the runbook's template, filled in
    details: list[str] = field(default_factory=list)  # Markdown

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def markdown(self) -> str:
        block = "\n".join(["```", *self.lines, "```"])
        return block + ("\n\n" + "\n".join(self.details) if self.details else "") + "\n"


def sev(level: str | None) -> str:
    """`SEV2` -> `SEV 2`, as the runbook's templates write it."""
    return (level or "SEV?").replace("SEV", "SEV ")


def _eta(summary: Summary, level: str, now: datetime) -> str:
    calendar = summary.incident.calendar or Calendar()
    due = next_update(level, SEVERITY_TABLE[level].respond_within_minutes, now,
                      calendar.business())
    delta = due - now
    return f"{human_duration(delta.total_seconds())} ({clock(due)})"


def root_causes(summary: Summary) -> list[RootCause]:
    """The summary's root causes (docs/summary.md), or for an older summary one per failing
    service."""
    if "root_causes" in summary.model_fields_set:
        return list(summary.root_causes)
    by_service: dict[str, list[Check]] = {}
    for check in summary.failed:
        by_service.setdefault(check.service, []).append(check)
    return [RootCause(key=f"service:{s}", title=s, services=[s], dependency=None,
                      checks=[c.id for c in cs],
                      severity=combined_severity(c.severity for c in cs))
            for s, cs in sorted(by_service.items())]


def _impact_sentences(checks: list[Check]) -> str:
    """The Impact line: each failing check's sentence (results.impact_statement: checks
    failed by a backend they need share their service's one), each said once, worst
    check first, however it is spaced, cased or ended; one that another only extends ("X."
    beside "X, or Y.") gives way to it."""
    sentences: dict[str, str] = {}
    for check in checks:
        sentence = " ".join((check.impact_statement or check.title).split())
        sentence = sentence if sentence.endswith(".") else sentence + "."
        sentences.setdefault(sentence.rstrip(".").casefold(), sentence)
    kept = [key for key in sentences
            if not any(other != key and other.startswith(key) for other in sentences)]
    return " ".join(sentences[key] for key in kept)


def _details(summary: Summary, checks: list[Check], cause: RootCause | None) -> list[str]:
    lines = [f"**Details** — {summary.environment}, run of {clock(at(summary.started_at))}"]
    if cause and cause.dependency:
        lines.append(f"Root cause: {cause.title}")
    for check in checks:
        lines.append(f"- **{check.severity}** {check.service} · {check.step} [`{check.id}`]")
        lines.append(f"  - Evidence: {check.message}")
        lines.extend(f"  - Fix: {fix}" for fix in check.fixes)
        lines.extend(f"  - Next: `{command}`" for command in check.commands)
    lines.append("")  # what follows is no longer part of the last check's list item
    lines.extend(_escalation_lines(summary))
    incident = summary.incident
    if incident.report_url:
        lines.append(f"Report: {incident.report_url}")
    if incident.runbook_url:
        lines.append(f"Runbook: {incident.runbook_url}")
    return lines


def _escalation_lines(summary: Summary) -> list[str]:
    escalation = summary.escalation
    if escalation is None:
        return []
    internal = escalation.internal
    lines = [f"Escalation: Level {internal.level} — {internal.title}"
             + (f" ({internal.contact})" if internal.contact else "")]
    for team in escalation.external:
        lines.append(f"External: {team.team}" + (f" ({team.contact})" if team.contact else "")
                     + f" — {team.why}")
    return lines


def alerts(summary: Summary, now: datetime | None = None) -> list[Message]:
    """One Initial Notification per root cause of a failing summary; none when healthy."""
    now = now or at(summary.ended_at)
    failing = {c.id: c for c in summary.failed}
    incident = summary.incident
    messages = []
    for cause in root_causes(summary):
        checks = [failing[i] for i in cause.checks if i in failing]
        if not checks:
            continue
        level = cause.severity or "SEV4"
        lines = [
            f"{ALERT} INCIDENT ALERT - {sev(level)}",
            f"Service: {', '.join(cause.services)}",
            f"Impact: {_impact_sentences(checks)}",
            f"IC: {incident.ic or 'unassigned'}",
            f"War Room: {incident.war_room or DEFAULT_WAR_ROOM}",
            f"ETA for update: {_eta(summary, level, now)}",
        ]
        messages.append(Message("alert", cause.key, level, lines,
                                _details(summary, checks, cause)))
    return messages


def update(first: Summary, previous: Summary, current: Summary,
           now: datetime | None = None) -> Message:
    """The Status Update: how the incident that began with ``first`` moved from ``previous``
    to ``current``."""
    now = now or at(current.ended_at)
    before = {c.id: c for c in previous.failed}
    after = {c.id: c for c in current.failed}
    newly = [after[i] for i in after if i not in before]
    recovered = [before[i] for i in before if i not in after]
    level = current.verdict.severity or previous.verdict.severity or "SEV4"
    if not after:
        status = "RESOLVED"
    elif len(after) < len(before) and not newly:
        status = "MITIGATING"
    else:
        status = "INVESTIGATING"
    actions = []
    if newly:
        actions.append("newly failing: " + ", ".join(c.id for c in newly))
    if recovered:
        actions.append("recovered: " + ", ".join(c.id for c in recovered))
    was, now_level = previous.verdict.severity, current.verdict.severity
    if was and now_level and was != now_level:
        actions.append(f"severity {sev(was)} → {sev(now_level)}")
    if not actions:
        actions.append(f"no change since {clock(at(previous.started_at))}: "
                       f"{len(after)} check(s) still failing")
    open_steps: list[str] = []
    for check in after.values():
        for step in [*check.fixes, *(f"`{c}`" for c in check.commands)]:
            if step not in open_steps:
                open_steps.append(step)
    services = sorted({c.service for c in after.values()} or
                      {c.service for c in before.values()})
    lines = [
        f"{UPDATE} INCIDENT UPDATE - {sev(level)}",
        f"Service: {', '.join(services)}",
        f"Status: {status}",
        f"Actions taken: {'; '.join(actions)}",
        f"Next steps: {'; '.join(open_steps[:6]) if open_steps else 'confirm full restoration'}",
        f"Next update: {_eta(current, level, now) if after else 'none: resolved'}",
    ]
    details = [f"Incident open since {clock(at(first.started_at))} "
               f"({human_duration((now - at(first.started_at)).total_seconds())})"]
    details += _details(current, list(after.values()), None)[1:] if after else []
    return Message("update", "run", level, lines, details)


def resolved(first: Summary, last_failing: Summary, healthy: Summary,
             post_mortem_url: str | None = None) -> Message:
    """The Resolution Notification: the incident from ``first`` to the ``healthy`` run."""
    level = combined_severity(s.verdict.severity for s in (first, last_failing)) or "SEV4"
    began, ended = at(first.started_at), at(healthy.started_at)
    failed_ids = {c.id: c for s in (first, last_failing) for c in s.failed}
    services = sorted({c.service for c in failed_ids.values()})
    # The runbook exempts no severity from the post-mortem, SEV4 included.
    post_mortem = post_mortem_url or (f"due {clock(post_mortem_due(level, ended))} (within 1 "
                                      "week, Post-Incident Procedures)")
    lines = [
        f"{RESOLVED} INCIDENT RESOLVED - {sev(level)}",
        f"Service: {', '.join(services)}",
        f"Resolution: every check of {', '.join(services)} passes again "
        f"({len(failed_ids)} recovered: {', '.join(sorted(failed_ids))})",
        f"Duration: {human_duration((ended - began).total_seconds())} "
        f"({clock(began)} → {clock(ended)})",
        f"Post-mortem: {post_mortem}",
    ]
    return Message("resolved", "run", level, lines)


def escalated(current: Summary, level: int, title: str, contact: str | None,
              after_minutes: float, first_failure_at: datetime) -> Message:
    """Internal Escalation: the incident of ``current`` (a summary narrowed to it) has been
    open past the policy's time for ``level``."""
    now = at(current.ended_at)
    failing = current.failed
    severity = current.verdict.severity or "SEV4"
    incident = current.incident
    open_for = human_duration((now - first_failure_at).total_seconds())
    lines = [
        f"{ESCALATION} INCIDENT ESCALATION - {sev(severity)}",
        f"Service: {', '.join(sorted({c.service for c in failing}))}",
        f"Escalated to: Level {level} — {title}" + (f" ({contact})" if contact else ""),
        f"Why: open {open_for} at {sev(severity)}; Internal Escalation reaches Level {level} "
        f"after {human_duration(after_minutes * 60)}",
        f"IC: {incident.ic or 'unassigned'}",
        f"War Room: {incident.war_room or DEFAULT_WAR_ROOM}",
    ]
    return Message("escalation", "run", severity, lines, _details(current, failing, None))


def incident_markdown(summary: Summary, now: datetime | None = None) -> str:
    """reports/incident.md: every alert of a failing run with its details (a ticket's body)."""
    messages = alerts(summary, now)
    head = (f"# Incident: {summary.environment} — {sev(summary.verdict.severity)} "
            f"{summary.verdict.title or ''}".rstrip())
    return "\n\n".join([head, *(m.markdown() for m in messages)])
