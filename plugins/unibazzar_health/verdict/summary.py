"""The run's verdict: built from check results, written to disk, rendered for a terminal.

Plain functions over plain data: no pytest here. ``build_summary`` returns the typed
summary (verdict/model.py); its JSON layout is documented in docs/summary.md and
docs/summary.schema.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from unibazzar_health.config.names import SERVICES
from unibazzar_health.probes import ProbeFailure
from unibazzar_health.verdict.catalog import Catalog
from unibazzar_health.verdict.model import (
    SCHEMA,
    Calendar,
    Check,
    Counts,
    DependencyIncident,
    Escalation,
    ExternalTeam,
    IncidentResponse,
    InternalEscalation,
    Outage,
    RecentChange,
    RefusedCredential,
    RootCause,
    ServiceStatus,
    Summary,
    Verdict,
)
from unibazzar_health.verdict.policy import (
    LEVELS,
    BusinessCalendar,
    external_teams,
    internal_level,
    next_update,
    respond_by,
)
from unibazzar_health.verdict.results import (
    READ_ONLY_PREFIX,
    CheckResult,
    Outcome,
    dependency_of,
    refused_credentials,
)
from unibazzar_health.verdict.severity import (
    combined_severity,
    rank,
    service_outages,
    worst,
)


@dataclass(frozen=True)
class RunInfo:
    environment: str
    environment_file: str
    started_at: datetime
    finished_at: datetime
    arguments: list[str]
    version: str = ""
    interrupted: bool = False  # stopped before every selected check ran
    run_mode: str | None = None  # oncall | scheduled | ci: who ran it (options.run_mode)
    # Tests that failed outside every check's result (a test that is no runbook check, a
    # check's teardown): the verdict does not judge them, the exit status never hides them.
    other_failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Response:
    """Who answers and where, from the environment: what the runbook's messages name."""

    ic: str = "unassigned"
    war_room: str = "#incidents"
    report_url: str | None = None
    runbook_url: str | None = None
    # level_2, level_3, level_4, aws_support, payment_provider, security_team
    contacts: dict[str, str] = field(default_factory=dict)
    escalation_minutes: dict[str, dict[int, float]] = field(default_factory=dict)
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    # When the incident began, where a state store remembers it; else this run.
    first_failure_at: datetime | None = None


def build_summary(results: list[CheckResult], catalog: Catalog, run: RunInfo,
                  response: Response | None = None) -> Summary:
    response = response or Response()
    ordered = sorted(lead_with_causes(results, catalog), key=_order)
    failed = [r for r in ordered if r.outcome is Outcome.FAILED]
    broken = [r for r in ordered if r.outcome is Outcome.BROKEN]
    incidents = shared_incidents(failed)
    down = outages(ordered)
    level = combined_severity((r.severity for r in failed), outage=bool(down))
    counts = Counter(str(r.outcome) for r in ordered)
    services = _services(ordered, down)
    unchecked = sorted(s for s, entry in services.items() if entry.status == "unchecked")
    status: Literal["failing", "incomplete", "healthy"]
    if failed:
        status = "failing"
    elif broken or counts[str(Outcome.NOT_RUN)] or unchecked or run.interrupted:
        status = "incomplete"
    else:
        status = "healthy"
    severity = catalog.severities[level] if level else None
    began = response.first_failure_at or run.started_at
    verdict = Verdict(
        status=status, severity=level,
        title=severity.title if severity else None,
        respond_within=severity.respond_within if severity else None,
        failing_checks=[r.id for r in failed], broken_checks=[r.id for r in broken],
        unchecked_services=unchecked, interrupted=run.interrupted)
    if severity is not None:
        verdict = verdict.model_copy(update={
            "respond_by": respond_by(severity.level, severity.respond_within_minutes, began,
                                     response.calendar).isoformat(timespec="seconds"),
            "next_update_at": next_update(severity.level, severity.respond_within_minutes,
                                          run.finished_at, response.calendar
                                          ).isoformat(timespec="seconds")})
    return Summary(
        schema=SCHEMA,
        version=run.version,
        environment=run.environment,
        environment_file=run.environment_file,
        started_at=run.started_at.isoformat(timespec="seconds"),
        finished_at=run.finished_at.isoformat(timespec="seconds"),
        duration_s=round((run.finished_at - run.started_at).total_seconds(), 3),
        arguments=list(run.arguments),
        run_mode=run.run_mode,
        verdict=verdict,
        counts=Counts.model_validate({o.value: counts.get(o.value, 0) for o in Outcome}),
        services=services,
        incidents=incidents,
        outages=down,
        root_causes=root_causes(failed, incidents, down),
        incident=_incident(response, began if failed else None, run.finished_at),
        escalation=escalation(failed, level, began, run.finished_at, response),
        recent_changes=recent_changes(ordered),
        # The checks' own credentials refused: what they could not see, and why (broken
        # checks, the verdict incomplete: the checks' owners fix it, nobody is paged).
        refused_credentials=[RefusedCredential.model_validate(refused) for refused in
                             refused_credentials(r.to_dict() for r in broken)],
        other_failures=list(run.other_failures),
        checks=[check_of(r) for r in ordered],
    )


def check_of(result: CheckResult) -> Check:
    """A check's result as the summary holds it."""
    return Check.model_validate(result.to_dict())


def outages(results: Iterable[CheckResult | Check]) -> list[Outage]:
    """The services down (severity.service_outages): every check of them ran and failed."""
    return [Outage.model_validate(outage) for outage in service_outages(results)]


def _services(ordered: list[CheckResult], down: list[Outage]) -> dict[str, ServiceStatus]:
    in_outage = {o.service: o.severity for o in down}
    services: dict[str, ServiceStatus] = {}
    for name in dict.fromkeys(r.service for r in ordered):
        mine = [r for r in ordered if r.service == name]
        outcomes = [r.outcome for r in mine]
        failed = [r.id for r in mine if r.outcome is Outcome.FAILED]
        broken = [r.id for r in mine if r.outcome is Outcome.BROKEN]
        status: Literal["failing", "incomplete", "unchecked", "healthy"] = "healthy"
        if failed:
            status = "failing"
        elif all(o is Outcome.SKIPPED for o in outcomes):
            # Nothing of it was looked at: not healthy, not judged (e.g. its sections missing).
            status = "unchecked"
        elif broken or Outcome.NOT_RUN in outcomes:
            status = "incomplete"
        services[name] = ServiceStatus(
            status=status,
            worst_severity=in_outage.get(name) or worst(
                r.severity for r in mine if r.outcome is Outcome.FAILED),
            failed=failed, broken=broken,
            skipped=[r.id for r in mine if r.outcome is Outcome.SKIPPED], checks=len(mine))
    return services


def root_causes(failed: list[CheckResult], incidents: list[DependencyIncident],
                down: list[Outage]) -> list[RootCause]:
    """What one Initial Notification each speaks of, worst first: a dependency behind
    several services' failures, then each service's remaining failures. A service in outage
    makes its cause SEV1."""
    in_outage = {o.service for o in down}
    claimed: set[str] = set()
    shared: list[tuple[DependencyIncident, list[str]]] = []
    for incident in incidents:
        checks = [c for c in incident.checks if c not in claimed]
        claimed.update(checks)
        shared.append((incident, checks))
    # A failure pinned on nothing but its own service (a search that timed out), of a service
    # a dependency incident already covers, that stands on that dependency: its likely
    # consequence, one incident with it rather than a second page.
    by_id = {r.id: r for r in failed}
    for incident, checks in shared:
        for r in failed:
            if (r.id not in claimed and set(r.failed_dependencies) <= {r.service}
                    and r.service in incident.services and incident.dependency in r.depends_on):
                checks.append(r.id)
                claimed.add(r.id)
    causes = [RootCause(
        key=f"dependency:{incident.dependency}",
        title=f"{incident.dependency} failing for {', '.join(incident.services)}",
        dependency=incident.dependency, services=incident.services, checks=checks,
        severity=combined_severity([incident.severity, *(by_id[c].severity for c in checks)],
                                   outage=bool(in_outage & set(incident.services))))
        for incident, checks in shared]
    by_service: dict[str, list[CheckResult]] = {}
    for r in failed:
        if r.id not in claimed:
            by_service.setdefault(r.service, []).append(r)
    causes += [RootCause(
        key=f"service:{service}", title=service, dependency=None, services=[service],
        checks=[r.id for r in results],
        severity=combined_severity((r.severity for r in results), outage=service in in_outage))
        for service, results in by_service.items()]
    return sorted(causes, key=lambda c: (rank(c.severity), -len(c.services), c.key))


def _incident(response: Response, began: datetime | None, now: datetime) -> IncidentResponse:
    calendar = response.calendar
    return IncidentResponse(
        ic=response.ic, war_room=response.war_room,
        report_url=response.report_url, runbook_url=response.runbook_url,
        first_failure_at=began.isoformat(timespec="seconds") if began else None,
        open_minutes=round((now - began).total_seconds() / 60, 1) if began else None,
        calendar=Calendar(timezone=calendar.timezone, workdays=list(calendar.workdays),
                          day_starts=calendar.day_starts.strftime("%H:%M"),
                          holidays=[d.isoformat() for d in calendar.holidays]))


def escalation(failed: list[CheckResult], level: str | None, began: datetime, now: datetime,
               response: Response) -> Escalation | None:
    """The runbook's Escalation Procedures for this verdict: the internal level reached by
    severity and time open, and the external teams its causes call for."""
    if level is None:
        return None
    contacts = response.contacts
    reached = internal_level(level, (now - began).total_seconds() / 60,
                             response.escalation_minutes or None)
    who = {1: response.ic, 2: contacts.get("level_2"), 3: contacts.get("level_3"),
           4: contacts.get("level_4")}.get(reached)
    return Escalation(
        internal=InternalEscalation(level=reached, title=LEVELS[reached], contact=who),
        external=external_escalation(
            (r.impact for r in failed if r.impact),
            (d for r in failed for d in r.failed_dependencies), contacts))


def external_escalation(impacts: Iterable[str], dependencies: Iterable[str],
                        contacts: Mapping[str, str]) -> list[ExternalTeam]:
    """The external teams these failures call for (policy.external_teams), by the runbook's
    names, with the environment's contact for each."""
    return [ExternalTeam(team=EXTERNAL_TEAMS[key], contact=contacts.get(key), why=why)
            for key, why in external_teams(impacts, dependencies)]


# The runbook's names for the external teams (Escalation Procedures).
EXTERNAL_TEAMS = {"aws_support": "AWS Support", "payment_provider": "Payment Providers",
                  "security_team": "Security Team", "infrastructure_team": "Infrastructure Team"}


def shared_incidents(failed: list[CheckResult]) -> list[DependencyIncident]:
    """One dependency failing for several services is one incident, at the worst severity
    of its failures (the runbook's escalation rule), worst first."""
    by_dependency: dict[str, list[CheckResult]] = {}
    for r in failed:
        for dependency in r.failed_dependencies:
            by_dependency.setdefault(dependency, []).append(r)
    incidents = [DependencyIncident(dependency=dependency,
                                    services=sorted({r.service for r in results}),
                                    checks=[r.id for r in results],
                                    severity=combined_severity(r.severity for r in results))
                 for dependency, results in by_dependency.items()]
    return sorted((i for i in incidents if len(i.services) >= 2),
                  key=lambda i: (rank(i.severity), -len(i.services), i.dependency))


def recent_changes(results: list[CheckResult]) -> list[RecentChange]:
    """Rollouts within the change window, as the recent-deployments checks saw them, newest
    first: the first suspects when something fails."""
    changes = [RecentChange.model_validate(r.evidence["recent_change"]) for r in results
               if isinstance(r.evidence, dict)
               and isinstance(r.evidence.get("recent_change"), dict)]
    return sorted(changes, key=lambda c: c.age_minutes or 0.0)


def _order(r: CheckResult) -> tuple[int, int, int, str]:
    outcome = {Outcome.FAILED: 0, Outcome.BROKEN: 1, Outcome.NOT_RUN: 2, Outcome.SKIPPED: 3,
               Outcome.PASSED: 4}[r.outcome]
    # At one severity, a check that found a backend failing before the symptoms it explains.
    return (outcome, rank(r.severity), 0 if _backends(r) else 1, r.id)


def _backends(r: CheckResult) -> list[str]:
    """The backends (not services) a failed check is pinned on."""
    return [d for d in r.failed_dependencies if d not in SERVICES]


def lead_with_causes(results: list[CheckResult], catalog: Catalog) -> list[CheckResult]:
    """A failure pinned on nothing but its own service (a search that timed out, a canary
    listing never indexed), of a service another check of which found a backend it stands
    on failing (Redis refusing, the listings table gone), is most likely that backend's
    consequence: its fixes and commands start with the backend's own (catalog failure_fixes:
    bring it back, restore it), then its own, and its Impact sentence is the backend's loss
    (the cause's), not what it would have judged. The results are copies."""
    cause_of: dict[tuple[str, str], CheckResult] = {}
    for r in results:
        backends = _backends(r)
        if (r.outcome is Outcome.FAILED and len(backends) == 1 and r.fixes
                and _fixed_by_kind(r, backends[0], catalog)):
            cause_of.setdefault((r.service, backends[0]), r)
    led: list[CheckResult] = []
    for r in results:
        causes = [cause_of[(r.service, d)] for d in r.depends_on
                  if (r.service, d) in cause_of and cause_of[(r.service, d)] is not r]
        if r.outcome is not Outcome.FAILED or _backends(r) or not causes:
            led.append(r)
            continue
        led.append(dataclasses.replace(
            r, impact_statement=causes[0].impact_statement or r.impact_statement,
            fixes=list(dict.fromkeys([*(f for c in causes for f in c.fixes), *r.fixes])),
            commands=list(dict.fromkeys([*(c for cause in causes for c in cause.commands),
                                         *r.commands]))))
    return led


def _fixed_by_kind(r: CheckResult, backend: str, catalog: Catalog) -> bool:
    """Whether every failure of ``backend`` behind ``r`` has the catalog's fix for its kind:
    then r's fixes are the backend's (bring it back), not r's own judgement's."""
    failures = [ProbeFailure.from_dict(f) for f in r.failures]
    mine = [f for f in failures if dependency_of(f) == backend]
    return bool(mine) and len(mine) == len(failures) and all(
        catalog.fix_for(backend, f.kind) is not None for f in mine)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Atomic: a reader (or a crash) never sees half a summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, ensure_ascii=False)
        out.write("\n")
    os.replace(tmp, path)
    return path


def render(summary: Summary) -> list[str]:
    """The verdict an on-call engineer reads first, worst first."""
    told = {c for refused in summary.refused_credentials for c in refused.checks}
    return [_headline(summary), *_refusal_lines(summary), *_incident_lines(summary),
            *(line for check in summary.checks for line in _check_lines(check, told)),
            *_skipped_lines(summary),
            *(f"  FAILED {other}: a test that is no runbook check (the verdict does not "
              "judge it; the exit status is not 0)" for other in summary.other_failures),
            *_escalation_lines(summary), *_change_lines(summary)]


def _headline(summary: Summary) -> str:
    verdict, counts = summary.verdict, summary.counts
    total, environment = counts.total, summary.environment
    tally = ", ".join(f"{n} {k}" for k, n in counts.by_outcome().items() if n)
    if verdict.status == "failing":
        return (f"VERDICT {verdict.severity} {verdict.title}: respond within "
                f"{verdict.respond_within} — {len(verdict.failing_checks)} of {total} "
                f"checks failing ({tally}) in {environment}")
    if verdict.status == "incomplete" and verdict.interrupted:
        return (f"VERDICT INCOMPLETE: the run was stopped before every check ran "
                f"({tally}) in {environment}")
    if verdict.status == "incomplete":
        unchecked = verdict.unchecked_services
        why = (f"; nothing of {', '.join(unchecked)} was checked (every check skipped)"
               if unchecked else "")
        refused = [r.dependency for r in summary.refused_credentials]
        if refused:
            why += f"; {', '.join(refused)} refused the checks' own credentials"
        return (f"VERDICT INCOMPLETE: no failing check, but not every check ran ({tally}) "
                f"in {environment}{why}")
    if counts.skipped:
        held = len(_held_back(summary))
        why = ", ".join(part for part in (
            f"{counts.skipped - held} not configured" if counts.skipped - held else "",
            f"{held} writing (--read-only)" if held else "") if part)
        return (f"VERDICT HEALTHY: {counts.passed} of {total} checks ran and passed in "
                f"{environment}; {counts.skipped} skipped ({why})")
    return f"VERDICT HEALTHY: all {total} checks passed in {environment}"


def _held_back(summary: Summary) -> list[str]:
    """The checks that write, skipped by --read-only."""
    return [c.id for c in summary.with_outcome(Outcome.SKIPPED)
            if (c.message or "").startswith(READ_ONLY_PREFIX)]


def _refusal_lines(summary: Summary) -> list[str]:
    """Once per backend, with its fix: the checks' owners', not the platform's on-call."""
    lines = []
    for refused in summary.refused_credentials:
        lines.append(f"  CANNOT SEE {refused.dependency}: it refused the checks' own "
                     f"credential, so {len(refused.checks)} check(s) judged nothing there: "
                     "fix the checks' configuration (no outage is shown)")
        lines.append(f"       {refused.refusal}")
        lines.extend(f"       fix:  {fix}" for fix in refused.fixes)
        lines.extend(f"       next: {command}" for command in refused.commands)
    return lines


def _incident_lines(summary: Summary) -> list[str]:
    lines = [f"  OUTAGE {outage.service}: every check failing ({outage.checks} of "
             f"{outage.checks}): treated as {outage.severity}" for outage in summary.outages]
    # The root causes' count of checks, as incident.md lists them under each (a failure of
    # a service the dependency serves, pinned on nothing else, is the cause's too); a
    # summary written before root causes were names its shared incidents.
    shared: list[RootCause] | list[DependencyIncident] = (
        [c for c in summary.root_causes if c.dependency]
        if "root_causes" in summary.model_fields_set else summary.incidents)
    lines += [f"  INCIDENT {incident.dependency} failing for "
              f"{', '.join(incident.services)}: one incident, {incident.severity} "
              f"({len(incident.checks)} checks)" for incident in shared]
    return lines


def _check_lines(check: Check, told: set[str]) -> list[str]:
    """A failing, broken or not-run check with its fixes and next commands (a refused
    credential's fixes are said once, above)."""
    if check.outcome is Outcome.FAILED:
        return [f"  FAIL {check.severity} {check.service} · {check.step} [{check.id}]",
                f"       {check.message}",
                *(f"       fix:  {fix}" for fix in check.fixes),
                *(f"       next: {command}" for command in check.commands)]
    if check.outcome not in (Outcome.BROKEN, Outcome.NOT_RUN):
        return []
    label = "BROKEN" if check.outcome is Outcome.BROKEN else "NOT RUN"
    lines = [f"  {label} {check.service} · {check.step} [{check.id}]", f"       {check.message}"]
    if check.id not in told:
        lines.extend(f"       fix:  {fix}" for fix in check.fixes)
        lines.extend(f"       next: {command}" for command in check.commands)
    return lines


def _skipped_lines(summary: Summary) -> list[str]:
    """Each skipped check named once: the writers --read-only held back on their own line."""
    read_only = _held_back(summary)
    skipped = [c.id for c in summary.with_outcome(Outcome.SKIPPED) if c.id not in read_only]
    lines = []
    if summary.verdict.status == "healthy" and skipped:
        lines.append(f"  SKIPPED {', '.join(skipped)}")
    if read_only:
        lines.append(f"  READ-ONLY skipped the checks that write: {', '.join(read_only)}")
    return lines


def _escalation_lines(summary: Summary) -> list[str]:
    escalation = summary.escalation
    if escalation is None:
        return []
    internal = escalation.internal
    return [f"  ESCALATE Level {internal.level} {internal.title}"
            + (f" ({internal.contact})" if internal.contact else "")
            + "".join(f"; {t.team}" + (f" ({t.contact})" if t.contact else "") + f": {t.why}"
                      for t in escalation.external)]


def _change_lines(summary: Summary) -> list[str]:
    lines = []
    for change in summary.recent_changes:
        at = f" ({change.rolled_out_at})" if change.rolled_out_at else ""
        lines.append(f"  CHANGE {change.service}: deployment {change.deployment} revision "
                     f"{change.revision} rolled out {change.age_minutes or 0.0:.0f} min "
                     f"ago{at}")
        if summary.verdict.status == "failing":
            rollback = change.rollback or (f"kubectl rollout undo deployment/"
                                           f"{change.deployment} -n {change.namespace}")
            lines.append(f"       if it preceded the failures: {rollback}")
    return lines

