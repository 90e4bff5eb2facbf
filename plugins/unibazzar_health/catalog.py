"""The runbook's catalog (catalog.toml): severities, fixes, commands and checks."""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from unibazzar_health.names import SERVICES

SEVERITY_ORDER = ("SEV1", "SEV2", "SEV3", "SEV4")
# The backends a check may depend on (catalog depends_on), each with the pytest marker that
# selects the checks standing on it: `pytest -m "order-service and postgres"`.
BACKEND_MARKERS = {"postgresql": "postgres", "redis": "redis", "rabbitmq": "rabbitmq",
                   "dynamodb": "dynamodb", "s3": "s3", "kubernetes": "kubernetes",
                   "payments": "payments", "vector-db": "vector-db", "logs": "logs",
                   # The DynamoDB capacity metrics: a failure of its own, with fixes of its own.
                   "cloudwatch": "cloudwatch"}
# The marker of checks that write (a canary in its own names, removed by the same check).
CANARY_WRITE = "canary_write"


class CatalogError(Exception):
    pass


@dataclass(frozen=True)
class Severity:
    level: str
    title: str
    respond_within: str
    respond_within_minutes: int
    allure: str
    impacts: tuple[str, ...]

    @property
    def number(self) -> int:
        return int(self.level.removeprefix("SEV"))


@dataclass(frozen=True)
class CheckEntry:
    id: str
    service: str
    step: str
    title: str
    impact: str
    # One sentence for stakeholders (the runbook's Initial Notification "Impact:"): what
    # users or the business see when this check fails, in their words, never the probe's.
    impact_statement: str
    depends_on: tuple[str, ...]
    fixes: tuple[str, ...]  # the runbook's words, already looked up
    commands: tuple[str, ...]  # templates, see fill_commands
    # What the check writes to the platform, in its own names (None: read-only).
    writes: str | None = None

    @property
    def markers(self) -> tuple[str, ...]:
        """Its service, a marker per backend it stands on, canary_write if it writes."""
        backends = [BACKEND_MARKERS[d] for d in self.depends_on if d in BACKEND_MARKERS]
        return (self.service, *backends, *([CANARY_WRITE] if self.writes else []))


@dataclass(frozen=True)
class KindFix:
    """What to do about one kind of failure of one dependency (catalog.toml's
    [failure_fixes."<dependency>.<kind>"]; dependency "*" for any): it replaces a check's
    own fixes, written for what the check judges, when a probe failure of that kind is
    what failed it."""

    dependency: str  # as depends_on names it, or ANY_DEPENDENCY
    kind: str  # a probes.FailureKind value
    fixes: tuple[str, ...]  # the words, already looked up
    commands: tuple[str, ...]  # templates; {failed_host} is the failing target's host


ANY_DEPENDENCY = "*"


@dataclass(frozen=True)
class Catalog:
    severities: dict[str, Severity]
    checks: dict[str, CheckEntry]
    failure_fixes: dict[tuple[str, str], KindFix] = field(default_factory=dict)

    def fix_for(self, dependency: str, kind: str) -> KindFix | None:
        """The fix for a ``kind`` failure of ``dependency``: its own entry, else the one
        for any dependency, else none."""
        return (self.failure_fixes.get((dependency, kind))
                or self.failure_fixes.get((ANY_DEPENDENCY, kind)))

    def severity_of(self, impact: str) -> Severity:
        for severity in self.severities.values():
            if impact in severity.impacts:
                return severity
        raise CatalogError(f"impact class {impact!r} has no severity")

    def check(self, check_id: str) -> CheckEntry:
        try:
            return self.checks[check_id]
        except KeyError:
            raise CatalogError(f"check id {check_id!r} is not in the catalog") from None

    @property
    def impacts(self) -> set[str]:
        return {i for s in self.severities.values() for i in s.impacts}


def worst(levels: list[str]) -> str | None:
    return min(levels, key=SEVERITY_ORDER.index) if levels else None


@cache
def load_catalog() -> Catalog:
    text = resources.files("unibazzar_health").joinpath("catalog.toml").read_text("utf-8")
    return parse_catalog(tomllib.loads(text))


def parse_catalog(raw: dict[str, Any]) -> Catalog:
    severities = {
        level: Severity(level=level, title=s["title"], respond_within=s["respond_within"],
                        respond_within_minutes=int(s["respond_within_minutes"]),
                        allure=s["allure"], impacts=tuple(s["impacts"]))
        for level, s in raw["severities"].items()
    }
    if tuple(severities) != SEVERITY_ORDER:
        raise CatalogError(f"severities must be {SEVERITY_ORDER}, got {tuple(severities)}")
    fixes: dict[str, str] = raw.get("fixes", {})
    impacts = {i for s in severities.values() for i in s.impacts}
    checks: dict[str, CheckEntry] = {}
    for check_id, c in raw["checks"].items():
        if c["impact"] not in impacts:
            raise CatalogError(f"check {check_id}: unknown impact {c['impact']!r}")
        unknown = [f for f in c.get("fixes", []) if f not in fixes]
        if unknown:
            raise CatalogError(f"check {check_id}: unknown fixes {unknown}")
        statement = c.get("impact_statement")
        if not isinstance(statement, str) or not statement.strip():
            raise CatalogError(f"check {check_id}: needs an impact_statement (one sentence: "
                               "what users or the business see when it fails)")
        for template in c.get("commands", []):
            check_command(f"check {check_id}", template)
        strange = [d for d in c.get("depends_on", [])
                   if d not in BACKEND_MARKERS and d not in SERVICES]
        if strange or c["service"] not in SERVICES:
            raise CatalogError(f"check {check_id}: unknown service or dependency "
                               f"{strange or c['service']!r}")
        checks[check_id] = CheckEntry(
            id=check_id, service=c["service"], step=c["step"], title=c["title"],
            impact=c["impact"], impact_statement=statement.strip(),
            depends_on=tuple(c.get("depends_on", [])),
            fixes=tuple(fixes[f] for f in c.get("fixes", [])),
            commands=tuple(c.get("commands", [])),
            writes=c.get("writes"),
        )
    return Catalog(severities=severities, checks=checks,
                   failure_fixes=parse_failure_fixes(raw.get("failure_fixes", {}), fixes,
                                                     checks))


def parse_failure_fixes(raw: dict[str, Any], fixes: dict[str, str],
                        checks: dict[str, CheckEntry]) -> dict[tuple[str, str], KindFix]:
    from unibazzar_health.probes import FailureKind

    dependencies = {d for c in checks.values() for d in c.depends_on} | {ANY_DEPENDENCY}
    kinds = {k.value for k in FailureKind}
    parsed: dict[tuple[str, str], KindFix] = {}
    for key, f in raw.items():
        dependency, _, kind = key.rpartition(".")
        if dependency not in dependencies:
            raise CatalogError(f"failure_fixes.{key}: {dependency!r} is no check's dependency "
                               f"(one of {sorted(dependencies)})")
        if kind not in kinds:
            raise CatalogError(f"failure_fixes.{key}: unknown failure kind {kind!r} "
                               f"(one of {sorted(kinds)})")
        unknown = [name for name in f.get("fixes", []) if name not in fixes]
        if unknown:
            raise CatalogError(f"failure_fixes.{key}: unknown fixes {unknown}")
        if not f.get("fixes") or not f.get("commands"):
            # An entry replaces the check's own fixes and commands: empty would leave nothing.
            raise CatalogError(f"failure_fixes.{key}: needs fixes and commands")
        for template in f["commands"]:
            check_command(f"failure_fixes.{key}", template)
        parsed[(dependency, kind)] = KindFix(
            dependency=dependency, kind=kind, fixes=tuple(fixes[name] for name in f["fixes"]),
            commands=tuple(f["commands"]))
    return parsed


# kubectl written bare, at the start of a command or after a pipe or separator.
_BARE_KUBECTL = re.compile(r"(?:^|[|;&(]\s*)kubectl\b")


def check_command(where: str, template: str) -> None:
    """A command is pasted into a shell during an incident: a kubectl command must name the
    environment's cluster ({kubectl}, filled by results.command_names with --context or
    --server) and the namespace, never act on whatever cluster the shell points at."""
    if _BARE_KUBECTL.search(template):
        raise CatalogError(f"{where}: write {{kubectl}}, not kubectl, so the command names "
                           f"the environment's cluster: {template!r}")
    if "{kubectl}" in template and "-n {namespace}" not in template:
        raise CatalogError(f"{where}: a kubectl command needs -n {{namespace}}: {template!r}")


class _KeepUnknown(dict[str, str]):
    """A placeholder the environment cannot fill stays visible, as the runbook writes it."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# Placeholders only a check's Finding fills (the pod it names, the replicas or capacity to
# scale to): a
# command that needs one the finding did not give is left out rather than shown with a hole.
FINDING_NAMES = frozenset({"pod", "replicas", "read_capacity", "write_capacity",
                           "error_log_file"})


def names_in(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def fill_commands(templates: tuple[str, ...], names: dict[str, str]) -> list[str]:
    formatter = string.Formatter()
    return [formatter.vformat(t, (), _KeepUnknown(names)) for t in templates]
