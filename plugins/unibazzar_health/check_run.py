"""Each runbook check through pytest: marked from the catalog at collection, its observe
function started ahead of the assertions (every check this process runs, all at once, each
under its deadline), its test given what was observed, and its outcome made a result that
rides on the report as serialised data (to the controller's ResultCollector)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from unibazzar_health.activation import catalog
from unibazzar_health.distribution import SHARE_KEY, share_of
from unibazzar_health.judges.observer import BudgetExhausted, Observation
from unibazzar_health.options import is_worker
from unibazzar_health.run_state import ITEM_KEY, RUN_KEY, CheckItem, RunState
from unibazzar_health.verdict.catalog import CatalogError
from unibazzar_health.verdict.results import (
    PROPERTY_KEY,
    READ_ONLY_PREFIX,
    Outcome,
    build_result,
    classify,
)

# Loaded by every pytest run (the pytest11 entry point): judges.runbook (pydantic, through
# the settings), the checks' helpers and the backends' clients are imported inside the
# functions, which run only for a runbook check.


def mark_checks(config: pytest.Config, items: list[pytest.Item]) -> None:
    """pytest_collection_modifyitems: every runbook check's markers from its catalog entry,
    --read-only's skip, and its CheckItem on the item."""
    for item in items:
        mark = item.get_closest_marker("check")
        if mark is None:
            continue
        entries = catalog(config)
        if not mark.args or "observe" not in mark.kwargs:
            raise pytest.UsageError(f"{item.nodeid}: use runbook_check(id, observe=...)")
        try:
            entry = entries.check(mark.args[0])
        except CatalogError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        for marker in entry.markers:
            item.add_marker(marker)
        read_only = bool(entry.writes and config.option.unibazzar_read_only)
        if read_only:
            item.add_marker(pytest.mark.skip(reason=f"{READ_ONLY_PREFIX} writes {entry.writes}"))
        item.stash[ITEM_KEY] = CheckItem(entry=entry, observe=mark.kwargs["observe"],
                                         held_back=read_only)
        if isinstance(item, pytest.Function):
            _skip_traceback_of_findings(item)


def _skip_traceback_of_findings(item: pytest.Function) -> None:
    """A failed check's report is its finding (pytest_runtest_makereport puts the message in
    place of the traceback), so pytest's traceback, which reads every frame's source, is not
    formatted for one: forty of them cost a dead platform's run about 0.2 s after its
    deadline. A broken check keeps its traceback."""
    traceback = item.repr_failure

    def repr_failure(excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
        if classify(excinfo.value, skipped=False) is Outcome.FAILED:
            return str(excinfo.value)
        return traceback(excinfo)

    item.repr_failure = repr_failure  # type: ignore[method-assign]


def _start(state: RunState, item: pytest.Item, info: CheckItem) -> Observation:
    from unibazzar_health.judges.runbook import CheckContext

    if state.env is None:
        raise pytest.UsageError("no environment loaded")
    context = CheckContext(state.env, state.measurements, started_at=state.started_at.timestamp())
    observe = info.observe
    return state.observer.start(lambda: observe(context), state.check_limit, name=info.entry.id)


def _own_items(session: pytest.Session) -> list[pytest.Item]:
    """The items this process will run: all of them, or on an xdist worker the share our
    scheduler sends it (none known in advance under another --dist: those start as they
    arrive, in pytest_pyfunc_call)."""
    config = session.config
    if not is_worker(config):
        return list(session.items)
    workerinput = config.workerinput  # type: ignore[attr-defined]
    if not workerinput.get(SHARE_KEY):
        return []
    share = share_of([item.nodeid for item in session.items], workerinput["workerid"],
                     int(workerinput["workercount"]))
    return [session.items[index] for index in share]


def start_observations(session: pytest.Session) -> None:
    """pytest_runtestloop: start the I/O of every check this process will run, now and all
    at once, so the assertions only wait for it."""
    config = session.config
    state = config.stash.get(RUN_KEY, None)
    if state is None or config.option.collectonly or session.testsfailed:
        return
    starting = [(item, info) for item in _own_items(session)
                if (info := item.stash.get(ITEM_KEY, None)) is not None and not info.held_back
                and "observed" in getattr(item, "fixturenames", ())]
    _import_clients({d for _, info in starting for d in info.entry.depends_on})
    keep_current_test_var()
    for item, info in starting:
        info.observation = _start(state, item, info)


CURRENT_TEST_VAR = "PYTEST_CURRENT_TEST"
_KEPT: list[bool] = []


def keep_current_test_var() -> None:
    """pytest adds PYTEST_CURRENT_TEST to os.environ as each test starts and removes it as
    the test ends, on the main thread, while our observations run on theirs. A client that
    reads os.environ whole there (requests' and botocore's proxy lookup) meets a key removed
    between listing and reading it: a KeyError, a check broken for nothing (about once in
    150 runs on a loaded host). In a checks run the variable is set before any observation
    starts and is only ever changed after, never removed (emptied when a test ends)."""
    if _KEPT:
        return
    from _pytest import runner

    update = getattr(runner, "_update_current_test_var", None)
    if update is None:  # a pytest that no longer has it: nothing to keep
        return

    def keeping(item: pytest.Item, when: Any) -> None:
        if when is None:
            os.environ[CURRENT_TEST_VAR] = ""
        else:
            update(item, when)

    os.environ.setdefault(CURRENT_TEST_VAR, "")
    runner._update_current_test_var = keeping
    _KEPT.append(True)


# The client each backend's probes use. Imported here, before any observation starts:
# imported inside forty starting threads, a client's import (kubernetes alone 0.4 s of CPU)
# ran contended and ahead of its first probe's deadline, so a dead platform cost a deadline
# plus that. What a selection does not stand on is never imported (lean start-up).
CLIENT_MODULES = {"postgresql": "psycopg", "redis": "redis", "rabbitmq": "pika",
                  "dynamodb": "boto3", "s3": "boto3", "cloudwatch": "boto3",
                  "kubernetes": "kubernetes.client", "logs": "kubernetes.client"}


def _import_clients(dependencies: set[str]) -> None:
    import importlib

    for module in sorted({CLIENT_MODULES[d] for d in dependencies if d in CLIENT_MODULES}):
        importlib.import_module(module)


def give_observed(pyfuncitem: pytest.Function) -> None:
    """pytest_pyfunc_call: the check's test gets what its observe function measured (waited
    for within the run's budget); a check out of budget or not configured is skipped."""
    info = pyfuncitem.stash.get(ITEM_KEY, None)
    if info is None or "observed" not in pyfuncitem.funcargs:
        return  # not a runbook check: nothing of ours is loaded for it
    from unibazzar_health.judges.runbook import NotConfigured

    state = pyfuncitem.config.stash[RUN_KEY]
    if info.observation is None:
        info.observation = _start(state, pyfuncitem, info)
    waiting = time.perf_counter()
    try:
        info.observed = info.observation.wait(state.budget_deadline)
    except BudgetExhausted as exc:
        pytest.skip(str(exc))
    except NotConfigured as exc:
        pytest.skip(str(exc))
    finally:
        info.waited_s = time.perf_counter() - waiting
    pyfuncitem.funcargs["observed"] = info.observed


def record_result(item: pytest.Item, call: pytest.CallInfo[None],
                  report: pytest.TestReport) -> None:
    """pytest_runtest_makereport: a check's setup or call report made its result, redacted,
    on the report as JSON (the controller takes it off) and on the item as plain strings."""
    info = item.stash.get(ITEM_KEY, None)
    if info is None:
        return
    state = item.config.stash[RUN_KEY]
    if report.failed and report.longrepr is not None:
        report.longrepr = state.redactor.text(str(report.longrepr))
    if report.when == "call" or (report.when == "setup" and not report.passed):
        skip_reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            skip_reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        exc = call.excinfo.value if call.excinfo is not None and not report.skipped else None
        observation = info.observation
        result = build_result(
            entry=info.entry, nodeid=item.nodeid, catalog=state.catalog, env=state.env,
            redactor=state.redactor, exc=exc, skipped=report.skipped, skip_reason=skip_reason,
            observed=info.observed,
            duration_s=_duration(call.duration, info.waited_s, observation),
        )
        if result.outcome is Outcome.FAILED and state.env and state.env.spec.kubernetes:
            # The runbook's "Gather logs and metrics from affected services", from what the
            # run read of the service's pods and logs (service_context.py).
            from unibazzar_health.judges.service_context import context_for

            # Those reads run on their own checks' observations: waited for at most one
            # check's limit, never past the run's budget.
            left = (state.budget_deadline - time.monotonic()) if state.budget_deadline else 0.0
            result.context = state.redactor.data(context_for(
                state.measurements, info.entry.service,
                max(0.0, min(state.check_limit, left))))
        # Plain strings on the item: JUnit XML writes the teardown report's, which are the
        # item's. The whole result crosses xdist as JSON on this report only, and the
        # controller takes it off (ResultCollector).
        info.result = result
        item.user_properties.extend(result.properties())
        report.user_properties = [*report.user_properties, *result.properties(),
                                  (PROPERTY_KEY, json.dumps(result.to_dict()))]
        if result.outcome is Outcome.FAILED and result.message:
            # The platform failed, not the check's code: its finding is the whole story (the
            # verdict adds severity and fixes). A broken check keeps its traceback.
            report.longrepr = result.message


def _duration(call_s: float, waited_s: float, observation: Observation | None) -> float:
    """How long the check itself took: its probes (observed ahead of the test, possibly
    while other checks ran) plus its assertions, not the time its test sat waiting."""
    probes = (observation.elapsed or 0.0) if observation else 0.0
    return max(0.0, call_s - waited_s) + probes
