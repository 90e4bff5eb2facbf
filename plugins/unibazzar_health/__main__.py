"""Commands over a run's outputs, for a person or a CI step:

    python -m unibazzar_health message alert SUMMARY
    python -m unibazzar_health message update FIRST PREVIOUS CURRENT
    python -m unibazzar_health message resolved FIRST LAST_FAILING HEALTHY [--post-mortem URL]
    python -m unibazzar_health report [--results DIR] [--output DIR] [--history FILE]
    python -m unibazzar_health coverage
    python -m unibazzar_health run [PYTEST OPTIONS]    (also: unibazzar-health run ...)
    python -m unibazzar_health timeline [--env-file=PATH | --state FILE] [INCIDENT_KEY]
    python -m unibazzar_health postmortem [--env-file=PATH | --state FILE] [INCIDENT_KEY]
    python -m unibazzar_health notify test [--env NAME | --env-file=PATH] [--only NOTIFIER]
    python -m unibazzar_health incident list|ack|ic|note|resolve|silence …   (incident -h)

SUMMARY files are summary.json files written by runs (reports/summary.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from unibazzar_health.runner import main as run_checks
from unibazzar_health.verdict.model import Summary

# Each command's modules are imported when that command runs: `run` (the image's entrypoint)
# execs pytest at once, and would otherwise import all of them (~30 ms) for nothing.


def _summary(path: str) -> Summary:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such summary file") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not a summary (not JSON: {exc})") from None
    if not isinstance(data, dict) or "verdict" not in data:
        raise SystemExit(f"{path}: not a summary (no 'verdict')")
    try:
        return Summary.model_validate(data)
    except ValidationError as exc:
        raise SystemExit(f"{path}: not a summary ({exc.error_count()} field(s) not as "
                         f"docs/summary.schema.json says: {exc.errors()[0]['loc']})") from None


def _message(args: argparse.Namespace) -> int:
    from unibazzar_health.reports import messages

    summaries = [_summary(p) for p in args.summaries]
    expected = {"alert": 1, "update": 3, "resolved": 3}[args.kind]
    if len(summaries) != expected:
        raise SystemExit(f"message {args.kind} takes {expected} summary file(s), "
                         f"got {len(summaries)}")
    if args.kind == "alert":
        rendered = messages.alerts(summaries[0])
        if not rendered:
            print(f"{args.summaries[0]}: healthy, nothing to alert", file=sys.stderr)
            return 1
    elif args.kind == "update":
        rendered = [messages.update(summaries[0], summaries[1], summaries[2])]
    else:
        rendered = [messages.resolved(summaries[0], summaries[1], summaries[2],
                                      post_mortem_url=args.post_mortem)]
    for message in rendered:
        print(message.markdown() if args.markdown else message.text)
        print()
    return 0


def _report(args: argparse.Namespace) -> int:
    from unibazzar_health.reports.allure_report import (
        ReportError,
        allure_command,
        build_single_file,
    )

    root = Path(args.root)
    try:
        index = build_single_file(Path(args.results), Path(args.output), Path(args.history),
                                  args.name, allure_command(root, os.environ))
    except ReportError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print(index)
    return 0


def _coverage(args: argparse.Namespace) -> int:
    from unibazzar_health.reports.coverage import CoverageError, coverage, render

    try:
        rows = coverage()
    except CoverageError as exc:
        print(f"coverage: {exc}", file=sys.stderr)
        return 1
    print("\n".join(render(rows)))
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["run"]:
        # Everything after `run` is pytest's, options included: argparse would claim them.
        return run_checks(arguments[1:])
    parser = argparse.ArgumentParser(prog="python -m unibazzar_health", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    message = commands.add_parser("message", help="a runbook message from summary files")
    message.add_argument("kind", choices=("alert", "update", "resolved"))
    message.add_argument("summaries", nargs="+", metavar="SUMMARY")
    message.add_argument("--markdown", action="store_true",
                         help="the message as a code block with its details (Markdown)")
    message.add_argument("--post-mortem", metavar="URL", help="resolved: the post-mortem's link")
    message.set_defaults(run=_message)
    report = commands.add_parser("report", help="the single-file Allure HTML report")
    report.add_argument("--results", default="reports/allure-results",
                        help="the --alluredir of the run (default: reports/allure-results)")
    report.add_argument("--output", default="reports/allure-report")
    report.add_argument("--history", default="reports/allure-history.jsonl",
                        help="kept between builds: the report's trend")
    report.add_argument("--name", default="UniBazzar health checks")
    report.add_argument("--root", default=".", help="the project folder (tools/allure)")
    report.set_defaults(run=_report)
    cover = commands.add_parser("coverage", help="each actionable runbook line and what "
                                                 "automates it, or 'manual'")
    cover.set_defaults(run=_coverage)
    from unibazzar_health.incidents.timeline import add_commands

    add_commands(commands)  # timeline, postmortem: incidents from the store
    from unibazzar_health.incidents.notify_test import add_command

    add_command(commands)  # notify test: a test page through each notifier
    from unibazzar_health.incidents.commands import add_commands as add_incident_commands

    add_incident_commands(commands)  # incident ack, ic, note, resolve, silence, list
    commands.add_parser("run", help="the checks installed with this package, run by pytest: "
                                    "run [pytest options, e.g. -m order-service --env-file=F]")
    args = parser.parse_args(arguments)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
