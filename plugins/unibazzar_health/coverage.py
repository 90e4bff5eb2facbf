"""Runbook coverage: every actionable line of the runbook (runbook.md, shipped with the
package) and what automates it — checks, features — or why it stays manual.

    python -m unibazzar_health coverage [--markdown]

The lines are read from the runbook itself, so a runbook edit shows up as a line that
coverage.toml does not answer for; coverage.toml answers with references that are checked:
`check:<id>` (a catalog check), `checks:<step>` (every check of a platform step, e.g.
`checks:related-systems`), `feature:<name>` (FEATURES below), or `manual:<why>`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

# What automates a runbook line besides a check, and where it lives.
FEATURES = {
    "severity-policy": ("severity.py", "impact classes to SEV1-SEV4; the outage rule"),
    "response-times": ("policy.py", "respond_by / next_update from the runbook's times"),
    "initial-notification": ("messages.py", "the Initial Notification, per root cause"),
    "status-update": ("messages.py", "the Status Update with its deltas"),
    "resolution-notification": ("messages.py", "the Resolution with duration, post-mortem"),
    "incident-md": ("outputs.py", "reports/incident.md: the ticket's body"),
    "escalation": ("summary.py", "internal level by severity and time; external teams"),
    "root-causes": ("summary.py", "one incident per dependency behind several services"),
    "terminal-verdict": ("summary.py", "the verdict, fixes and next commands on the terminal"),
    "next-commands": ("results.py", "the runbook's commands filled in, pinned to the cluster"),
    "recent-changes": ("summary.py", "CHANGE lines with the rollback when failing"),
    "allure-report": ("allure_report.py", "the single-file report to link from the ticket"),
    "fail-on-gate": ("gate.py", "exit status by severity for CI"),
    "shared-readings": ("shared.py", "one reading per run of a measurement two checks judge"),
    "service-context": ("service_context.py", "a failing check's service: last log lines, "
                                              "CPU and memory against limits"),
    "incident-lifecycle": ("incidents/lifecycle.py", "alert once, update on cadence, resolve"),
    "paging": ("incidents/notifiers/pagerduty.py", "PagerDuty trigger/resolve, one dedup key"),
    "chat-posting": ("incidents/notifiers/slack.py", "the runbook's messages in Slack"),
    "tracking-ticket": ("incidents/notifiers/ticket.py", "one ticket per incident, commented, "
                                                         "closed"),
    "timeline": ("incidents/timeline.py", "an incident's timeline and post-mortem draft"),
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
    return resources.files("unibazzar_health").joinpath("runbook.md").read_text("utf-8")


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

    @property
    def manual(self) -> bool:
        return all(ref.startswith("manual:") for ref in self.by)


class CoverageError(Exception):
    pass


def load_mapping() -> dict[str, tuple[str, ...]]:
    text = resources.files("unibazzar_health").joinpath("coverage.toml").read_text("utf-8")
    raw: dict[str, Any] = tomllib.loads(text)
    return {key: tuple(refs) for key, refs in raw.get("lines", {}).items()}


def coverage(markdown: str | None = None,
             mapping: dict[str, tuple[str, ...]] | None = None) -> list[Coverage]:
    """Every actionable line with its references, checked: an unknown check or feature, a
    line coverage.toml does not answer for, or an answer for a line the runbook no longer
    has is a CoverageError."""
    from unibazzar_health.catalog import load_catalog

    lines = actionable_lines(markdown if markdown is not None else runbook_text())
    mapping = load_mapping() if mapping is None else mapping
    checks = load_catalog().checks
    steps = {check_id.split(".", 1)[1] for check_id in checks}
    problems = [f"not answered in coverage.toml: [{line.kind}] {line.key!r}"
                for line in lines if line.key not in mapping]
    problems += [f"coverage.toml answers for a line the runbook does not have: {key!r}"
                 for key in sorted(set(mapping) - {line.key for line in lines})]
    for key, refs in mapping.items():
        for ref in refs:
            kind, _, name = ref.partition(":")
            ok = {"check": name in checks, "checks": name in steps,
                  "feature": name in FEATURES, "manual": bool(name.strip())}.get(kind, False)
            if not ok:
                problems.append(f"{key!r}: unknown reference {ref!r}")
    if problems:
        raise CoverageError("\n".join(problems))
    return [Coverage(line, mapping[line.key]) for line in lines]


def render(rows: list[Coverage]) -> list[str]:
    out: list[str] = []
    for kind in KINDS:
        of_kind = [r for r in rows if r.line.kind == kind]
        if not of_kind:
            continue
        automated = sum(not r.manual for r in of_kind)
        out.append(f"{kind}: {automated} of {len(of_kind)} automated")
        for row in of_kind:
            mark = "manual" if row.manual else "auto  "
            out.append(f"  [{mark}] {row.line.context}: {row.line.text}")
            out.append(f"           {'; '.join(row.by)}")
    return out
