"""The run's verdict: built from check results, written to disk, rendered for a terminal.

Plain functions over plain data: no pytest here. The JSON layout is documented in
docs/summary.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unibazzar_health.config.names import SERVICES
from unibazzar_health.probes import ProbeFailure
from unibazzar_health.verdict.catalog import Catalog
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
from unibazzar_health.verdict.severity import OUTAGE, rank, service_outages, worst

SCHEMA = "unibazzar-health/summary/v2"


@dataclass(frozen=True)
class RunInfo:
    environment: str
    environment_file: str
    started_at: datetime
    finished_at: datetime
    arguments: list[str]
    version: str = ""
    interrupted: bool = False  # stopped before every selected check ran
    run_mode: str | None = None  # oncall | scheduled | ci: who ran it (plugin.run_mode)
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
                  response: Response | None = None) -> dict[str, Any]:
    response = response or Response()
    ordered = sorted(lead_with_causes(results, catalog), key=_order)
    failed = [r for r in ordered if r.outcome is Outcome.FAILED]
    broken = [r for r in ordered if r.outcome is Outcome.BROKEN]
    incidents = shared_incidents(failed)
    outages = service_outages(ordered)
    level = worst([r.severity for r in failed] + [o["severity"] for o in outages])
    counts = Counter(str(r.outcome) for r in ordered)
    services = _services(ordered, outages)
    unchecked = sorted(s for s, entry in services.items() if entry["status"] == "unchecked")
    if failed:
        status = "failing"
    elif broken or counts[str(Outcome.NOT_RUN)] or unchecked or run.interrupted:
        status = "incomplete"
    else:
        status = "healthy"
    severity = catalog.severities[level] if level else None
    began = response.first_failure_at or run.started_at
    verdict: dict[str, Any] = {
        "status": status,
        "severity": level,
        "title": severity.title if severity else None,
        "respond_within": severity.respond_within if severity else None,
        "failing_checks": [r.id for r in failed],
        "broken_checks": [r.id for r in broken],
        "unchecked_services": unchecked,
        "interrupted": run.interrupted,
    }
    if severity is not None:
        verdict["respond_by"] = respond_by(
            severity.level, severity.respond_within_minutes, began, response.calendar
        ).isoformat(timespec="seconds")
        verdict["next_update_at"] = next_update(
            severity.level, severity.respond_within_minutes, run.finished_at, response.calendar
        ).isoformat(timespec="seconds")
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "version": run.version,
        "environment": run.environment,
        "environment_file": run.environment_file,
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "finished_at": run.finished_at.isoformat(timespec="seconds"),
        "duration_s": round((run.finished_at - run.started_at).total_seconds(), 3),
        "arguments": run.arguments,
        "run_mode": run.run_mode,
        "verdict": verdict,
        "counts": {o.value: counts.get(o.value, 0) for o in Outcome},
        "services": services,
        "incidents": incidents,
        "outages": outages,
        "root_causes": root_causes(failed, incidents, outages),
        "incident": _incident(response, began if failed else None, run.finished_at),
        "escalation": escalation(failed, level, began, run.finished_at, response),
        "recent_changes": recent_changes(ordered),
        # The checks' own credentials refused: what they could not see, and why (broken
        # checks, the verdict incomplete: the checks' owners fix it, nobody is paged).
        "refused_credentials": refused_credentials(r.to_dict() for r in broken),
        "other_failures": list(run.other_failures),
        "checks": [r.to_dict() for r in ordered],
    }
    return summary


def _services(ordered: list[CheckResult], outages: list[dict[str, Any]]) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for r in ordered:
        entry = services.setdefault(r.service, {"status": "healthy", "worst_severity": None,
                                                 "failed": [], "broken": [], "skipped": [],
                                                 "checks": 0})
        entry["checks"] += 1
        if r.outcome is Outcome.FAILED:
            entry["failed"].append(r.id)
            entry["worst_severity"] = worst([entry["worst_severity"], r.severity])
        elif r.outcome is Outcome.BROKEN:
            entry["broken"].append(r.id)
        elif r.outcome is Outcome.SKIPPED:
            entry["skipped"].append(r.id)
    for outage in outages:
        services[outage["service"]]["worst_severity"] = outage["severity"]
    for name, entry in services.items():
        outcomes = [r.outcome for r in ordered if r.service == name]
        if entry["failed"]:
            entry["status"] = "failing"
        elif all(o is Outcome.SKIPPED for o in outcomes):
            # Nothing of it was looked at: not healthy, not judged (e.g. its sections missing).
            entry["status"] = "unchecked"
        elif entry["broken"] or Outcome.NOT_RUN in outcomes:
            entry["status"] = "incomplete"
    return services


def root_causes(failed: list[CheckResult], incidents: list[dict[str, Any]],
                outages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What one Initial Notification each speaks of, worst first: a dependency behind
    several services' failures, then each service's remaining failures. A service in outage
    makes its cause SEV1."""
    down = {o["service"] for o in outages}
    causes: list[dict[str, Any]] = []
    claimed: set[str] = set()
    for incident in incidents:
        checks = [c for c in incident["checks"] if c not in claimed]
        claimed.update(checks)
        services = incident["services"]
        causes.append({
            "key": f"dependency:{incident['dependency']}",
            "title": f"{incident['dependency']} failing for {', '.join(services)}",
            "dependency": incident["dependency"], "services": services, "checks": checks,
            "severity": worst([incident["severity"],
                               *(OUTAGE for s in services if s in down)]),
        })
    # A failure pinned on nothing but its own service (a search that timed out), of a service
    # a dependency incident already covers, that stands on that dependency: its likely
    # consequence, one incident with it rather than a second page.
    by_id = {r.id: r for r in failed}
    for cause in causes:
        for r in failed:
            if (r.id not in claimed and set(r.failed_dependencies) <= {r.service}
                    and r.service in cause["services"] and cause["dependency"] in r.depends_on):
                cause["checks"].append(r.id)
                claimed.add(r.id)
        cause["severity"] = worst([cause["severity"],
                                   *(by_id[c].severity for c in cause["checks"])])
    by_service: dict[str, list[CheckResult]] = {}
    for r in failed:
        if r.id not in claimed:
            by_service.setdefault(r.service, []).append(r)
    for service, results in by_service.items():
        causes.append({
            "key": f"service:{service}", "title": service, "dependency": None,
            "services": [service], "checks": [r.id for r in results],
            "severity": worst([*(r.severity for r in results),
                               OUTAGE if service in down else None]),
        })
    return sorted(causes, key=lambda c: (rank(c["severity"]), -len(c["services"]), c["key"]))


def _incident(response: Response, began: datetime | None, now: datetime) -> dict[str, Any]:
    calendar = response.calendar
    return {
        "ic": response.ic, "war_room": response.war_room,
        "report_url": response.report_url, "runbook_url": response.runbook_url,
        "first_failure_at": began.isoformat(timespec="seconds") if began else None,
        "open_minutes": round((now - began).total_seconds() / 60, 1) if began else None,
        "calendar": {"timezone": calendar.timezone, "workdays": list(calendar.workdays),
                     "day_starts": calendar.day_starts.strftime("%H:%M"),
                     "holidays": [d.isoformat() for d in calendar.holidays]},
    }


def escalation(failed: list[CheckResult], level: str | None, began: datetime, now: datetime,
               response: Response) -> dict[str, Any] | None:
    """The runbook's Escalation Procedures for this verdict: the internal level reached by
    severity and time open, and the external teams its causes call for."""
    if level is None:
        return None
    contacts = response.contacts
    reached = internal_level(level, (now - began).total_seconds() / 60,
                             response.escalation_minutes or None)
    who = {1: response.ic, 2: contacts.get("level_2"), 3: contacts.get("level_3"),
           4: contacts.get("level_4")}.get(reached)
    external = [{"team": EXTERNAL_TEAMS[key], "contact": contacts.get(key), "why": why}
                for key, why in external_teams(
                    (r.impact for r in failed if r.impact),
                    (d for r in failed for d in r.failed_dependencies))]
    return {"internal": {"level": reached, "title": LEVELS[reached], "contact": who},
            "external": external}


# The runbook's names for the external teams (Escalation Procedures).
EXTERNAL_TEAMS = {"aws_support": "AWS Support", "payment_provider": "Payment Providers",
                  "security_team": "Security Team", "infrastructure_team": "Infrastructure Team"}


def shared_incidents(failed: list[CheckResult]) -> list[dict[str, Any]]:
    """One dependency failing for several services is one incident, at the worst severity
    of its failures (the runbook's escalation rule), worst first."""
    by_dependency: dict[str, list[CheckResult]] = {}
    for r in failed:
        for dependency in r.failed_dependencies:
            by_dependency.setdefault(dependency, []).append(r)
    incidents = []
    for dependency, results in by_dependency.items():
        services = sorted({r.service for r in results})
        if len(services) < 2:
            continue
        incidents.append({
            "dependency": dependency,
            "services": services,
            "checks": [r.id for r in results],
            "severity": worst([r.severity for r in results]),
        })
    return sorted(incidents, key=lambda i: (rank(i["severity"]), -len(i["services"]),
                                            i["dependency"]))


def recent_changes(results: list[CheckResult]) -> list[dict[str, Any]]:
    """Rollouts within the change window, as the recent-deployments checks saw them, newest
    first: the first suspects when something fails."""
    changes = [r.evidence["recent_change"] for r in results if isinstance(r.evidence, dict)
               and isinstance(r.evidence.get("recent_change"), dict)]
    return sorted(changes, key=lambda c: c.get("age_minutes") or 0.0)


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


def render(summary: dict[str, Any]) -> list[str]:
    """The verdict an on-call engineer reads first, worst first."""
    verdict, counts = summary["verdict"], summary["counts"]
    total = sum(counts.values())
    tally = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    lines: list[str] = []
    if verdict["status"] == "failing":
        lines.append(f"VERDICT {verdict['severity']} {verdict['title']}: respond within "
                     f"{verdict['respond_within']} — {len(verdict['failing_checks'])} of {total} "
                     f"checks failing ({tally}) in {summary['environment']}")
    elif verdict["status"] == "incomplete" and verdict.get("interrupted"):
        lines.append(f"VERDICT INCOMPLETE: the run was stopped before every check ran "
                     f"({tally}) in {summary['environment']}")
    elif verdict["status"] == "incomplete":
        unchecked = verdict.get("unchecked_services") or []
        why = (f"; nothing of {', '.join(unchecked)} was checked (every check skipped)"
               if unchecked else "")
        refused = [r["dependency"] for r in summary.get("refused_credentials") or []]
        if refused:
            why += f"; {', '.join(refused)} refused the checks' own credentials"
        lines.append(f"VERDICT INCOMPLETE: no failing check, but not every check ran ({tally}) "
                     f"in {summary['environment']}{why}")
    elif counts.get("skipped"):
        held = sum(1 for c in summary["checks"] if c["outcome"] == "skipped"
                   and str(c.get("message") or "").startswith(READ_ONLY_PREFIX))
        why = ", ".join(part for part in (
            f"{counts['skipped'] - held} not configured" if counts["skipped"] - held else "",
            f"{held} writing (--read-only)" if held else "") if part)
        lines.append(f"VERDICT HEALTHY: {counts['passed']} of {total} checks ran and passed in "
                     f"{summary['environment']}; {counts['skipped']} skipped ({why})")
    else:
        lines.append(f"VERDICT HEALTHY: all {total} checks passed in {summary['environment']}")
    refusals = summary.get("refused_credentials") or []
    for refused in refusals:
        # Once per backend, with its fix: the checks' owners', not the platform's on-call.
        lines.append(f"  CANNOT SEE {refused['dependency']}: it refused the checks' own "
                     f"credential, so {len(refused['checks'])} check(s) judged nothing there: "
                     "fix the checks' configuration (no outage is shown)")
        lines.append(f"       {refused['refusal']}")
        lines.extend(f"       fix:  {fix}" for fix in refused.get("fixes") or [])
        lines.extend(f"       next: {command}" for command in refused.get("commands") or [])
    told = {c for refused in refusals for c in refused["checks"]}
    for outage in summary.get("outages", []):
        lines.append(f"  OUTAGE {outage['service']}: every check failing ({outage['checks']} of "
                     f"{outage['checks']}): treated as {outage['severity']}")
    # The root causes' count of checks, as incident.md lists them under each (a failure of
    # a service the dependency serves, pinned on nothing else, is the cause's too).
    causes = summary.get("root_causes")
    shared = ([c for c in causes if c.get("dependency")] if causes is not None
              else summary.get("incidents", []))
    for incident in shared:
        lines.append(f"  INCIDENT {incident['dependency']} failing for "
                     f"{', '.join(incident['services'])}: one incident, {incident['severity']} "
                     f"({len(incident['checks'])} checks)")
    for check in summary["checks"]:
        outcome = check["outcome"]
        if outcome == "failed":
            lines.append(f"  FAIL {check['severity']} {check['service']} · {check['step']} "
                         f"[{check['id']}]")
            lines.append(f"       {check['message']}")
            lines.extend(f"       fix:  {fix}" for fix in check["fixes"])
            lines.extend(f"       next: {command}" for command in check["commands"])
        elif outcome in ("broken", "not-run"):
            label = "BROKEN" if outcome == "broken" else "NOT RUN"
            lines.append(f"  {label} {check['service']} · {check['step']} [{check['id']}]")
            lines.append(f"       {check['message']}")
            if check["id"] not in told:  # a refused credential's fixes are said above
                lines.extend(f"       fix:  {fix}" for fix in check.get("fixes") or [])
                lines.extend(f"       next: {c}" for c in check.get("commands") or [])
    read_only = [c["id"] for c in summary["checks"] if c["outcome"] == "skipped"
                 and str(c.get("message") or "").startswith(READ_ONLY_PREFIX)]
    # Each skipped check named once: the writers --read-only held back on their own line.
    skipped = [c["id"] for c in summary["checks"] if c["outcome"] == "skipped"
               and c["id"] not in read_only]
    if verdict["status"] == "healthy" and skipped:
        lines.append(f"  SKIPPED {', '.join(skipped)}")
    if read_only:
        lines.append(f"  READ-ONLY skipped the checks that write: {', '.join(read_only)}")
    for other in summary.get("other_failures") or []:
        lines.append(f"  FAILED {other}: a test that is no runbook check (the verdict does not "
                     "judge it; the exit status is not 0)")
    escalation = summary.get("escalation")
    if escalation:
        internal = escalation["internal"]
        lines.append(f"  ESCALATE Level {internal['level']} {internal['title']}"
                     + (f" ({internal['contact']})" if internal.get("contact") else "")
                     + "".join(f"; {t['team']}" + (f" ({t['contact']})" if t.get("contact")
                                                    else "") + f": {t['why']}"
                               for t in escalation["external"]))
    for change in summary.get("recent_changes", []):
        at = f" ({change['rolled_out_at']})" if change.get("rolled_out_at") else ""
        lines.append(f"  CHANGE {change['service']}: deployment {change['deployment']} revision "
                     f"{change['revision']} rolled out {change['age_minutes']:.0f} min ago{at}")
        if verdict["status"] == "failing":
            rollback = change.get("rollback") or (f"kubectl rollout undo deployment/"
                                                  f"{change['deployment']} -n "
                                                  f"{change['namespace']}")
            lines.append(f"       if it preceded the failures: {rollback}")
    return lines


def now() -> datetime:
    return datetime.now(UTC)
