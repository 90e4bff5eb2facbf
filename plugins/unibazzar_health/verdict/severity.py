"""The severity policy: the one place an impact class becomes a severity, a service whose
every check failed becomes an outage, a share of failing requests becomes a class (the
runbook's 50 % of users), and losing a dependency is rated by what depends on it. Reads the
catalog's [severities] (the runbook's Incident Classification); checks name impact classes,
never severities.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from unibazzar_health.verdict.catalog import SEVERITY_ORDER, Catalog, Severity, load_catalog

# "Complete service outage" is SEV1, whatever each failing check's own class.
OUTAGE = "SEV1"
# The runbook's line on users affected: more than half of a service's requests failing is
# SEV1 (an outage for most of its users); fewer is its "<50 % users", SEV3.
MOST_USERS = 0.5


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
