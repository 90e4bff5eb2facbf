"""The environment file's sections for incidents: on-call, contacts, escalation, the business
calendar, report links, the notifiers, where incidents are kept, alerting, silences and
maintenance windows.
"""

from __future__ import annotations

from datetime import date, datetime
from datetime import time as dt_time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from unibazzar_health.config.fields import (
    EnvVar,
    HttpUrl,
    Minutes,
    _link_pattern,
    _Section,
    _timezone,
    _url,
)
from unibazzar_health.config.names import ServiceName


class OnCall(_Section):
    primary: str = "on-call primary"  # the Incident Commander the messages name
    secondary: str = "on-call secondary"
    manager: str = "engineering manager"


class Contacts(_Section):
    """Who each escalation reaches (the runbook's Escalation Procedures and Vendor
    Contacts): names, handles, channels or URLs, never secrets."""

    level_2: str = "senior engineer / team lead"
    level_3: str | None = None  # default: [oncall] manager
    level_4: str = "VP Engineering / CTO"
    aws_support: str | None = None  # e.g. the AWS support case URL
    payment_provider: str | None = None  # e.g. Stripe support
    security_team: str | None = None
    infrastructure_team: str | None = None  # e.g. its Slack channel: the cluster is theirs


class Escalation(_Section):
    """Minutes open after which an incident reaches internal levels 1, 2, 3, 4, by
    severity (a shorter list: never by time alone). Defaults: policy.py."""

    SEV1: list[Minutes] | None = None
    SEV2: list[Minutes] | None = None
    SEV3: list[Minutes] | None = None
    SEV4: list[Minutes] | None = None
    # An acknowledged incident (``incident ack``) does not escalate internally for this
    # long, unless its severity rises.
    ack_timeout_minutes: PositiveFloat = 60.0

    def minutes(self) -> dict[str, dict[int, float]]:
        levels = self.model_dump(include={"SEV1", "SEV2", "SEV3", "SEV4"})
        return {level: {n + 1: float(m) for n, m in enumerate(values)}
                for level, values in levels.items() if values is not None}


class Calendar(_Section):
    """The team's business days: SEV4's "next business day" starts at day_starts of the
    first one after the failure."""

    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    workdays: list[Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]] = [
        "Mon", "Tue", "Wed", "Thu", "Fri"]
    day_starts: dt_time = dt_time(9, 0)
    holidays: list[date] = []


class ReportLinks(_Section):
    """Where a run's outputs are read: the published single-file Allure report, the
    runbook, the war room; ``tms_pattern``, each check's Allure test-case link, its
    catalog id in place of ``{}``."""

    url: HttpUrl | None = None
    runbook_url: HttpUrl | None = None
    war_room: str = "#incidents"
    # No issue_pattern: nothing knows a ticket's id while the checks' Allure results are
    # written (the ticket is opened by posting, after the verdict, and links itself).
    tms_pattern: Annotated[str, AfterValidator(_link_pattern)] | None = None


# ---- incident lifecycle and posting (issue #8; docs/notifications.md) ---------------------
class Notify(_Section):
    """Where incidents are posted. Absent: nothing is posted and no incident state kept.

    Each notifier's table ([notify.slack], [notify.pagerduty], ...) is kept here as the file
    writes it: the notifier that owns it validates it with its own model when the
    environment is loaded (incidents/config.py), and refuses a name no notifier has. This
    layer knows no notifier, so a new one touches only its own module."""

    model_config = ConfigDict(extra="allow", frozen=True)
    # Each notifier's table, by its name; any value here, so that a misspelt key of this
    # section (budegt = 30) is refused as an unknown key, not as a table that is no table.
    __pydantic_extra__: dict[str, Any]

    deadline: PositiveFloat = 5.0  # seconds, per request
    retries: Annotated[int, Field(ge=0, le=5)] = 2  # more tries of a request never delivered
    # Seconds all posting of a run may take, retries included: past it, what is left waits
    # for the next run. The verdict and the exit status never wait on it beyond this.
    budget: PositiveFloat = 20.0

    @property
    def tables(self) -> dict[str, Any]:
        """Each configured notifier's table as written, by name (not yet validated)."""
        return dict(self.__pydantic_extra__ or {})


class IncidentState(_Section):
    """Where incidents are remembered between runs: a SQLite file (one machine) or Redis
    (runners on several machines or pods)."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    path: str = "state/incidents.sqlite3"  # sqlite: relative to the reports directory
    url: Annotated[str, _url("redis", "rediss")] | None = None  # redis (required for it)
    password_env: EnvVar | None = None
    key_prefix: str = "unibazzar-health"
    deadline: PositiveFloat = 2.0  # seconds, per store operation
    lock_wait: PositiveFloat = 10.0  # seconds a run waits for another to finish deciding
    keep_runs: PositiveInt = 500  # run summaries kept, at most…
    keep_days: PositiveFloat = 30.0  # …and none older (except those an open incident needs)


class UpdateEvery(_Section):
    """Minutes between Status Updates for SEV3/SEV4 (SEV1/2: the runbook's 30); unset: the
    severity's response time."""

    SEV3: PositiveFloat | None = None
    SEV4: PositiveFloat | None = None


class Alerting(_Section):
    """Unset counts take the run mode's default (oncall 1/1, scheduled 2/2, ci 1/1)."""

    alert_after: PositiveInt | None = None  # consecutive failing runs before the alert
    resolve_after: PositiveInt | None = None  # consecutive passing runs before the resolution
    update_every_minutes: UpdateEvery = UpdateEvery()


class Silence(_Section):
    service: ServiceName | None = None
    check: str | None = None  # a catalog id
    until: AwareDatetime
    reason: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _one_target(self) -> Silence:
        if (self.service is None) == (self.check is None):
            raise ValueError("a silence names exactly one of 'service' or 'check'")
        return self


class Maintenance(_Section):
    start: AwareDatetime
    end: AwareDatetime
    reason: Annotated[str, Field(min_length=1)]
    services: list[ServiceName] = []  # empty: every service

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("must be after 'start'")
        return end

