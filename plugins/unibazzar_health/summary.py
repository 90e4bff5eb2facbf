"""The run's verdict: built from check results, written to disk, rendered for a terminal.

Plain functions over plain data: no pytest here. The JSON layout is documented in
docs/summary.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unibazzar_health.catalog import SEVERITY_ORDER, Catalog, worst
from unibazzar_health.results import CheckResult, Outcome

SCHEMA = "unibazzar-health/summary/v1"


@dataclass(frozen=True)
class RunInfo:
    environment: str
    environment_file: str
    started_at: datetime
    finished_at: datetime
    arguments: list[str]


def build_summary(results: list[CheckResult], catalog: Catalog, run: RunInfo) -> dict[str, Any]:
    ordered = sorted(results, key=_order)
    failed = [r for r in ordered if r.outcome is Outcome.FAILED]
    broken = [r for r in ordered if r.outcome is Outcome.BROKEN]
    incidents = shared_incidents(failed)
    outages = service_outages(ordered)
    level = worst([r.severity for r in failed if r.severity] + (["SEV1"] if outages else []))
    counts = Counter(str(r.outcome) for r in ordered)
    if failed:
        status = "failing"
    elif broken or counts[str(Outcome.NOT_RUN)]:
        status = "incomplete"
    else:
        status = "healthy"
    severity = catalog.severities[level] if level else None
    services: dict[str, Any] = {}
    for r in ordered:
        entry = services.setdefault(r.service, {"worst_severity": None, "failed": [],
                                                 "broken": [], "checks": 0})
        entry["checks"] += 1
        if r.outcome is Outcome.FAILED:
            entry["failed"].append(r.id)
            entry["worst_severity"] = worst([s for s in (entry["worst_severity"], r.severity) if s])
        elif r.outcome is Outcome.BROKEN:
            entry["broken"].append(r.id)
    for outage in outages:
        services[outage["service"]]["worst_severity"] = outage["severity"]
    return {
        "schema": SCHEMA,
        "environment": run.environment,
        "environment_file": run.environment_file,
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "finished_at": run.finished_at.isoformat(timespec="seconds"),
        "duration_s": round((run.finished_at - run.started_at).total_seconds(), 3),
        "arguments": run.arguments,
        "verdict": {
            "status": status,
            "severity": level,
            "title": severity.title if severity else None,
            "respond_within": severity.respond_within if severity else None,
            "failing_checks": [r.id for r in failed],
            "broken_checks": [r.id for r in broken],
        },
        "counts": {o.value: counts.get(o.value, 0) for o in Outcome},
        "services": services,
        "incidents": incidents,
        "outages": outages,
        "recent_changes": recent_changes(ordered),
        "checks": [r.to_dict() for r in ordered],
    }


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
            "severity": worst([r.severity for r in results if r.severity]),
        })
    return sorted(incidents, key=lambda i: (SEVERITY_ORDER.index(i["severity"] or "SEV4"),
                                            -len(i["services"]), i["dependency"]))


def service_outages(results: list[CheckResult]) -> list[dict[str, Any]]:
    """A service whose every check ran and failed is down: an outage (SEV1), whatever each
    check's own class. Needs at least two checks, so one failing check is not an outage."""
    by_service: dict[str, list[CheckResult]] = {}
    for r in results:
        by_service.setdefault(r.service, []).append(r)
    outages = []
    for service, checks in sorted(by_service.items()):
        if len(checks) >= 2 and all(r.outcome is Outcome.FAILED for r in checks):
            outages.append({"service": service, "checks": len(checks), "severity": "SEV1"})
    return outages


def recent_changes(results: list[CheckResult]) -> list[dict[str, Any]]:
    """Rollouts within the change window, as the recent-deployments checks saw them, newest
    first: the first suspects when something fails."""
    changes = [r.evidence["recent_change"] for r in results if isinstance(r.evidence, dict)
               and isinstance(r.evidence.get("recent_change"), dict)]
    return sorted(changes, key=lambda c: c.get("age_minutes") or 0.0)


def _order(r: CheckResult) -> tuple[int, int, str]:
    rank = {Outcome.FAILED: 0, Outcome.BROKEN: 1, Outcome.NOT_RUN: 2, Outcome.SKIPPED: 3,
            Outcome.PASSED: 4}[r.outcome]
    sev = SEVERITY_ORDER.index(r.severity) if r.severity else len(SEVERITY_ORDER)
    return (rank, sev, r.id)


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
    elif verdict["status"] == "incomplete":
        lines.append(f"VERDICT INCOMPLETE: no failing check, but not every check ran ({tally}) "
                     f"in {summary['environment']}")
    else:
        lines.append(f"VERDICT HEALTHY: all {total} checks passed in {summary['environment']}"
                     + (f" ({tally})" if counts.get("skipped") else ""))
    for outage in summary.get("outages", []):
        lines.append(f"  OUTAGE {outage['service']}: every check failing ({outage['checks']} of "
                     f"{outage['checks']}): treated as {outage['severity']}")
    for incident in summary.get("incidents", []):
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
    for change in summary.get("recent_changes", []):
        at = f" ({change['rolled_out_at']})" if change.get("rolled_out_at") else ""
        lines.append(f"  CHANGE {change['service']}: deployment {change['deployment']} revision "
                     f"{change['revision']} rolled out {change['age_minutes']:.0f} min ago{at}")
        if verdict["status"] == "failing":
            lines.append(f"       if it preceded the failures: kubectl rollout undo "
                         f"deployment/{change['deployment']} -n {change['namespace']}")
    return lines


def now() -> datetime:
    return datetime.now(UTC)
