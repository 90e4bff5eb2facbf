"""The plugin's options and who runs it: pytest_addoption's options with their parsers (each
fails early, naming the bad value), the markers, the run mode, and the refusal of an option
value pytest mistook for a test path. Plain functions over pytest.Config; plugin.py calls them."""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from unibazzar_health.config.errors import secret_in_url, shown_url
from unibazzar_health.config.names import SERVICES
from unibazzar_health.reports.gate import DEFAULT_FAIL_ON, FAIL_ON_CHOICES
from unibazzar_health.verdict.catalog import BACKEND_MARKERS, CANARY_WRITE

# Seconds a whole run may take, by who runs it: an engineer at 3 a.m. wants a verdict in
# a minute; a scheduled probe must finish before its next tick; CI can wait longer.
DEFAULT_BUDGETS_S = {"oncall": 60.0, "scheduled": 50.0, "ci": 180.0}
# The run mode where --run-mode is not given (the container's entrypoint and the CronJob set it).
RUN_MODE_VAR = "UNIBAZZAR_RUN_MODE"
# Observations in flight at once: above the catalog's size, so a dead platform costs one
# deadline rather than one per wave; bounded, so a large selection cannot open hundreds of
# connections to a struggling platform at once. Each is a thread waiting on a socket.
DEFAULT_CONCURRENCY = 64


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


def add_options(parser: pytest.Parser) -> None:
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


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def wants_environment(config: pytest.Config) -> bool:
    return not (config.option.help or config.option.version or config.option.markers
                or config.option.showfixtures)


def _marker_name(line: str) -> str:
    """`check(id, observe): ...` -> `check`."""
    return line.split(":", 1)[0].split("(", 1)[0].strip()


def add_markers(config: pytest.Config) -> None:
    """Every marker of the checks, from the one list of services and backends
    (config/names.py); once each: an ini file that declares one keeps its own words."""
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


# Our options that take a value. Given as `--opt VALUE`, VALUE is read as a test path while
# pytest picks its rootdir and ini file: that happens before any plugin's options are known.
VALUE_OPTIONS = ("--env", "--env-file", "--reports-dir", "--run-mode", "--budget", "--fail-on",
                 "--metrics-file", "--pushgateway", "--concurrency")


def refuse_separate_path_values(config: pytest.Config) -> None:
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
