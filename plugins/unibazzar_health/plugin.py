"""pytest wiring of the health checks: the pytest11 entry point, so loaded by every pytest
run where the package is installed. Its hooks are thin and its fixtures few; what each hook
does lives beside it, in the order a run meets it:

- options.py: the options and their parsers, the markers, the run mode, the refusal of an
  option value pytest mistook for a test path;
- run_state.py: the run's and each check's state, the stash keys, what crosses to workers;
- activation.py: a run that collected a runbook check becomes a checks run (environment,
  reports directory, ResultCollector, AllureHooks where allure-pytest writes results);
- xdist_hooks.py: XdistHooks, registered where xdist is installed (distribution.py's plan);
- check_run.py: each check marked, observed ahead of its test, its result on its report;
- session_end.py: results gathered, the summary, its outputs, the posting, the verdict."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from unibazzar_health.activation import activate_if_checks
from unibazzar_health.check_run import give_observed, mark_checks, record_result, start_observations
from unibazzar_health.options import (
    add_markers,
    add_options,
    is_worker,
    refuse_separate_path_values,
)
from unibazzar_health.run_state import RUN_KEY, START_KEY
from unibazzar_health.session_end import finish_posting, finish_session, show_verdict
from unibazzar_health.verdict.policy import now
from unibazzar_health.xdist_hooks import XdistHooks

# The environment's settings bring pydantic: named for the type checker only (a pytest run
# without runbook checks never loads them).
if TYPE_CHECKING:
    from unibazzar_health.config.environment import Environment
    from unibazzar_health.config.platform import Thresholds


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Markers only, the start time, and a refusal of an option value pytest mistook for a
    test path. The plugin is installed as a pytest11 entry point, so it is loaded by every
    pytest run where the package is installed (the self-tests too): nothing here may read a
    file or change the process (only a path given to one of our options is looked at). The
    environment is resolved when the collection holds a runbook check
    (pytest_collection_finish), still before any probe runs, or on an xdist controller when
    it hands settings to its first worker."""
    config.stash[START_KEY] = (time.monotonic(), now())
    if not is_worker(config):
        refuse_separate_path_values(config)
    add_markers(config)
    if not is_worker(config) and config.pluginmanager.hasplugin("xdist") \
            and not config.pluginmanager.has_plugin("unibazzar-xdist"):
        # Its hooks act only when xdist distributes (pytest_configure_node and after).
        config.pluginmanager.register(XdistHooks(), "unibazzar-xdist")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the service markers must exist before `-m` deselects.
    mark_checks(config, items)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # tryfirst: before xdist's worker reports its collection to the controller.
    activate_if_checks(session)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    start_observations(session)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
    give_observed(pyfuncitem)


@pytest.fixture
def observed() -> Any:
    """What the check's observe function measured (filled in by the plugin)."""
    return None


@pytest.fixture(scope="session")
def env(pytestconfig: pytest.Config) -> Environment:
    environment = pytestconfig.stash[RUN_KEY].env
    assert environment is not None
    return environment


@pytest.fixture(scope="session")
def thresholds(env: Environment) -> Thresholds:
    return env.spec.thresholds


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    record_result(item, call, outcome.get_result())


def pytest_sessionfinish(session: pytest.Session) -> None:
    finish_session(session)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    show_verdict(terminalreporter, config)


def pytest_unconfigure(config: pytest.Config) -> None:
    # Where no terminal summary ran (-p no:terminal): still never exit mid-post.
    state = config.stash.get(RUN_KEY, None)
    if state is not None:
        finish_posting(state)
