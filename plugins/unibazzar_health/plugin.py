"""pytest wiring of the health checks. Hooks only: the logic lives in plain modules
(settings, catalog, observer, results, summary)."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unibazzar_health.config.errors import EnvironmentFileError, secret_in_url, shown_url
from unibazzar_health.config.names import SERVICES
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.distribution import SHARE_KEY, group_of, make_scheduler, share_of
from unibazzar_health.judges.observer import BudgetExhausted, Observation, Observer
from unibazzar_health.judges.shared import SharedObservations
from unibazzar_health.reports.gate import DEFAULT_FAIL_ON, FAIL_ON_CHOICES, exit_status, explain
from unibazzar_health.verdict.catalog import (
    BACKEND_MARKERS,
    CANARY_WRITE,
    Catalog,
    CatalogError,
    CheckEntry,
    load_catalog,
)
from unibazzar_health.verdict.policy import now
from unibazzar_health.verdict.results import (
    PROPERTY_KEY,
    READ_ONLY_PREFIX,
    CheckResult,
    Outcome,
    build_result,
    classify,
)

# Loaded by every pytest run (the pytest11 entry point): our modules that bring pydantic (the
# environment's settings, judges.runbook, the summary's model and what writes, shows and
# posts it) are imported inside the hooks of a run that collected runbook checks.
if TYPE_CHECKING:
    from unibazzar_health.config.environment import Environment
    from unibazzar_health.config.platform import Thresholds
    from unibazzar_health.verdict.model import Summary

WIRE_KEY = "unibazzar_env"
# Seconds a whole run may take, by who runs it: an engineer at 3 a.m. wants a verdict in
# a minute; a scheduled probe must finish before its next tick; CI can wait longer.
DEFAULT_BUDGETS_S = {"oncall": 60.0, "scheduled": 50.0, "ci": 180.0}
# The run mode where --run-mode is not given (the container's entrypoint and the CronJob set it).
RUN_MODE_VAR = "UNIBAZZAR_RUN_MODE"
# Observations in flight at once: above the catalog's size, so a dead platform costs one
# deadline rather than one per wave; bounded, so a large selection cannot open hundreds of
# connections to a struggling platform at once. Each is a thread waiting on a socket.
DEFAULT_CONCURRENCY = 64


@dataclass
class RunState:
    catalog: Catalog
    env: Environment | None
    redactor: Redactor
    observer: Observer
    check_limit: float
    budget_deadline: float | None
    fail_on: str
    reports_dir: Path
    started_at: Any
    run_mode: str = "oncall"  # who runs it (run_mode()): recorded in summary.json
    results: dict[str, CheckResult] = field(default_factory=dict)
    # Tests that failed outside a check's judged result (a test that is no runbook check, a
    # check's teardown): no verdict covers them, and they never let the run exit 0.
    other_failures: list[str] = field(default_factory=list)
    failed_reports_of_checks: int = 0  # with other_failures, what session.testsfailed counts
    summary: Summary | None = None
    summary_path: Path | None = None
    incident_path: Path | None = None
    measurements: SharedObservations = field(default_factory=SharedObservations)
    metrics_lines: list[str] = field(default_factory=list)  # what --metrics-file/--pushgateway did
    posting: Any = None  # incidents.posting.Report: what this run decided and posted
    posting_thread: Any = None  # the posting under way, beside the verdict's printing
    posting_budget: float = 0.0
    # --metrics-file, --pushgateway: exported again once posting is done, with its results.
    metrics_targets: tuple[Path | None, str | None] = (None, None)


@dataclass
class CheckItem:
    entry: CheckEntry
    observe: Any
    observation: Observation | None = None
    observed: Any = None
    # Time the test spent waiting for its observation: part of call.duration, but the
    # observation's own elapsed time already counts it.
    waited_s: float = 0.0
    result: CheckResult | None = None
    # Never observed: --read-only holds back a check that writes.
    held_back: bool = False


RUN_KEY = pytest.StashKey[RunState]()
ITEM_KEY = pytest.StashKey[CheckItem]()
# When the run started (monotonic, wall clock): taken at configure, before collection, so the
# budget and started_at count from the start even though the run resolves its settings later.
START_KEY = pytest.StashKey[tuple[float, Any]]()
CATALOG_KEY = pytest.StashKey[Catalog]()
# xdist: the controller's environment error, for a worker that collected checks (workerinput),
# and that worker's report of it back to the controller (workeroutput).
WIRE_ERROR_KEY = "unibazzar_env_error"


def _positive_seconds(option: str) -> Callable[[str], float]:
    """A parser for ``option``'s value, whose error names the option (argparse's type
    functions are given the value only)."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise pytest.UsageError(f"{option}: expected a number of seconds, got "
                                    f"{value!r}") from None
        if not number > 0 or number == float("inf"):  # nan and inf are no budget either
            raise pytest.UsageError(f"{option}: expected a positive number of seconds, got "
                                    f"{value!r}")
        return number

    return parse


def _pushgateway_url(value: str) -> str:
    """An http(s) URL with no secret in it: it is shown in summary.json's arguments and on
    the terminal ("metrics: pushed to ..."), so a password or token is refused, unshown."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise pytest.UsageError(f"--pushgateway: expected an http(s) URL, got "
                                f"{shown_url(value)!r}")
    secret = secret_in_url(value)
    if secret:
        raise pytest.UsageError(f"--pushgateway: {secret} ({shown_url(value)!r}): it would be "
                                "shown in summary.json and on the terminal; give the "
                                "Pushgateway's address without it")
    return value


def _positive_whole(option: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or int(value) < 1:
            raise pytest.UsageError(f"{option}: expected a positive whole number, got "
                                    f"{value!r}")
        return int(value)

    return parse


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unibazzar", "UniBazzar health checks")
    group.addoption("--env", dest="unibazzar_env", metavar="NAME",
                    help="environment to check: environments/NAME.toml "
                         "(else $UNIBAZZAR_ENV, else sandbox)")
    group.addoption("--env-file", dest="unibazzar_env_file", metavar="PATH",
                    help="environment file to check (else $UNIBAZZAR_ENV_FILE)")
    group.addoption("--reports-dir", dest="unibazzar_reports_dir", metavar="DIR",
                    help="where summary.json goes (default: reports/ under the rootdir)")
    group.addoption("--run-mode", dest="unibazzar_run_mode", choices=sorted(DEFAULT_BUDGETS_S),
                    help="who runs this: oncall (an engineer), scheduled (cron, CronJob) or "
                         "ci; sets the default budget and --fail-on (default: "
                         f"${RUN_MODE_VAR}, else ci when $CI is set, else oncall)")
    group.addoption("--budget", dest="unibazzar_budget", type=_positive_seconds("--budget"),
                    metavar="SECONDS",
                    help="wall-clock budget of the run; checks not finished by then are "
                         "reported 'not run: budget exhausted' (default by run mode: "
                         + ", ".join(f"{m} {s:g}" for m, s in DEFAULT_BUDGETS_S.items()) + ")")
    group.addoption("--fail-on", dest="unibazzar_fail_on", choices=FAIL_ON_CHOICES,
                    help="exit non-zero (1) when the verdict is this severe or worse: SEV1..SEV4, "
                         "any, never; an incomplete verdict exits 6 (default by run mode: "
                         + ", ".join(f"{m} {f}" for m, f in DEFAULT_FAIL_ON.items()) + ")")
    group.addoption("--read-only", dest="unibazzar_read_only", action="store_true",
                    help="skip every check that writes to the platform (their canaries), and "
                         "say which")
    group.addoption("--metrics-file", dest="unibazzar_metrics_file", metavar="PATH",
                    help="write the run's Prometheus metrics to PATH, atomically, for "
                         "node_exporter's textfile collector (name it *.prom; docs/metrics.md)")
    group.addoption("--pushgateway", dest="unibazzar_pushgateway", type=_pushgateway_url,
                    metavar="URL",
                    help="push the run's Prometheus metrics to this Pushgateway (job "
                         "unibazzar_health, grouped by environment); a failed push is "
                         "reported, never fatal; a URL with a password or a token is refused "
                         "(it is shown in summary.json)")
    group.addoption("--dry-run", dest="unibazzar_dry_run", action="store_true",
                    help="print what the incident lifecycle would post ([notify]); change no "
                         "incident state and post nothing")
    group.addoption("--no-post", dest="unibazzar_no_post", action="store_true",
                    help="leave incidents alone: neither read nor change their state, post "
                         "nothing (a look that must not count as a run)")
    group.addoption("--concurrency", dest="unibazzar_concurrency",
                    type=_positive_whole("--concurrency"), metavar="N",
                    help=f"observations in flight at once (default {DEFAULT_CONCURRENCY})")


def run_mode(config: pytest.Config, environ: Mapping[str, str]) -> str:
    """Who runs this, from explicit signals only: --run-mode, then $UNIBAZZAR_RUN_MODE, then
    $CI; else an engineer (oncall). Never from whether stdout is a terminal: `pytest | tee`
    is an engineer too, and the CronJob, cron and the workflows all say who they are."""
    chosen: str | None = config.option.unibazzar_run_mode
    if chosen:
        return chosen
    named = environ.get(RUN_MODE_VAR, "").strip()
    if named:
        if named not in DEFAULT_BUDGETS_S:
            raise pytest.UsageError(f"${RUN_MODE_VAR}: expected one of "
                                    f"{', '.join(sorted(DEFAULT_BUDGETS_S))}, got {named!r}")
        return named
    if environ.get("CI"):
        return "ci"
    return "oncall"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _wants_environment(config: pytest.Config) -> bool:
    return not (config.option.help or config.option.version or config.option.markers
                or config.option.showfixtures)


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


def _marker_name(line: str) -> str:
    """`check(id, observe): ...` -> `check`."""
    return line.split(":", 1)[0].split("(", 1)[0].strip()


# Our options that take a value. Given as `--opt VALUE`, VALUE is read as a test path while
# pytest picks its rootdir and ini file: that happens before any plugin's options are known.
VALUE_OPTIONS = ("--env", "--env-file", "--reports-dir", "--run-mode", "--budget", "--fail-on",
                 "--metrics-file", "--pushgateway", "--concurrency")


def _refuse_separate_path_values(config: pytest.Config) -> None:
    """`--env-file /elsewhere/env.toml` (a space): pytest took the path for a test path when
    it chose its rootdir and ini file, so the run would collect whatever lies under another
    rootdir, the self-tests once. Where that changed nothing (`--env production`, a path
    inside the repository), the run goes on as asked; else a usage error, before anything
    is collected or probed."""
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
            *config.invocation_params.args]
    base = config.invocation_params.dir
    separate = [(option, value) for option, value in itertools.pairwise(args)
                if option in VALUE_OPTIONS and _is_path(base / value)]
    if not separate or not _setup_moved(config):
        return
    option, value = separate[0]
    raise pytest.UsageError(
        f"{option} {value}: write {option}={value} (with '='): given apart, pytest takes "
        f"{value!r} for a test path before it knows {option}, and its rootdir became "
        f"{config.rootpath}")


def _is_path(path: Path) -> bool:
    """As pytest asks it of a test path (a name too long for the system is none)."""
    try:
        return path.exists()
    except OSError:
        return False


def _setup_moved(config: pytest.Config) -> bool:
    """Whether pytest's rootdir or ini file differ from those the run's real test paths
    give; True where that cannot be told (pytest's private API changed): a usage error then
    costs a '=', a moved rootdir a wrong run."""
    try:
        from _pytest.config.findpaths import determine_setup

        known = config.known_args_namespace
        rootpath, inipath, *_ = determine_setup(
            inifile=known.inifilename, override_ini=known.override_ini,
            args=[str(a) for a in config.option.file_or_dir or ()],
            rootdir_cmd_arg=known.rootdir or None, invocation_dir=config.invocation_params.dir)
    except Exception:  # any change of the private API: the safe answer
        return True
    return (rootpath, inipath) != (config.rootpath, config.inipath)


def pytest_configure(config: pytest.Config) -> None:
    """Markers only, the start time, and a refusal of an option value pytest mistook for a
    test path. The plugin is installed as a pytest11 entry point, so it is loaded by every
    pytest run where the package is installed (the self-tests too): nothing here may read a
    file or change the process (only a path given to one of our options is looked at). The
    environment is resolved when the collection holds a runbook check
    (pytest_collection_finish), still before any probe runs, or on an xdist controller when
    it hands settings to its first worker."""
    config.stash[START_KEY] = (time.monotonic(), now())
    if not _is_worker(config):
        _refuse_separate_path_values(config)
    # Every marker of the checks, from the one list of services and backends
    # (config/names.py); once each: an ini file that declares one keeps its own words.
    declared = {_marker_name(line) for line in config.getini("markers")}
    for line in ["check(id, observe): a runbook check; its id keys the catalog (severity, "
                 "fixes, commands)",
                 *(f"{service}: {service} runbook checks" for service in SERVICES),
                 *(f"{marker}: checks that stand on {dependency}"
                   for dependency, marker in BACKEND_MARKERS.items()),
                 f"{CANARY_WRITE}: checks that write a canary (in its own names, removed by "
                 "the check); --read-only skips them"]:
        if _marker_name(line) not in declared:
            config.addinivalue_line("markers", line)
    if not _is_worker(config) and config.pluginmanager.hasplugin("xdist") \
            and not config.pluginmanager.has_plugin("unibazzar-xdist"):
        # Its hooks act only when xdist distributes (pytest_configure_node and after).
        config.pluginmanager.register(XdistHooks(), "unibazzar-xdist")


def _catalog(config: pytest.Config) -> Catalog:
    if CATALOG_KEY not in config.stash:
        config.stash[CATALOG_KEY] = load_catalog()
    return config.stash[CATALOG_KEY]


def _environment(config: pytest.Config) -> Environment:
    """The run's environment, resolved once: from the xdist controller on a worker, else
    from the file the options and environment variables choose."""
    if _is_worker(config):
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


def _activate(config: pytest.Config) -> RunState:
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
    if not _is_worker(config) and not config.option.collectonly:
        # The controller writes the reports; a worker never does.
        _writable_reports_dir(reports)
    started, started_at = config.stash[START_KEY]
    state = config.stash[RUN_KEY] = RunState(
        catalog=_catalog(config),
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
    if not _is_worker(config):
        config.pluginmanager.register(ResultCollector(state), "unibazzar-results")
    listener = config.pluginmanager.get_plugin("allure_listener")
    if listener is not None:
        config.pluginmanager.register(AllureHooks(listener, state), "unibazzar-allure")
    return state


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # tryfirst: before xdist's worker reports its collection to the controller.
    config = session.config
    if not _wants_environment(config) or not any(ITEM_KEY in item.stash
                                                 for item in session.items):
        return  # not a checks run: the plugin stays inert
    if not _is_worker(config):
        _activate(config)
        return
    try:
        _activate(config)
    except pytest.UsageError as exc:
        # Raised here, a worker would crash; the controller raises it (XdistHooks), and no
        # check runs meanwhile.
        config.workeroutput[WIRE_ERROR_KEY] = str(exc)  # type: ignore[attr-defined]
        session.items[:] = []


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
        from unibazzar_health.reports.allure_report import annotate
        from unibazzar_health.verdict.summary import check_of

        # When its probes started, on the wall clock Allure's times are on (theirs is monotonic).
        began = info.observation.started_at if info.observation else None
        probing_from = None if began is None else time.time() - (time.monotonic() - began)
        annotate(check_of(result), self.state.catalog, self.state.env,
                 self.listener.allure_logger.get_test(None), probing_from)


def _shares_up_front(config: pytest.Config) -> bool:
    """Our scheduler replaces xdist's default one (``--dist load``, what ``-n`` implies);
    another ``--dist`` the user chose is left alone."""
    return bool(config.getoption("dist", None) == "load")


class XdistHooks:
    """Registered only where xdist is installed: hand workers the settings resolved once,
    and every worker its whole share of checks at once (see distribution.py)."""

    def __init__(self) -> None:
        self.error: str | None = None

    def pytest_configure_node(self, node: Any) -> None:
        # Workers start probing as soon as their collection ends, which the controller never
        # sees: it resolves the settings when it hands them to its first worker. An error is
        # kept until a worker reports that it collected checks (pytest_testnodedown): a
        # distributed run without checks stays unaffected.
        config = node.config
        state = config.stash.get(RUN_KEY, None)
        if state is None and self.error is None and _wants_environment(config):
            try:
                state = _activate(config)
            except pytest.UsageError as exc:
                self.error = str(exc)
        if state is not None and state.env is not None:
            node.workerinput[WIRE_KEY] = state.env.to_wire()
        elif self.error is not None:
            node.workerinput[WIRE_ERROR_KEY] = self.error
        node.workerinput[SHARE_KEY] = state is not None and _shares_up_front(config)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        reported = getattr(node, "workeroutput", {}).get(WIRE_ERROR_KEY)
        if reported:
            raise pytest.UsageError(reported)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if RUN_KEY not in config.stash or not _shares_up_front(config):
            return None
        return make_scheduler(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the service markers must exist before `-m` deselects.
    for item in items:
        mark = item.get_closest_marker("check")
        if mark is None:
            continue
        catalog = _catalog(config)
        if not mark.args or "observe" not in mark.kwargs:
            raise pytest.UsageError(f"{item.nodeid}: use runbook_check(id, observe=...)")
        try:
            entry = catalog.check(mark.args[0])
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
    if not _is_worker(config):
        return list(session.items)
    workerinput = config.workerinput  # type: ignore[attr-defined]
    if not workerinput.get(SHARE_KEY):
        return []
    share = share_of([item.nodeid for item in session.items], workerinput["workerid"],
                     int(workerinput["workercount"]))
    return [session.items[index] for index in share]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    # Start the I/O of every check this process will run, now and all at once, so the
    # assertions below only wait for it.
    config = session.config
    state = config.stash.get(RUN_KEY, None)
    if state is None or config.option.collectonly or session.testsfailed:
        return
    starting = [(item, info) for item in _own_items(session)
                if (info := item.stash.get(ITEM_KEY, None)) is not None and not info.held_back
                and "observed" in getattr(item, "fixturenames", ())]
    _import_clients({d for _, info in starting for d in info.entry.depends_on})
    for item, info in starting:
        info.observation = _start(state, item, info)


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


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
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
    report: pytest.TestReport = outcome.get_result()
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


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if _is_worker(config) or RUN_KEY not in config.stash:
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
        # After the summary is on disk and the exit status decided: posting changes
        # neither, is bounded by its own budget ([notify] budget), and runs beside the
        # printing of the verdict, never in front of it (joined in _finish_posting).
        import threading

        summary = state.summary

        def post() -> None:
            state.posting = poster.post(summary)
            poster.write(state.posting)

        state.posting_thread = threading.Thread(target=post, name="unibazzar-posting",
                                                daemon=True)
        state.posting_budget = poster.budget
        state.posting_thread.start()


def _finish_posting(state: RunState) -> None:
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


def pytest_unconfigure(config: pytest.Config) -> None:
    # Where no terminal summary ran (-p no:terminal): still never exit mid-post.
    state = config.stash.get(RUN_KEY, None)
    if state is not None:
        _finish_posting(state)


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


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
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
    _finish_posting(state)
    if state.posting is not None:
        for line in state.posting.lines():
            terminalreporter.write_line(state.redactor.text(line))
