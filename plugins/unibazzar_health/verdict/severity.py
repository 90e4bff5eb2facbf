"""The severity policy: the one place an impact class becomes a severity, a service whose
every check failed becomes an outage, a share of failing requests becomes a class (the
runbook's 50 % of users), and losing a dependency is rated by what depends on it. Reads the
catalog's [severities] (the runbook's Incident Classification); checks name impact classes,
never severities.

Also the one table per severity (``SEVERITY_TABLE``: response time from the catalog,
escalation defaults, update cadence, PagerDuty's severity, the metric's value) and the one
rule combining severities for a root cause or a verdict (``combined_severity``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from unibazzar_health.verdict.catalog import SEVERITY_ORDER, Catalog, Severity, load_catalog

# "Complete service outage" is SEV1, whatever each failing check's own class.
OUTAGE = "SEV1"
# The runbook's line on users affected: more than half of a service's requests failing is
# SEV1 (an outage for most of its users); fewer is its "<50 % users", SEV3.
MOST_USERS = 0.5


@dataclass(frozen=True)
class SeverityLevel:
    """One severity as every part of the plugin reads it: the catalog's [severities] (the
    runbook's Incident Classification: title, response time, Allure's severity) and the
    numbers the runbook and our receivers key by it. The one table of them is
    ``SEVERITY_TABLE``; policy.py, the lifecycle, the metrics and PagerDuty read it."""

    level: str
    # Escalation Procedures, Internal Escalation: minutes an incident stays open before it
    # reaches each level (a level absent is never reached by time alone). The environment's
    # [escalation] replaces them per severity.
    escalation_minutes: Mapping[int, float]
    # "Status Updates (Every 30 minutes for SEV 1/2)"; None: by the response time.
    update_every_minutes: float | None
    # The Events API v2 payload.severity a PagerDuty trigger carries.
    pagerduty: str
    # Post-Incident Procedures: the post-mortem within 1 week, whatever the severity.
    post_mortem_within: timedelta = timedelta(weeks=1)

    @property
    def number(self) -> int:
        """SEV1 -> 1 … SEV4 -> 4: the metrics' value (docs/metrics.md)."""
        return SEVERITY_ORDER.index(self.level) + 1

    @property
    def classification(self) -> Severity:
        """The catalog's row: title, respond_within, respond_within_minutes, allure."""
        return load_catalog().severities[self.level]

    @property
    def respond_within_minutes(self) -> int:
        return self.classification.respond_within_minutes


def _minutes(*after: float) -> Mapping[int, float]:
    return MappingProxyType({level: minutes for level, minutes in enumerate(after, start=1)})


SEVERITY_TABLE: Mapping[str, SeverityLevel] = MappingProxyType({s.level: s for s in (
    SeverityLevel("SEV1", escalation_minutes=_minutes(0, 15, 30, 60), update_every_minutes=30,
                  pagerduty="critical"),
    SeverityLevel("SEV2", escalation_minutes=_minutes(0, 60, 240), update_every_minutes=30,
                  pagerduty="error"),
    SeverityLevel("SEV3", escalation_minutes=_minutes(0, 240), update_every_minutes=None,
                  pagerduty="warning"),
    SeverityLevel("SEV4", escalation_minutes=_minutes(0), update_every_minutes=None,
                  pagerduty="info"),
)})


def response_minutes() -> dict[str, int]:
    """Each severity's response time in minutes, as the catalog says it."""
    return {level: s.respond_within_minutes for level, s in SEVERITY_TABLE.items()}


def impact_of_share(share: float, noise: float) -> str | None:
    """The impact class of a service failing ``share`` of its requests over the window:
    more than half an outage (SEV1); from ``noise`` up to half "minor" (SEV3, the runbook's
    "<50 % users"), never SEV2 by the share alone: "significant feature degradation" is what
    the pods or a canary show, and the share never lowers that; below ``noise`` None (the
    5xx every service answers now and then)."""
    if share > MOST_USERS:
        return "outage"
    return "minor" if share >= noise else None


def severity_of(impact: str, catalog: Catalog | None = None) -> Severity:
    """The runbook's severity for an impact class."""
    return (catalog or load_catalog()).severity_of(impact)


def rank(level: str | None) -> int:
    """Sort key: SEV1 first, no severity last."""
    return SEVERITY_ORDER.index(level) if level else len(SEVERITY_ORDER)


def worst(levels: Iterable[str | None]) -> str | None:
    present = [level for level in levels if level]
    return min(present, key=SEVERITY_ORDER.index) if present else None


def combined_severity(levels: Iterable[str | None], outage: bool = False) -> str | None:
    """The severity of a root cause or a verdict: the worst of its failing checks' (or of
    what it joins), SEV1 when a service of it is in outage (``service_outages``: a service
    down is SEV1, whatever each check's own class); None when nothing fails."""
    return worst([*levels, OUTAGE if outage else None])


def worst_impact(impacts: Iterable[str], catalog: Catalog | None = None) -> str:
    catalog = catalog or load_catalog()
    return min(impacts, key=lambda i: rank(catalog.severity_of(i).level))


def found_in_data(impact: str) -> bool:
    """Classes that say what a check found in data it did read (a mismatch, an accepted
    forgery, an attack in the logs), not what losing the dependency does."""
    return impact == "data" or impact.startswith("security")


def impact_of_losing(service: str, dependency: str, own_check: str,
                     catalog: Catalog | None = None) -> str:
    """How bad losing ``dependency`` is for ``service``: the worst class among the service's
    checks that depend on it (not counting ``own_check``, nor classes found in data)."""
    catalog = catalog or load_catalog()
    own = catalog.check(own_check)
    impacts = [entry.impact for entry in catalog.checks.values()
               if entry.service == service and dependency in entry.depends_on
               and entry.id != own.id and not found_in_data(entry.impact)]
    return worst_impact(impacts or [own.impact], catalog)


def service_outages(results: Iterable[Any]) -> list[dict[str, Any]]:
    """A service whose every check ran and failed is down: an outage (SEV1), whatever each
    check's own class. Needs at least two checks, so one failing check is not an outage.
    ``results`` are CheckResults (anything with service and outcome)."""
    by_service: dict[str, list[Any]] = {}
    for r in results:
        by_service.setdefault(r.service, []).append(r)
    return [{"service": service, "checks": len(checks), "severity": OUTAGE}
            for service, checks in sorted(by_service.items())
            if len(checks) >= 2 and all(str(r.outcome) == "failed" for r in checks)]
