"""The run summary as a typed contract: what ``build_summary`` returns, what summary.json
holds, and what every output, the posting and the incident lifecycle read.

The meaning of each field is in docs/summary.md; its JSON Schema, generated from these
models (``schema_text``), is docs/summary.schema.json.

A summary is written as it was given (``Summary.to_dict``: the fields set, by their JSON
names, in this order): ``verdict.respond_by`` appears only with a severity, ``silenced``
only where something is muted, and a summary read back from disk, from the incident store
or from a delivery's payload (``Summary.model_validate``) is written back unchanged. Every
field has a default, so a summary an older version wrote, or one the lifecycle rebuilds
from what the incident state keeps, still reads; the schema requires what a run writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import date, time
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    WithJsonSchema,
)

from unibazzar_health.probes import FailureKind
from unibazzar_health.verdict.policy import BusinessCalendar
from unibazzar_health.verdict.results import Outcome

SCHEMA = "unibazzar-health/summary/v2"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# SEV1…SEV4, the catalog's [severities].
Level = Annotated[str, Field(pattern=r"^SEV[1-4]$")]
# A number as it was given: an int stays an int (5, not 5.0), so what is read back is
# written back byte for byte.
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]


def _written(*sometimes: str) -> Callable[[dict[str, Any]], None]:
    """The schema of what a run writes: every field (``sometimes`` aside: written only in
    some runs) and no other. Reading stays lenient: a field missing takes its default, an
    unknown one is ignored."""

    def shape(schema: dict[str, Any]) -> None:
        schema["required"] = [n for n in schema.get("required", []) if n not in sometimes]
        schema["additionalProperties"] = False

    return shape


class _Part(BaseModel):
    # Frozen: a narrowed summary (lifecycle.scope) shares its parts with the run's.
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True,
                              json_schema_serialization_defaults_required=True,
                              json_schema_extra=_written())


class Failure(_Part):
    """One probe failure behind a failed or broken check (probes.ProbeFailure)."""

    backend: str
    target: str
    kind: FailureKind
    problem: str
    deadline: Number | None = None
    """Seconds the probe had; null for a failure found in what it read."""


class Check(_Part):
    """One check's result (verdict/results.CheckResult), worst first in ``checks``."""

    id: str
    service: str
    step: str = ""
    title: str = ""
    nodeid: str = ""
    outcome: Outcome
    impact: str | None = None
    impact_statement: str | None = None
    severity: Level | None = None
    message: str | None = None
    fixes: list[str] = []
    commands: list[str] = []
    depends_on: list[str] = []
    evidence: JsonValue = None
    duration_s: Number = 0.0
    failed_dependencies: list[str] = []
    failures: list[Failure] = []
    context: dict[str, JsonValue] | None = None
    """Its service's pods and last log lines (judges/service_context.py), for failed checks."""

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


class Verdict(_Part):
    model_config = ConfigDict(json_schema_extra=_written("respond_by", "next_update_at"))

    status: Literal["failing", "incomplete", "healthy"]
    severity: Level | None = None
    title: str | None = None
    respond_within: str | None = None
    failing_checks: list[str] = []
    broken_checks: list[str] = []
    unchecked_services: list[str] = []
    interrupted: bool = False
    respond_by: str | None = None
    """Only with a severity."""
    next_update_at: str | None = None
    """Only with a severity."""


class Counts(_Part):
    passed: int = 0
    failed: int = 0
    broken: int = 0
    skipped: int = 0
    not_run: int = Field(default=0, serialization_alias="not-run",
                         validation_alias=AliasChoices("not-run", "not_run"))

    def by_outcome(self) -> dict[str, int]:
        """Each outcome's count by its name (``not-run``), in the outcomes' order."""
        return self.model_dump(by_alias=True)

    @property
    def total(self) -> int:
        return sum(self.by_outcome().values())


class ServiceStatus(_Part):
    status: Literal["failing", "incomplete", "unchecked", "healthy"] = "healthy"
    worst_severity: Level | None = None
    failed: list[str] = []
    broken: list[str] = []
    skipped: list[str] = []
    checks: int = 0


class DependencyIncident(_Part):
    """A dependency that failing checks of two or more services are pinned on."""

    dependency: str
    services: list[str]
    checks: list[str]
    severity: Level | None = None


class Outage(_Part):
    """A service whose every check ran and failed (two at least): SEV1."""

    service: str
    checks: int
    severity: Level


class RootCause(_Part):
    """What one Initial Notification speaks of: ``dependency:<name>`` or ``service:<name>``."""

    key: str
    title: str
    dependency: str | None = None
    services: list[str] = []
    checks: list[str] = []
    severity: Level | None = None


class Calendar(_Part):
    """The business calendar SEV4's "next business day" is counted by."""

    timezone: str = "UTC"
    workdays: list[int] = [0, 1, 2, 3, 4]
    day_starts: str = "09:00"
    holidays: list[str] = []

    def business(self) -> BusinessCalendar:
        return BusinessCalendar(timezone=self.timezone, workdays=tuple(self.workdays),
                                day_starts=time.fromisoformat(self.day_starts),
                                holidays=tuple(date.fromisoformat(d) for d in self.holidays))


class IncidentResponse(_Part):
    """Who answers and where, from the environment, and since when."""

    ic: str | None = None
    war_room: str | None = None
    report_url: str | None = None
    runbook_url: str | None = None
    first_failure_at: str | None = None
    open_minutes: float | None = None
    calendar: Calendar | None = None


class InternalEscalation(_Part):
    level: int
    title: str
    contact: str | None = None


class ExternalTeam(_Part):
    team: str
    contact: str | None = None
    why: str


class Escalation(_Part):
    internal: InternalEscalation
    external: list[ExternalTeam] = []


class RecentChange(_Part):
    """A rollout within the change window (the recent-deployments check's evidence)."""

    service: str
    deployment: str
    namespace: str
    revision: int | None = None
    replica_set: str | None = None
    rolled_out_at: str | None = None
    age_minutes: Number | None = None
    rollback: str | None = None


class RefusedCredential(_Part):
    """A backend that refused the checks' own credential (verdict/results.py)."""

    dependency: str
    checks: list[str] = []
    refusal: str
    fixes: list[str] = []
    commands: list[str] = []


class Silenced(_Part):
    """A failing check that alerts nothing: a silence or a maintenance window."""

    check: str
    service: str
    kind: Literal["silence", "maintenance"]
    reason: str
    until: str


class Summary(_Part):
    """A run's verdict and every check's result: reports/summary.json (docs/summary.md)."""

    model_config = ConfigDict(json_schema_extra=_written("silenced"))

    schema_id: str = Field(default=SCHEMA, alias="schema", json_schema_extra={"const": SCHEMA})
    version: str = ""
    environment: str = ""
    environment_file: str = ""
    started_at: str
    finished_at: str = ""
    """Empty only in a summary rebuilt from the incident state: then ``started_at``."""
    duration_s: float = 0.0
    arguments: list[str] = []
    run_mode: str | None = None
    verdict: Verdict
    counts: Counts = Counts()
    services: dict[str, ServiceStatus] = {}
    incidents: list[DependencyIncident] = []
    outages: list[Outage] = []
    root_causes: list[RootCause] = []
    """Absent from summaries written before root causes were (messages.root_causes)."""
    incident: IncidentResponse = IncidentResponse()
    escalation: Escalation | None = None
    recent_changes: list[RecentChange] = []
    refused_credentials: list[RefusedCredential] = []
    other_failures: list[str] = []
    checks: list[Check] = []
    silenced: list[Silenced] = []
    """Only where the environment keeps incidents and a failing check is muted."""

    @property
    def ended_at(self) -> str:
        """When the run finished (its start, for a summary rebuilt from the state)."""
        return self.finished_at or self.started_at

    def with_outcome(self, outcome: Outcome) -> list[Check]:
        return [c for c in self.checks if c.outcome is outcome]

    @property
    def failed(self) -> list[Check]:
        return self.with_outcome(Outcome.FAILED)

    def to_dict(self) -> dict[str, Any]:
        """As summary.json holds it: plain JSON, the fields given, by their JSON names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def carried_summary(data: Mapping[str, Any]) -> Summary | None:
    """The summary a delivery's payload carries (narrowed to its incident), read back; None
    for a person's action (``incident ack``), which carries none, and for one that does not
    read as a summary (queued by another version): a message goes out without it rather
    than not at all."""
    if not data:
        return None
    try:
        return Summary.model_validate(data)
    except ValidationError:
        return None


def stored_summaries(runs: Mapping[str, Any]) -> dict[str, Summary]:
    """Run summaries read back from the incident store, by run id. One that does not read
    as a summary (written by another version) is left out: the lifecycle rebuilds what it
    needs of that run from the incident state, as for a run no longer kept."""
    found = {}
    for run_id, data in runs.items():
        try:
            found[run_id] = Summary.model_validate(data)
        except ValidationError:
            continue
    return found


def json_schema() -> dict[str, Any]:
    """The JSON Schema of summary.json, as a run writes it."""
    schema = Summary.model_json_schema(mode="serialization", by_alias=True)
    return {"$schema": JSON_SCHEMA_DIALECT, "$comment": f"{SCHEMA}: generated from "
            "plugins/unibazzar_health/verdict/model.py; the fields' meaning: docs/summary.md",
            **schema}


def schema_text() -> str:
    """docs/summary.schema.json's text."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
