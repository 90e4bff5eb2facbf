"""What a run leaves on disk, in order, before anything is posted: summary.json, then for a
failing run incident.md (the runbook's Initial Notification per root cause, with details: a
ticket's body), the CI step summary where one is asked for, and Allure's run files.

Plain functions: the plugin calls write_outputs once, on the controller, at the session's end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from unibazzar_health.config.redaction import Redactor
from unibazzar_health.reports.allure_report import write_run_files
from unibazzar_health.reports.messages import incident_markdown
from unibazzar_health.verdict.model import Summary
from unibazzar_health.verdict.summary import render, write_json

INCIDENT_FILE = "incident.md"


@dataclass(frozen=True)
class Outputs:
    summary: Path
    incident: Path | None


def write_text(path: Path, text: str) -> Path:
    """Atomic, like write_json: a reader never sees half a file."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)
    return path


def step_summary(summary: Summary, incident: str | None) -> str:
    """What a CI job's page shows: the incident's Markdown, or the healthy verdict."""
    if incident:
        return incident + "\n"
    return "## UniBazzar health checks\n\n" + "\n".join(
        f"    {line}" for line in render(summary)) + "\n"


def write_outputs(summary: Summary, reports_dir: Path, redactor: Redactor,
                  environ: Mapping[str, str], alluredir: Path | None = None) -> Outputs:
    summary_path = write_json(reports_dir / "summary.json", summary.to_dict())
    incident_path = reports_dir / INCIDENT_FILE
    incident = None
    if summary.verdict.status == "failing":
        incident = redactor.text(incident_markdown(summary))
        write_text(incident_path, incident)
    else:
        # A healthy or incomplete run must not leave the last incident's body behind.
        incident_path.unlink(missing_ok=True)
    target = environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(redactor.text(step_summary(summary, incident)))
    if alluredir is not None:
        write_run_files(alluredir, summary, environ)
    return Outputs(summary_path, incident_path if incident else None)
