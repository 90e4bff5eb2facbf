"""The runbook's catalog (catalog.toml): severities, fixes, commands and checks."""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from unibazzar_health.config.names import BACKENDS, SERVICES, dependencies_of
from unibazzar_health.probes import FailureKind

SEVERITY_ORDER = ("SEV1", "SEV2", "SEV3", "SEV4")
# The backends a check may depend on (catalog depends_on), each with the pytest marker that
# selects the checks standing on it: `pytest -m "order-service and postgres"`.
BACKEND_MARKERS = {b.name: b.marker for b in BACKENDS if b.marker is not None}
# The step that judges every backend a service needs, one check per service: its depends_on
# is what config/names.py says the service depends on, never written in the catalog.
RELATED_SYSTEMS = ".related-systems"
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
class FailureMode:
    """One way a check fails whose fixes differ from the check's own (catalog.toml's
    [checks."<id>".modes.<name>]): the check's Finding names it (``mode=``), and these fixes
    and commands replace the check's own (each defaults to the check's own where the entry
    leaves it out). Its impact class is the check's to name, as for any Finding."""

    name: str
    fixes: tuple[str, ...]  # the words, already looked up
    commands: tuple[str, ...]  # templates, see fill_commands


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
    # Its failure modes by name (FailureMode): fixes that depend on how it failed.
    modes: dict[str, FailureMode] = field(default_factory=dict, hash=False)

    def mode(self, name: str) -> FailureMode:
        try:
            return self.modes[name]
        except KeyError:
            raise CatalogError(f"check {self.id}: no failure mode {name!r} in the catalog "
                               f"(it has: {', '.join(self.modes) or 'none'})") from None

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
    kind: str  # a probes.FailureKind value, or ANY_KIND
    fixes: tuple[str, ...]  # the words, already looked up
    commands: tuple[str, ...]  # templates; {failed_host} is the failing target's host
    # The impact class of a check failed only by failures with such an entry (None: the
    # check's own): a dependency the checks only look through (the Kubernetes API) is rated
    # alike by every check that cannot read it.
    impact: str | None = None


ANY_DEPENDENCY = "*"
ANY_KIND = "*"


@dataclass(frozen=True)
class Catalog:
    severities: dict[str, Severity]
    checks: dict[str, CheckEntry]
    failure_fixes: dict[tuple[str, str], KindFix] = field(default_factory=dict)

    def fix_for(self, dependency: str, kind: str) -> KindFix | None:
        """The fix for a ``kind`` failure of ``dependency``: its own entry, else the
        dependency's for any kind, else the one for any dependency, else none."""
        return (self.failure_fixes.get((dependency, kind))
                or self.failure_fixes.get((dependency, ANY_KIND))
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
    text = resources.files(__package__ or "").joinpath("catalog.toml").read_text("utf-8")
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
        own_fixes = tuple(fixes[f] for f in c.get("fixes", []))
        own_commands = tuple(c.get("commands", []))
        depends_on = _depends_on(check_id, c)
        strange = [d for d in depends_on if d not in BACKEND_MARKERS and d not in SERVICES]
        if strange or c["service"] not in SERVICES:
            raise CatalogError(f"check {check_id}: unknown service or dependency "
                               f"{strange or c['service']!r}")
        checks[check_id] = CheckEntry(
            id=check_id, service=c["service"], step=c["step"], title=c["title"],
            impact=c["impact"], impact_statement=statement.strip(), depends_on=depends_on,
            fixes=own_fixes, commands=own_commands, writes=c.get("writes"),
            modes=parse_modes(check_id, c.get("modes", {}), fixes, own_fixes, own_commands),
        )
    return Catalog(severities=severities, checks=checks,
                   failure_fixes=parse_failure_fixes(raw.get("failure_fixes", {}), fixes,
                                                     checks, impacts))


def _depends_on(check_id: str, raw: dict[str, Any]) -> tuple[str, ...]:
    """What a check stands on: its entry's depends_on; a service's related-systems check,
    every backend config/names.py says the service depends on."""
    if not check_id.endswith(RELATED_SYSTEMS):
        return tuple(raw.get("depends_on", []))
    if "depends_on" in raw:
        raise CatalogError(f"check {check_id}: no depends_on here: a related-systems check "
                           "stands on what config/names.py's BACKENDS say its service uses")
    return tuple(dependencies_of(raw["service"]))


def parse_modes(check_id: str, raw: dict[str, Any], fixes: dict[str, str],
                own_fixes: tuple[str, ...], own_commands: tuple[str, ...],
                ) -> dict[str, FailureMode]:
    modes: dict[str, FailureMode] = {}
    for name, m in raw.items():
        where = f"check {check_id} mode {name}"
        strange = sorted(set(m) - {"fixes", "commands"})
        if strange:
            # Its class is the Finding's to name: the catalog maps classes to severities.
            raise CatalogError(f"{where}: unknown keys {strange} (a mode has fixes and "
                               "commands)")
        unknown = [f for f in m.get("fixes", []) if f not in fixes]
        if unknown:
            raise CatalogError(f"{where}: unknown fixes {unknown}")
        for template in m.get("commands", []):
            check_command(where, template)
        modes[name] = FailureMode(
            name=name,
            fixes=tuple(fixes[f] for f in m["fixes"]) if "fixes" in m else own_fixes,
            commands=tuple(m["commands"]) if "commands" in m else own_commands)
    return modes


def parse_failure_fixes(raw: dict[str, Any], fixes: dict[str, str],
                        checks: dict[str, CheckEntry], impacts: set[str],
                        ) -> dict[tuple[str, str], KindFix]:
    dependencies = {d for c in checks.values() for d in c.depends_on} | {ANY_DEPENDENCY}
    kinds = {k.value for k in FailureKind} | {ANY_KIND}
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
        impact = f.get("impact")
        if impact is not None and impact not in impacts:
            raise CatalogError(f"failure_fixes.{key}: unknown impact {impact!r}")
        parsed[(dependency, kind)] = KindFix(
            dependency=dependency, kind=kind, fixes=tuple(fixes[name] for name in f["fixes"]),
            commands=tuple(f["commands"]), impact=impact)
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
# scale to, the stuck sagas): a command that needs one the finding did not give is left out
# rather than shown with a hole.
FINDING_NAMES = frozenset({"pod", "replicas", "read_capacity", "write_capacity",
                           "error_log_file", "saga_ids", "saga_ids_pattern",
                           "saga_logs_window"})
# The same for what only some environments name (an optional key: order-service's saga
# retry endpoint): a command the environment gives no name for is left out.
OPTIONAL_NAMES = FINDING_NAMES | {"saga_retry_url"}


def names_in(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def fill_commands(templates: tuple[str, ...], names: dict[str, str]) -> list[str]:
    formatter = string.Formatter()
    return [formatter.vformat(t, (), _KeepUnknown(names)) for t in templates]
