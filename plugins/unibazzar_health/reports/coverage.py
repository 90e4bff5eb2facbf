"""Runbook coverage: every actionable line of the runbook (runbook.md, shipped with the
package) and what automates it — checks, features — or why it stays manual.

    python -m unibazzar_health coverage [--markdown]

The lines are read from the runbook itself, so a runbook edit shows up as a line that
coverage.toml does not answer for; coverage.toml answers with references that are checked:
`check:<id>` (a catalog check), `checks:<step>` (every check of a platform step, e.g.
`checks:related-systems`), `mode:<id>/<mode>` (one failure mode of a check),
`feature:<name>` (FEATURES below), or `manual:<why>`. A common fix's check, step and mode
references must offer that fix, word for word (a check that offers it only in some failure
modes counts); each common fix is printed with where the catalog offers it, by check, mode
and kind of probe failure, so a fix moved to the failure it fits shows here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from unibazzar_health.verdict.catalog import Catalog, CheckEntry, load_catalog

# What automates a runbook line besides a check, and where it lives.
FEATURES = {
    "severity-policy": ("verdict/severity.py", "impact classes to SEV1-SEV4; the outage rule"),
    "response-times": ("verdict/policy.py", "respond_by / next_update from the runbook's times"),
    "initial-notification": ("reports/messages.py", "the Initial Notification, per root cause"),
    "status-update": ("reports/messages.py", "the Status Update with its deltas"),
    "resolution-notification": ("reports/messages.py", "the Resolution with duration, post-mortem"),
    "incident-md": ("reports/outputs.py", "reports/incident.md: the ticket's body"),
    "escalation": ("verdict/summary.py", "internal level by severity and time; external teams"),
    "root-causes": ("verdict/summary.py", "one incident per dependency behind several services"),
    "terminal-verdict": ("verdict/summary.py",
        "the verdict, fixes and next commands on the terminal"),
    "next-commands": ("verdict/results.py",
        "the runbook's commands filled in, pinned to the cluster"),
    "recent-changes": ("verdict/summary.py", "CHANGE lines with the rollback when failing"),
    "allure-report": ("reports/allure_report.py", "the single-file report to link from the ticket"),
    "fail-on-gate": ("reports/gate.py", "exit status by severity for CI"),
    "shared-readings": ("judges/shared.py",
        "one reading per run of a measurement two checks judge"),
    "service-context": ("judges/service_context.py", "a failing check's service: last log lines, "
                                              "CPU and memory against limits"),
    "incident-lifecycle": ("incidents/lifecycle.py", "alert once, update on cadence, resolve"),
    "paging": ("incidents/notifiers/pagerduty.py", "PagerDuty trigger/resolve, one dedup key"),
    "chat-posting": ("incidents/notifiers/slack/__init__.py", "the runbook's messages in Slack"),
    "tracking-ticket": ("incidents/notifiers/ticket.py", "one ticket per incident, commented, "
                                                         "closed"),
    "timeline": ("incidents/timeline.py", "an incident's timeline and post-mortem draft"),
    "acknowledgement": ("incidents/lifecycle.py", "an acknowledged incident stops escalating "
                                                  "until it gets worse or the ack times out"),
    "secondary-paging": ("incidents/lifecycle.py", "Level 1 to [oncall] secondary when "
                                                   "nobody acknowledged in time"),
    "slack-thread": ("incidents/notifiers/slack/thread.py", "one Slack thread per incident, "
                                                           "its root edited as it goes"),
}

# What a person runs for a line the runbook gives people (`command:<name>`).
COMMANDS = {
    "incident ack": "acknowledge: escalation pauses, PagerDuty is acknowledged",
    "incident ic": "assign the Incident Commander, or hand over",
    "incident note": "an action taken: the next Status Update carries it",
    "incident resolve": "resolved by hand: the next run confirms or reopens it",
    "incident silence": "a timed silence of an incident's checks",
    "incident list": "the open incidents, their IC and who acknowledged them",
    "notify test": "a test page through every notifier",
    "timeline": "an incident's timeline, people's events in it",
    "postmortem": "the post-mortem draft with the runbook's checklists, due dates filled in",
    "coverage": "this report",
}

KINDS = ("severity", "initial-response", "investigation", "common-fix", "template",
         "escalation", "post-incident", "contact", "command")


@dataclass(frozen=True)
class RunbookLine:
    kind: str
    context: str  # the heading or label it sits under
    text: str

    @property
    def key(self) -> str:
        return f"{self.context} / {self.text}"


def runbook_text() -> str:
    return resources.files(__package__ or "").joinpath("runbook.md").read_text("utf-8")


def actionable_lines(markdown: str) -> list[RunbookLine]:
    """The runbook's lines that ask for something to be done or decided."""
    lines: list[RunbookLine] = []
    section = subsection = label = ""
    in_code = False
    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            if section == "Quick Reference Commands" and line and not line.startswith("#"):
                lines.append(RunbookLine("command", subsection, line))
            continue
        if line.startswith("## "):
            section, subsection, label = line[3:], "", ""
            continue
        if line.startswith("### "):
            subsection, label = line[4:], ""
            if section == "Communication Templates":
                lines.append(RunbookLine("template", section, subsection))
            continue
        bold = re.fullmatch(r"\*\*(.+?)\*\*:?(.*)", line)
        if bold:
            label = bold.group(1).rstrip(":")
            continue
        item = re.fullmatch(r"(?:- \[ \] |- |\d+\. )(.+)", line)
        if not item:
            continue
        text = re.sub(r"\*\*(.+?)\*\*", r"\1", item.group(1))
        kind = _kind(section, subsection, label)
        if kind:
            context = " · ".join(p for p in (subsection, label) if p) or section
            lines.append(RunbookLine(kind, context, text))
    return lines


def _kind(section: str, subsection: str, label: str) -> str | None:
    if section == "Incident Classification" and label.startswith("SEV"):
        return "severity"
    if section == "Initial Response Procedure":
        # Its third part lists investigation steps that no service section repeats.
        return "investigation" if subsection.startswith("3. Investigation") else \
            "initial-response"
    if section == "Service-Specific Procedures":
        return {"Investigation Steps": "investigation", "Common Fixes": "common-fix"}.get(label)
    if section == "Escalation Procedures":
        return "escalation"
    if section == "Post-Incident Procedures":
        return "post-incident"
    if section == "Emergency Contacts":
        return "contact"
    return None


@dataclass(frozen=True)
class Coverage:
    line: RunbookLine
    by: tuple[str, ...]
    # For a common fix: where the catalog offers it ("<check>", "<check> · mode <m>",
    # "failure <dependency>.<kind>"), and the failures of those checks' own dependencies
    # that get other fixes in its place (PostgreSQL refusing is no exhausted pool).
    offered: tuple[str, ...] = ()
    replaced_on: tuple[str, ...] = ()

    @property
    def manual(self) -> bool:
        return all(ref.startswith("manual:") for ref in self.by)

    @property
    def mark(self) -> str:
        """auto: the suite does it; person: a person does it, with a command of ours;
        partly: the suite does part, a person the rest; manual: people alone."""
        kinds = {ref.partition(":")[0] for ref in self.by}
        if "command" in kinds:
            return "person"
        if kinds == {"manual"}:
            return "manual"
        return "partly" if "manual" in kinds else "auto"


class CoverageError(Exception):
    pass


def load_mapping() -> dict[str, tuple[str, ...]]:
    text = resources.files(__package__ or "").joinpath("coverage.toml").read_text("utf-8")
    raw: dict[str, Any] = tomllib.loads(text)
    return {key: tuple(refs) for key, refs in raw.get("lines", {}).items()}


def coverage(markdown: str | None = None,
             mapping: dict[str, tuple[str, ...]] | None = None) -> list[Coverage]:
    """Every actionable line with its references, checked: an unknown check or feature, a
    line coverage.toml does not answer for, or an answer for a line the runbook no longer
    has is a CoverageError."""
    lines = actionable_lines(markdown if markdown is not None else runbook_text())
    mapping = load_mapping() if mapping is None else mapping
    catalog = load_catalog()
    checks = catalog.checks
    steps = {check_id.split(".", 1)[1] for check_id in checks}
    modes = {f"{c.id}/{m}" for c in checks.values() for m in c.modes}
    problems = [f"not answered in coverage.toml: [{line.kind}] {line.key!r}"
                for line in lines if line.key not in mapping]
    problems += [f"coverage.toml answers for a line the runbook does not have: {key!r}"
                 for key in sorted(set(mapping) - {line.key for line in lines})]
    known: set[str] = set()
    for key, refs in mapping.items():
        for ref in refs:
            kind, _, name = ref.partition(":")
            ok = {"check": name in checks, "checks": name in steps, "mode": name in modes,
                  "feature": name in FEATURES, "command": name in COMMANDS,
                  "manual": bool(name.strip())}.get(kind, False)
            if ok:
                known.add(ref)
            else:
                problems.append(f"{key!r}: unknown reference {ref!r}")
    for line in lines:
        if line.kind == "common-fix" and line.key in mapping:
            problems += [f"{line.key!r}: {ref!r} does not offer {line.text!r}"
                         for ref in mapping[line.key]
                         if ref in known and not _offers(ref, line.text, catalog)]
    if problems:
        raise CoverageError("\n".join(problems))
    return [Coverage(line, mapping[line.key], *((offered_by(line.text, catalog),
                                                 replaced_on(line.text, catalog))
                                                if line.kind == "common-fix" else ()))
            for line in lines]


def _fixes_of(entry: CheckEntry) -> dict[str, tuple[str, ...]]:
    """A check's fixes: its own ("") and each failure mode's."""
    return {"": entry.fixes} | {name: mode.fixes for name, mode in entry.modes.items()}


def _offers(ref: str, fix: str, catalog: Catalog) -> bool:
    """Whether a check, step or mode reference offers ``fix`` (other references: yes)."""
    kind, _, name = ref.partition(":")
    if kind == "check":
        return any(fix in fixes for fixes in _fixes_of(catalog.check(name)).values())
    if kind == "checks":
        return all(any(fix in fixes for fixes in _fixes_of(entry).values())
                   for check_id, entry in catalog.checks.items()
                   if check_id.split(".", 1)[1] == name)
    if kind == "mode":
        check_id, _, mode = name.partition("/")
        return fix in catalog.check(check_id).mode(mode).fixes
    return True


def offered_by(fix: str, catalog: Catalog) -> tuple[str, ...]:
    """Where the catalog offers ``fix``: each check (its own fixes) and failure mode, and
    each kind of probe failure."""
    found = [f"{entry.id}" + (f" · mode {mode}" if mode else "")
             for entry in catalog.checks.values()
             for mode, fixes in _fixes_of(entry).items() if fix in fixes]
    found += [f"failure {f.dependency}.{f.kind}" for f in catalog.failure_fixes.values()
              if fix in f.fixes]
    return tuple(found)


def replaced_on(fix: str, catalog: Catalog) -> tuple[str, ...]:
    """The kinds of failure of a dependency of a check offering ``fix`` that show other
    fixes in its place (results.remedies): where the check's own words would be wrong."""
    dependencies = {d for entry in catalog.checks.values()
                    if any(fix in fixes for fixes in _fixes_of(entry).values())
                    for d in entry.depends_on}
    return tuple(sorted(f"{f.dependency}.{f.kind}" for f in catalog.failure_fixes.values()
                        if f.dependency in dependencies and fix not in f.fixes))


def _described(ref: str) -> str:
    kind, _, name = ref.partition(":")
    if kind == "command":
        return f"`python -m unibazzar_health {name}` ({COMMANDS[name]})"
    return ref


def render(rows: list[Coverage]) -> list[str]:
    out: list[str] = []
    for kind in KINDS:
        of_kind = [r for r in rows if r.line.kind == kind]
        if not of_kind:
            continue
        counts = {mark: sum(r.mark == mark for r in of_kind)
                  for mark in ("auto", "person", "partly", "manual")}
        out.append(f"{kind}: {len(of_kind)} lines: " + ", ".join(
            f"{n} {label}" for label, n in (
                ("automated", counts["auto"]), ("by a person with a command", counts["person"]),
                ("partly automated", counts["partly"]), ("manual", counts["manual"])) if n))
        for row in of_kind:
            out.append(f"  [{row.mark:6}] {row.line.context}: {row.line.text}")
            out.append(f"           {'; '.join(_described(ref) for ref in row.by)}")
            if row.line.kind == "common-fix":
                out.append(f"           offered by: {', '.join(row.offered) or 'nothing'}")
                if row.replaced_on:
                    out.append(f"           not when the failure is: {', '.join(row.replaced_on)} "
                               "(their own fixes instead)")
    return out
