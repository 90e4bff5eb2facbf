"""The runbook's policy on time and people: when the next update is due, when a response is
due (SEV4: the next business day), which internal level an incident has reached, which
external team to call, and when the post-mortem is due.

Plain functions over plain data (severity levels, datetimes, the environment's contacts):
the summary builder, the message renderer and the incident lifecycle all ask here, so the
runbook's numbers live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from unibazzar_health.verdict.severity import SEVERITY_TABLE

# Escalation Procedures, Internal Escalation.
LEVELS = {1: "On-call engineer", 2: "Senior engineer/Team lead", 3: "Engineering manager",
          4: "VP Engineering/CTO"}
# Minutes open before each internal level, by severity (severity.SEVERITY_TABLE): what an
# environment's [escalation] replaces, severity by severity.
DEFAULT_ESCALATION_MINUTES: dict[str, dict[int, float]] = {
    level: dict(s.escalation_minutes) for level, s in SEVERITY_TABLE.items()}

# External Escalation: "AWS Support: For infrastructure issues; Payment Providers: For
# payment processing issues; Security Team: For security incidents".
AWS_BACKENDS = {"dynamodb", "s3"}

# Post-Incident Procedures: Immediate within 2 hours, Follow-up within 24 hours, Post-Mortem
# within 1 week (severity.SEVERITY_TABLE: the runbook exempts no severity).
CHECKLIST_WITHIN = {"Immediate": timedelta(hours=2), "Follow-up": timedelta(hours=24),
                    "Post-Mortem": timedelta(weeks=1)}


WEEKDAY_NUMBERS = {"Mon": 0, "Tue": 1, "Wed": 2, "Thu": 3, "Fri": 4, "Sat": 5, "Sun": 6}


@dataclass(frozen=True)
class BusinessCalendar:
    """When "next business day" begins: working weekdays (0 = Monday), the hour a day
    starts, holidays, in the team's time zone."""

    timezone: str = "UTC"
    workdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    day_starts: time = time(9, 0)
    holidays: tuple[date, ...] = ()

    def next_business_day(self, at: datetime) -> datetime:
        """The start of the first business day after ``at``'s own day (in the calendar's
        zone), as an aware datetime."""
        zone = ZoneInfo(self.timezone)
        day = at.astimezone(zone).date()
        while True:
            day += timedelta(days=1)
            if day.weekday() in self.workdays and day not in self.holidays:
                return datetime.combine(day, self.day_starts, tzinfo=zone)


def respond_by(level: str, respond_within_minutes: int, at: datetime,
               calendar: BusinessCalendar) -> datetime:
    """When the response is due: the runbook's response time, or for SEV4 the start of the
    next business day."""
    if level == "SEV4":
        return calendar.next_business_day(at)
    return at + timedelta(minutes=respond_within_minutes)


def next_update(level: str, respond_within_minutes: int, at: datetime,
                calendar: BusinessCalendar) -> datetime:
    """When the next Status Update is due: every 30 minutes for SEV1/2, else by the
    response time."""
    every = SEVERITY_TABLE[level].update_every_minutes if level in SEVERITY_TABLE else None
    if every is not None:
        return at + timedelta(minutes=every)
    return respond_by(level, respond_within_minutes, at, calendar)


def internal_level(level: str, open_minutes: float,
                   thresholds: Mapping[str, Mapping[int, float]] | None = None) -> int:
    """The highest internal level an incident of this severity has reached after being open
    ``open_minutes``; ``thresholds`` replace the defaults of the severities they name."""
    steps = {**DEFAULT_ESCALATION_MINUTES, **(thresholds or {})}.get(level, {1: 0})
    reached = [n for n, after in steps.items() if open_minutes >= after]
    return max(reached or [1])


def external_teams(impacts: Iterable[str], dependencies: Iterable[str]) -> list[tuple[str, str]]:
    """(team key, why) for each external team this failure calls for, in the runbook's
    order."""
    impacts, dependencies = set(impacts), set(dependencies)
    teams = []
    aws = sorted(dependencies & AWS_BACKENDS)
    if aws:
        teams.append(("aws_support", f"infrastructure: {', '.join(aws)} failing"))
    if "payments" in impacts or "payments" in dependencies:
        teams.append(("payment_provider", "payment processing issue"))
    # The runbook's Vendor Contacts name an Infrastructure Team: the cluster is theirs.
    if "kubernetes" in dependencies:
        teams.append(("infrastructure_team", "infrastructure: the Kubernetes cluster failing"))
    # An attack that has not got in (security-attempt, -blocked) is a security incident too.
    if any(i == "security" or i.startswith("security-") for i in impacts):
        teams.append(("security_team", "security incident"))
    return teams


def post_mortem_due(level: str, resolved_at: datetime) -> datetime:
    """When the post-mortem is due: within 1 week of the resolution, whatever the severity
    (an unknown level too: better a date than none)."""
    known = SEVERITY_TABLE.get(level)
    return resolved_at + (known.post_mortem_within if known else CHECKLIST_WITHIN["Post-Mortem"])


def human_duration(seconds: float) -> str:
    """`1 h 23 min`, `45 min`, `2 d 3 h`: how the runbook's readers say it."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under 1 min"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "",
             f"{minutes} min" if minutes and not days else ""]
    return " ".join(p for p in parts if p)


def clock(at: datetime) -> str:
    """`2026-11-27 14:32 UTC`."""
    return at.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M UTC")


def now() -> datetime:
    """The time, in UTC: a run's start and end, as the summary records them."""
    return datetime.now(UTC)


def parse_time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))
