"""Allure, wired for tickets: what each check's result carries (labels, links, description,
evidence), the run's environment/categories/executor files, and the offline single-file HTML
report built with Allure 3 (tools/allure, installed by scripts/bootstrap).

Plain functions over the summary and its checks (verdict/model.py); the pytest side
(allure.dynamic calls during a check's report) is in allure_hooks.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unibazzar_health.verdict.model import Check, Summary
from unibazzar_health.verdict.severity import severity_of

# Allure's categories, matched on status and message: the ticket's reader sees a platform
# failure apart from our own broken check, a missed deadline, a budget that ran out.
CATEGORIES = [
    {"name": "Budget exhausted (not run)", "matchedStatuses": ["skipped"],
     "messageRegex": ".*not run: budget exhausted.*"},
    {"name": "Not configured in this environment", "matchedStatuses": ["skipped"],
     "messageRegex": ".*not configured.*"},
    {"name": "Deadline exceeded", "matchedStatuses": ["failed"],
     "messageRegex": "(?s).*(did not answer within the deadline|took longer than its).*"},
    {"name": "Platform failure", "matchedStatuses": ["failed"]},
    {"name": "Broken check (the verdict is incomplete)", "matchedStatuses": ["broken"]},
]

def _github(e: Mapping[str, str]) -> dict[str, str]:
    server = e.get("GITHUB_SERVER_URL", "https://github.com")
    return {"name": "GitHub Actions", "type": "github",
            "buildName": f"{e.get('GITHUB_WORKFLOW', '')} #{e.get('GITHUB_RUN_NUMBER', '')}",
            "buildUrl": f"{server}/{e.get('GITHUB_REPOSITORY', '')}/actions/runs/"
                        f"{e.get('GITHUB_RUN_ID', '')}"}


def _gitlab(e: Mapping[str, str]) -> dict[str, str]:
    return {"name": "GitLab CI", "type": "gitlab", "buildName": e.get("CI_JOB_NAME", ""),
            "buildUrl": e.get("CI_JOB_URL", "")}


def _jenkins(e: Mapping[str, str]) -> dict[str, str]:
    return {"name": "Jenkins", "type": "jenkins", "buildName": e.get("BUILD_TAG", ""),
            "buildUrl": e.get("BUILD_URL", "")}


# CI systems whose variables name the run that produced the results.
_EXECUTORS = {"GITHUB_ACTIONS": _github, "GITLAB_CI": _gitlab, "JENKINS_URL": _jenkins}


def labels(check: Check, allure_severity: str) -> list[tuple[str, str]]:
    """(label name, value) for one check: severity, UniBazzar / service / runbook step, a
    tag per backend it depends on."""
    found = [("severity", allure_severity), ("epic", "UniBazzar"),
             ("feature", check.service), ("story", check.step)]
    found += [("tag", d) for d in check.depends_on]
    return found


def description(check: Check) -> str:
    """Markdown: what failed, the runbook's fixes and the next commands."""
    lines = [f"**{check.title}** (`{check.id}`)"]
    if check.severity:
        lines.append(f"\n{check.severity} — impact: {check.impact}")
    if check.message:
        lines.append(f"\n{check.message}")
    if check.fixes:
        lines.append("\n**Fixes**\n" + "\n".join(f"- {fix}" for fix in check.fixes))
    if check.commands:
        lines.append("\n**Next commands**\n" + "\n".join(f"    {c}" for c in check.commands))
    return "\n".join(lines)


def write_run_files(results_dir: Path, summary: Summary,
                    environ: Mapping[str, str]) -> None:
    """environment.properties, categories.json and executor.json (where a CI's variables
    are present), beside the results."""
    results_dir.mkdir(parents=True, exist_ok=True)
    verdict = summary.verdict
    properties = {
        "environment": summary.environment,
        "verdict": verdict.status + (f" {verdict.severity}" if verdict.severity else ""),
        "checks": str(summary.counts.total),
        "started_at": summary.started_at,
        "unibazzar_health_version": summary.version,
    }
    (results_dir / "environment.properties").write_text(
        "".join(f"{k}={v}\n" for k, v in properties.items()), encoding="utf-8")
    (results_dir / "categories.json").write_text(json.dumps(CATEGORIES, indent=2),
                                                 encoding="utf-8")
    for variable, executor in _EXECUTORS.items():
        if environ.get(variable):
            (results_dir / "executor.json").write_text(json.dumps(executor(environ), indent=2),
                                                       encoding="utf-8")
            break


class ReportError(Exception):
    pass


# Allure 3 (3.18.0, the newest) embeds Google Analytics in every report with no switch to turn
# it off (allure3 issue 476), and a report linked from a ticket must not phone home: what would
# load from another host is cut out of the HTML after generation (its own code loads nothing).
_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
# src= / href= naming another host: http(s)://… or protocol-relative //…, quoted or not.
_REMOTE = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
# The inline bootstrap that goes with gtag.js (it queues the report's id for Google).
_ANALYTICS = re.compile(r"\bgtag\s*\(|\bdataLayer\b|googletagmanager", re.IGNORECASE)


def offline_html(html: str) -> str:
    """``html`` without a script or stylesheet (any <link>) from another host, nor the
    inline Google Analytics code: the report then opens from file:// with the network off."""

    def script(match: re.Match[str]) -> str:
        attributes, body = match.group(1), match.group(2)
        return "" if _REMOTE.search(attributes) or _ANALYTICS.search(body) else match.group(0)

    html = _SCRIPT.sub(script, html)
    return _LINK.sub(lambda m: "" if _REMOTE.search(m.group(0)) else m.group(0), html)


def allure_command(root: Path, environ: Mapping[str, str]) -> list[str]:
    """Allure 3's CLI: $UNIBAZZAR_ALLURE, else the copy scripts/bootstrap installs."""
    chosen = environ.get("UNIBAZZAR_ALLURE")
    if chosen:
        return [chosen]
    local = root.resolve() / "tools" / "allure" / "node_modules" / ".bin" / "allure"
    if not local.exists():
        raise ReportError(f"Allure 3 is not installed at {local}: run scripts/bootstrap, or "
                          "set UNIBAZZAR_ALLURE to an allure (3.x) command")
    return [str(local)]


def build_single_file(results_dir: Path, output_dir: Path, history: Path, name: str,
                      command: list[str], timeout_s: float = 120.0) -> Path:
    """The single-file HTML report (opens from file://, no server), with the history of
    earlier builds kept in ``history`` so a scheduled probe shows a trend."""
    if not results_dir.is_dir() or not any(results_dir.glob("*-result.json")):
        raise ReportError(f"{results_dir}: no Allure results (run the checks with "
                          f"--alluredir={results_dir})")
    output_dir.mkdir(parents=True, exist_ok=True)
    history.parent.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "output": str(output_dir.resolve()),
              "historyPath": str(history.resolve()),
              # The tree a ticket's reader wants: worst severity first, then service and
              # runbook step (Allure's default groups by test file).
              "plugins": {"awesome": {"options": {
                  "singleFile": True, "reportName": name,
                  "groupBy": ["severity", "feature", "story"]}}}}
    with tempfile.TemporaryDirectory(prefix="unibazzar-allure-") as tmp:
        rc = Path(tmp) / "allurerc.mjs"
        rc.write_text(f"export default {json.dumps(config, indent=2)};\n", encoding="utf-8")
        try:
            done = subprocess.run([*command, "generate", str(results_dir.resolve()),
                                   "--config", str(rc)], capture_output=True, text=True,
                                  timeout=timeout_s, cwd=tmp,
                                  env={**os.environ, "NO_COLOR": "1"})
        except subprocess.TimeoutExpired:
            raise ReportError(f"allure generate took longer than {timeout_s:g} s") from None
    index = output_dir / "index.html"
    if done.returncode != 0 or not index.exists():
        raise ReportError(f"allure generate failed (exit {done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[-500:]}")
    index.write_text(offline_html(index.read_text(encoding="utf-8")), encoding="utf-8")
    return index


def timing(allure_start_ms: int, duration_s: float,
           probing_from_s: float | None) -> tuple[int, int]:
    """Allure's start and stop (ms since the epoch) for a check, so that its duration is the
    check's own, summary.json's ``duration_s``: its probes ran ahead of its test, beside every
    other check's, and pytest's call (allure-pytest's start and stop) saw only the judging.
    It starts when its probes did (``probing_from_s``, epoch seconds), so Allure's timeline
    shows the checks probing side by side, as they ran."""
    start = allure_start_ms if probing_from_s is None else round(probing_from_s * 1000)
    return start, start + round(duration_s * 1000)


def annotate(check: Check, catalog: Any, env: Any, test: Any,
             probing_from_s: float | None = None) -> None:
    """Label, link and describe the current Allure test case as ``check`` (its result, as
    the summary holds it) says, attach its redacted evidence, and set its status to our
    outcome and its start and stop to the check's own time (``timing``). ``test`` is
    allure-pytest's current TestResult (its listener's), whose status and times we own
    from here."""
    import allure

    entry = catalog.check(check.id)
    level = check.severity or severity_of(entry.impact, catalog).level
    for name, value in labels(check, catalog.severities[level].allure):
        allure.dynamic.label(name, value)
    allure.dynamic.title(f"{check.service} · {check.title}")
    allure.dynamic.description(description(check))
    report = env.spec.report
    if report.runbook_url:
        allure.dynamic.link(report.runbook_url, name="runbook")
    if report.tms_pattern:
        allure.dynamic.testcase(report.tms_pattern.format(check.id), name=check.id)
    if check.evidence is not None or check.failures:
        failures = [f.model_dump(mode="json") for f in check.failures]
        allure.attach(json.dumps({"evidence": check.evidence, "failures": failures}, indent=2,
                                 ensure_ascii=False),
                      name="evidence (redacted)", attachment_type=allure.attachment_type.JSON)
    if check.context:
        allure.attach(json.dumps(check.context, indent=2, ensure_ascii=False),
                      name=f"{check.service}: last log lines, CPU and memory (redacted)",
                      attachment_type=allure.attachment_type.JSON)
    status = {"failed": "failed", "broken": "broken", "passed": "passed",
              "skipped": "skipped", "not-run": "skipped"}[check.outcome]
    if test is not None:
        test.status = status
        test.start, test.stop = timing(test.start, float(check.duration_s or 0.0),
                                       probing_from_s)
        if check.message and test.statusDetails is not None:
            test.statusDetails.message = check.message
