"""Allure's side of a checks run: hooks registered (activation.py) only when allure-pytest
writes results (--alluredir)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from unibazzar_health.run_state import ITEM_KEY, RunState


class AllureHooks:
    """Registered only when allure-pytest writes results (--alluredir): every check's
    result carries its severity, runbook place, backends, links, fixes, commands and
    redacted evidence, and Allure's status says failed or broken exactly as summary.json
    does (Allure alone would call a probe failure broken: it is not an AssertionError)."""

    def __init__(self, listener: Any, state: RunState) -> None:
        self.listener, self.state = listener, state

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        # tryfirst: the outermost wrapper, so both allure's status and our result exist here.
        yield
        info = item.stash.get(ITEM_KEY, None)
        if info is None or info.result is None or call.when == "teardown":
            return
        result, info.result = info.result, None  # once per check
        # Here, not at import: the summary's model (pydantic) loads only in a checks run.
        from unibazzar_health.reports.allure_report import annotate
        from unibazzar_health.verdict.summary import check_of

        # When its probes started, on the wall clock Allure's times are on (theirs is monotonic).
        began = info.observation.started_at if info.observation else None
        probing_from = None if began is None else time.time() - (time.monotonic() - began)
        annotate(check_of(result), self.state.catalog, self.state.env,
                 self.listener.allure_logger.get_test(None), probing_from)
