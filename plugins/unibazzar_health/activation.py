"""Turning a pytest run into a checks run, once and only when it collected a runbook check:
the catalog, the environment (from the file the options choose, or from the xdist
controller on a worker), the reports directory, and the run's state with the hooks it needs
(ResultCollector, and AllureHooks where allure-pytest writes results)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from unibazzar_health.allure_hooks import AllureHooks
from unibazzar_health.config.errors import EnvironmentFileError
from unibazzar_health.judges.observer import Observer
from unibazzar_health.options import (
    DEFAULT_BUDGETS_S,
    DEFAULT_CONCURRENCY,
    is_worker,
    run_mode,
    wants_environment,
)
from unibazzar_health.reports.gate import DEFAULT_FAIL_ON
from unibazzar_health.run_state import (
    CATALOG_KEY,
    ITEM_KEY,
    RUN_KEY,
    START_KEY,
    WIRE_ERROR_KEY,
    WIRE_KEY,
    RunState,
)
from unibazzar_health.session_end import ResultCollector
from unibazzar_health.verdict.catalog import Catalog, load_catalog

# Loaded by every pytest run (the pytest11 entry point): the environment's settings bring
# pydantic, so they are imported inside the functions, which run only for a checks run.
if TYPE_CHECKING:
    from unibazzar_health.config.environment import Environment


def catalog(config: pytest.Config) -> Catalog:
    if CATALOG_KEY not in config.stash:
        config.stash[CATALOG_KEY] = load_catalog()
    return config.stash[CATALOG_KEY]


def _environment(config: pytest.Config) -> Environment:
    """The run's environment, resolved once: from the xdist controller on a worker, else
    from the file the options and environment variables choose."""
    if is_worker(config):
        workerinput = config.workerinput  # type: ignore[attr-defined]
        if WIRE_KEY not in workerinput:
            raise pytest.UsageError(workerinput.get(WIRE_ERROR_KEY) or "no environment")
        from unibazzar_health.config.environment import Environment

        return Environment.from_wire(workerinput[WIRE_KEY])
    # Here, not at import: a pytest run without runbook checks never loads the settings.
    from unibazzar_health.config.environment import choose_environment_file
    from unibazzar_health.incidents.config import load_environment

    name, file = config.option.unibazzar_env, config.option.unibazzar_env_file
    if name and file:
        # Neither silently wins: an engineer who wrote both meant one of them.
        raise pytest.UsageError(f"--env={name} and --env-file={file} both choose the "
                                "environment: give one")
    if name and (name.endswith(".toml") or "/" in name or os.sep in name):
        raise pytest.UsageError(f"--env={name}: --env takes an environment's name (it reads "
                                f"environments/NAME.toml); for a file, use --env-file={name}")
    path = choose_environment_file(config.rootpath, name, file, os.environ)
    try:
        return load_environment(path)
    except EnvironmentFileError as exc:
        raise pytest.UsageError(str(exc)) from None


def _writable_reports_dir(path: Path) -> Path:
    """``path``, made and written to once, before any probe runs: found only at the end, an
    unwritable reports directory cost a whole run, its canary writes and a traceback."""
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".unibazzar-write-test-"):
            pass
    except OSError as exc:
        why = ("a file, not a directory" if isinstance(exc, FileExistsError)
               else exc.strerror or str(exc))
        raise pytest.UsageError(f"reports directory {path}: cannot create or write to it "
                                f"({why}); choose another with --reports-dir=DIR") from None
    return path


_exit_hook_registered = False


def _freeze_heap_at_exit() -> None:
    """At interpreter exit, move every object out of the collector's sight: the final
    collection over the clients' objects otherwise costs ~0.1 s, after the verdict is out."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _exit_hook_registered = True


def activate(config: pytest.Config) -> RunState:
    """Turn this pytest run into a checks run: resolve the environment (a pytest.UsageError
    naming file, key and value when it is bad) and set up what the checks need. Once."""
    state = config.stash.get(RUN_KEY, None)
    if state is not None:
        return state
    import gc

    env = _environment(config)
    mode = run_mode(config, os.environ)
    budget = config.option.unibazzar_budget or DEFAULT_BUDGETS_S[mode]
    chosen = config.option.unibazzar_reports_dir
    reports = Path(chosen) if chosen else config.rootpath / "reports"
    if not is_worker(config) and not config.option.collectonly:
        # The controller writes the reports; a worker never does.
        _writable_reports_dir(reports)
    started, started_at = config.stash[START_KEY]
    state = config.stash[RUN_KEY] = RunState(
        catalog=catalog(config),
        env=env,
        redactor=env.redactor(),
        observer=Observer(config.option.unibazzar_concurrency or DEFAULT_CONCURRENCY),
        check_limit=env.spec.deadlines.check,
        budget_deadline=started + budget,
        fail_on=config.option.unibazzar_fail_on or DEFAULT_FAIL_ON[mode],
        reports_dir=reports,
        started_at=started_at,
        run_mode=mode,
    )
    # A checks run is short and spends its CPU importing clients, which allocate many
    # long-lived objects: fewer young-generation collections cut that time by ~15%
    # (bench/). Garbage is still collected, only less often.
    gc.set_threshold(50_000, 20, 20)
    _freeze_heap_at_exit()
    if not is_worker(config):
        config.pluginmanager.register(ResultCollector(state), "unibazzar-results")
    listener = config.pluginmanager.get_plugin("allure_listener")
    if listener is not None:
        config.pluginmanager.register(AllureHooks(listener, state), "unibazzar-allure")
    return state


def activate_if_checks(session: pytest.Session) -> None:
    """pytest_collection_finish: a collection that holds a runbook check makes this a checks
    run; any other stays inert."""
    config = session.config
    if not wants_environment(config) or not any(ITEM_KEY in item.stash
                                                for item in session.items):
        return  # not a checks run: the plugin stays inert
    if not is_worker(config):
        activate(config)
        return
    try:
        activate(config)
    except pytest.UsageError as exc:
        # Raised here, a worker would crash; the controller raises it (XdistHooks), and no
        # check runs meanwhile.
        config.workeroutput[WIRE_ERROR_KEY] = str(exc)  # type: ignore[attr-defined]
        session.items[:] = []
