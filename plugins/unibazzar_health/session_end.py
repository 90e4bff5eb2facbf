"""The controller's side of a checks run's end: every check's result gathered as it arrives
(ResultCollector), then at session end the summary, its outputs and the exit status, the
posting started beside the verdict's printing, and the verdict on the terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unibazzar_health.config.names import SERVICES
from unibazzar_health.distribution import group_of
from unibazzar_health.options import is_worker
from unibazzar_health.reports.gate import exit_status, explain
from unibazzar_health.run_state import RUN_KEY, RunState
from unibazzar_health.verdict.policy import now
from unibazzar_health.verdict.results import PROPERTY_KEY, CheckResult, Outcome

# Loaded by every pytest run (the pytest11 entry point): the summary's model, what writes,
# shows and posts it and the incidents' settings bring pydantic, so they are imported inside
# the functions, which run only for a run that judged a check.
if TYPE_CHECKING:
    from unibazzar_health.config.environment import Environment


class ResultCollector:
    """Controller side: every check's result as it arrives, from this process or a worker."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # tryfirst: the evidence-sized JSON is removed before JUnit XML writes the properties.
        kept = []
        for key, value in report.user_properties:
            if key == PROPERTY_KEY:
                self.state.results[report.nodeid] = CheckResult.from_dict(json.loads(str(value)))
            else:
                kept.append((key, value))
        report.user_properties = kept
        when: str = report.when  # xdist's crash report says "???", outside pytest's type
        if when == "???" and report.failed and report.nodeid not in self.state.results:
            # xdist's report for the test a worker died running: no result of ours rides on
            # it. The check ran nowhere: broken, so the verdict cannot read healthy.
            self.state.results[report.nodeid] = crashed_result(report.nodeid,
                                                               str(report.longrepr))
        if report.failed and not hasattr(report, "wasxfail"):
            # As pytest counts session.testsfailed: a check's failed setup or call is its
            # result's; anything else failed outside every verdict.
            if report.nodeid in self.state.results and when in ("setup", "call", "???"):
                self.state.failed_reports_of_checks += 1
            else:
                self.state.other_failures.append(
                    report.nodeid if when == "call" else f"{report.nodeid} ({when})")


def crashed_result(nodeid: str, why: str) -> CheckResult:
    service = group_of(nodeid)
    return CheckResult(id=nodeid, service=service if service in SERVICES else "unknown",
                       step="(the process running it crashed)", title=nodeid, nodeid=nodeid,
                       outcome=Outcome.BROKEN, message=why.strip().splitlines()[0][:300])


def finish_session(session: pytest.Session) -> None:
    """pytest_sessionfinish: the summary, its outputs, the exit status, then the posting."""
    config = session.config
    if is_worker(config) or RUN_KEY not in config.stash:
        return
    state = config.stash[RUN_KEY]
    if not state.results or state.env is None:
        return
    # Only a run that judged a check builds a summary (pydantic's models: verdict/model.py).
    from unibazzar_health.reports.outputs import write_outputs
    from unibazzar_health.verdict.summary import RunInfo, build_summary

    # Stopped by hand (Ctrl-C) or by -x: what did not run is no evidence of health.
    interrupted = (session.exitstatus == pytest.ExitCode.INTERRUPTED
                   or bool(session.shouldstop) or bool(session.shouldfail))
    others = list(state.other_failures)
    uncounted = session.testsfailed - state.failed_reports_of_checks - len(others)
    if uncounted > 0:
        # Failed before our collector listened (a collection error, run on with
        # --continue-on-collection-errors): pytest counted it, and so do we.
        others.append(f"{uncounted} failure(s) outside the checks (collection)")
    run = RunInfo(environment=state.env.name, environment_file=str(state.env.path),
                  started_at=state.started_at, finished_at=now(),
                  arguments=[state.redactor.text(a) for a in sys.argv[1:]],
                  version=_version(), interrupted=interrupted, run_mode=state.run_mode,
                  other_failures=[state.redactor.text(o) for o in others])
    # An interrupted run neither opens nor resolves an incident.
    poster = None if interrupted else _poster(config, state)
    state.summary = build_summary(list(state.results.values()), state.catalog, run,
                                  _remembered(response(state.env), poster, state))
    if poster is not None and (silenced := poster.silenced(state.summary)):
        state.summary = state.summary.model_copy(update={"silenced": silenced})
    written = write_outputs(state.summary, state.reports_dir, state.redactor, os.environ,
                            _alluredir(config))
    state.summary_path, state.incident_path = written.summary, written.incident
    metrics_file, pushgateway = (config.option.unibazzar_metrics_file,
                                 config.option.unibazzar_pushgateway)
    if metrics_file or pushgateway:
        from unibazzar_health.reports.metrics import export

        state.metrics_targets = (Path(metrics_file) if metrics_file else None, pushgateway)
        state.metrics_lines = export(state.summary, *state.metrics_targets)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        session.exitstatus = exit_status(state.summary, state.fail_on)
    if poster is not None:
        _start_posting(state, poster)


def _start_posting(state: RunState, poster: Any) -> None:
    """After the summary is on disk and the exit status decided: posting changes neither, is
    bounded by its own budget ([notify] budget), and runs beside the printing of the
    verdict, never in front of it (joined in finish_posting)."""
    import threading

    summary = state.summary

    def post() -> None:
        state.posting = poster.post(summary)
        poster.write(state.posting)

    state.posting_thread = threading.Thread(target=post, name="unibazzar-posting", daemon=True)
    state.posting_budget = poster.budget
    state.posting_thread.start()


def finish_posting(state: RunState) -> None:
    """Wait for this run's posting (bounded: its budget and a margin for the store), once."""
    thread, state.posting_thread = state.posting_thread, None
    if thread is not None:
        thread.join(state.posting_budget + 10.0)
        if state.posting is not None and any(state.metrics_targets) and state.summary:
            # The deliveries' fate (a refused one above all) is a metric an alert can watch.
            from unibazzar_health.reports.metrics import export

            failed = [line for line in export(state.summary, *state.metrics_targets,
                                              posting=state.posting.to_dict())
                      if "failed" in line or "cannot" in line]
            state.posting.notes.extend(failed)


def _poster(config: pytest.Config, state: RunState) -> Any:
    """The run's incident posting (incidents/posting.py), or None where the environment
    keeps no incidents (no [notify] nor [incident_state]) or --no-post says so."""
    from unibazzar_health.incidents.config import enabled

    if state.env is None or config.option.unibazzar_no_post or not enabled(state.env):
        return None
    from unibazzar_health.incidents.posting import Poster

    return Poster(state.env, state.run_mode, state.reports_dir, state.redactor,
                  dry_run=config.option.unibazzar_dry_run)


def _remembered(answer: Any, poster: Any, state: RunState) -> Any:
    """The Response, with when the incident began where the store remembers it (read only,
    before the summary is built)."""
    import dataclasses

    failing = [r.id for r in state.results.values() if r.outcome is Outcome.FAILED]
    began = poster.first_failure_at(failing) if poster is not None else None
    return dataclasses.replace(answer, first_failure_at=began) if began else answer


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unibazzar-health")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _alluredir(config: pytest.Config) -> Path | None:
    chosen = config.getoption("allure_report_dir", None)
    return Path(chosen) if chosen else None


def response(env: Environment) -> Any:
    """Who answers and where, as the summary names them (summary.Response); the contacts and
    the calendar are built where the incident policy builds them."""
    from unibazzar_health.incidents.config import business_calendar, contacts
    from unibazzar_health.verdict.summary import Response

    spec = env.spec
    return Response(ic=spec.oncall.primary, war_room=spec.report.war_room,
                    report_url=spec.report.url, runbook_url=spec.report.runbook_url,
                    contacts=contacts(spec), escalation_minutes=spec.escalation.minutes(),
                    calendar=business_calendar(spec))


def show_verdict(terminalreporter: Any, config: pytest.Config) -> None:
    """pytest_terminal_summary: the verdict, the alerts, where the outputs went, the exit
    status explained, then the posting's outcome once it finished."""
    state = config.stash.get(RUN_KEY, None)
    if state is None or state.summary is None:
        return
    from unibazzar_health.verdict.summary import render

    status = state.summary.verdict.status
    colour = {"failing": {"red": True}, "incomplete": {"yellow": True}}.get(status, {"green": True})
    terminalreporter.section("UniBazzar incident verdict", sep="=", bold=True, **colour)
    lines = render(state.summary)
    terminalreporter.write_line(lines[0], bold=True, **colour)
    for line in lines[1:]:
        terminalreporter.write_line(line)
    if state.incident_path is not None:
        from unibazzar_health.reports.messages import alerts

        for message in alerts(state.summary):
            terminalreporter.write_line("")
            for line in message.lines:
                terminalreporter.write_line(state.redactor.text(line), bold=True)
        terminalreporter.write_line("")
        terminalreporter.write_line(f"incident: {state.incident_path} (the alert with its "
                                    "details, for the ticket)")
    terminalreporter.write_line(f"summary: {state.summary_path}")
    for line in state.metrics_lines:
        terminalreporter.write_line(state.redactor.text(line))
    exit_code = exit_status(state.summary, state.fail_on)
    terminalreporter.write_line(explain(state.summary, state.fail_on, exit_code))
    finish_posting(state)
    if state.posting is not None:
        for line in state.posting.lines():
            terminalreporter.write_line(state.redactor.text(line))
