"""Self-test fixtures: the real sandbox (started once), a listener that never answers,
and helpers to run the check suite as a user would."""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_PYTHON = ROOT / ".venv-sandbox" / "bin" / "python"
SANDBOX_TOML = ROOT / "environments" / "sandbox.toml"
SANDBOX_STATE = Path("/tmp/unibazzar-sandbox")


# A key of an environment file naming the variable that holds a secret, written or given as
# a commented-out example ("# token_env = ..."): a deployment must pass what a file may come
# to name by uncommenting, or the run that turns a notifier on stops at "not set".
_ENV_KEY = re.compile(r'(?m)^(#[ \t]*)?\w+_env = "([A-Z0-9_]+)"')


def named_variables(text: str) -> set[str]:
    """The variables an environment file's ``*_env`` keys name, in effect or not."""
    return {name for _, name in _ENV_KEY.findall(text)}


def example_variables(text: str) -> set[str]:
    """The variables only its commented-out examples name (off until uncommented)."""
    return named_variables(text) - {name for commented, name in _ENV_KEY.findall(text)
                                    if not commented}


def admin_dsn(database: str) -> str:
    """The sandbox's PostgreSQL as its superuser, over the Unix socket: for injecting faults."""
    return (f"host={SANDBOX_STATE / 'postgresql' / 'run'} port=25432 user=postgres "
            f"dbname={database}")


def sandbox_secrets() -> dict[str, str]:
    """The secrets the sandbox generated (its dotenv file)."""
    return dict(line.split("=", 1)
                for line in (SANDBOX_STATE / "secrets.env").read_text().split())


@contextmanager
def fault(name: str, content: str = "") -> Iterator[None]:
    """A file under the sandbox's faults/ that a stand-in service obeys while it exists."""
    path = SANDBOX_STATE / "faults" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content)
    try:
        yield
    finally:
        path.unlink()


@contextmanager
def sandbox_logs_kept() -> Iterator[None]:
    """The stand-ins' logs cut back to where they were: what a test made them log (failed
    logins with a wrong password, say) must not reach a later run's log window."""
    logs = {path: path.stat().st_size for path in (SANDBOX_STATE / "logs").glob("*.log")}
    try:
        yield
    finally:
        for path, size in logs.items():
            with path.open("r+") as handle:
                handle.truncate(size)


def environment_with(tmp_path: Path, **settings: str) -> Path:
    """A copy of the sandbox environment with some `key = value` lines changed (values as
    TOML: quote strings)."""
    text = SANDBOX_TOML.read_text()
    for key, value in settings.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1, f"{key} is not a line of {SANDBOX_TOML}"
    path = tmp_path / "environment.toml"
    path.write_text(text)
    return path


def check_module(path: str, prefix: str) -> ModuleType:
    """A check module under checks/ imported on its own (checks/ is no package on the
    self-tests' path), as ``<prefix>_<stem>`` so two test modules' copies never collide."""
    import importlib.util

    file = ROOT / "checks" / path
    spec = importlib.util.spec_from_file_location(f"{prefix}_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def sandbox(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(SANDBOX_PYTHON), "-m", "unibazzar_sandbox", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    if check and done.returncode != 0:
        pytest.fail(f"sandbox {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n"
                    f"{done.stderr}", pytrace=False)
    return done


# What a CI machine sets that changes a checks run's defaults (--run-mode ci, so --fail-on
# SEV2) or where it writes (the job's step summary, Allure's executor): the self-tests decide
# those themselves, the same on a laptop and in CI.
CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITLAB_CI", "JENKINS_URL")


@pytest.fixture(autouse=True)
def _not_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def running_sandbox() -> Iterator[None]:
    """The sandbox, brought up once for the session; taken down if this session started it."""
    was_running = sandbox("status", check=False).returncode == 0
    started = sandbox("up", check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    if not was_running:
        sandbox("down")


@pytest.fixture
def hang_listener() -> Iterator[tuple[str, int]]:
    """Accepts TCP connections and never answers: the worst kind of dead backend."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


# Game days are slow to switch (seconds each, some ripen 10 s): while test_game_days.py holds
# one on, it shows its run (the game day's name, its summary.json) to these, so a test that
# needs the same game day on does its part then instead of switching it again. An observer
# must not raise: it keeps what it finds for its own test to judge.
GameDayObserver = Callable[[str, dict[str, Any]], None]
GAME_DAY_OBSERVERS: list[GameDayObserver] = []


def while_game_day_on(name: str, summary: dict[str, Any]) -> None:
    for observer in GAME_DAY_OBSERVERS:
        observer(name, summary)


# What a test module takes from here to stand on the shared sandbox: all its tests are
# "sandbox" tests then (scripts/test runs those one after another, the rest beside them).
SANDBOX_HELPERS = ("running_sandbox", "run_checks", "sandbox", "fault", "sandbox_secrets",
                   "admin_dsn", "sandbox_logs_kept", "environment_with")


def _names_used(code: CodeType) -> Iterator[str]:
    """The global (and attribute) names a function's code uses, its nested functions' too."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _names_used(const)


def _stands_on_sandbox(function: Any, seen: set[CodeType]) -> bool:
    """Whether ``function``, or a function of its module it calls, uses a helper of
    SANDBOX_HELPERS (by identity, whatever name its module gave it)."""
    code = getattr(function, "__code__", None)
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    if code is None or module is None or code in seen:
        return False
    seen.add(code)
    helpers = [globals()[name] for name in SANDBOX_HELPERS]
    space = vars(module)
    for name in _names_used(code):
        value = space.get(name)
        if value is None:
            continue
        if any(value is helper for helper in helpers):
            return True
        if (inspect.isfunction(value) and value.__module__ == module.__name__
                and _stands_on_sandbox(value, seen)):
            return True
    return False


@pytest.hookimpl(tryfirst=True)  # before -m selects by the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared sandbox takes one test at a time (a fault is global, and a game day's
    observers run in its test's process): a test that stands on it — through the
    running_sandbox fixture, or a helper above used by its function, a function of its
    module it calls, or one of its fixtures — is marked ``sandbox``, so scripts/test runs
    those in one process, in order, and the others in another, at the same time."""
    for item in items:
        if item.get_closest_marker("sandbox") or not isinstance(item, pytest.Function):
            continue
        fixtures = [definition.func
                    for definitions in item._fixtureinfo.name2fixturedefs.values()
                    for definition in definitions]
        seen: set[CodeType] = set()
        if "running_sandbox" in item.fixturenames or any(
                _stands_on_sandbox(function, seen) for function in (item.function, *fixtures)):
            item.add_marker(pytest.mark.sandbox)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Only the observers of a module with a test to run: a deselected one would cost time.
    selected = {item.module.__name__ for item in session.items
                if isinstance(item, pytest.Function) and item.module is not None}
    GAME_DAY_OBSERVERS[:] = [o for o in GAME_DAY_OBSERVERS if o.__module__ in selected]


_WARM: list[Any] = []


def _warm_runs() -> Any:
    """The session's warm pytest process (warm_runs.py), started on first use."""
    if not _WARM:
        from warm_runs import WarmRuns

        _WARM.append(WarmRuns(ROOT))
    return _WARM[0]


def pytest_sessionfinish() -> None:
    for warm in _WARM:
        warm.close()
    _WARM.clear()


def run_checks(tmp_path: Path, *args: str, env_file: Path = SANDBOX_TOML,
               extra_env: dict[str, str] | None = None,
               cold: bool = False) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the check suite as a user does (pytest in the repo), return its summary. Forked
    from the session's warm interpreter (warm_runs.py); ``cold``: a fresh ``python -m
    pytest``, where the interpreter's own start is part of what is judged."""
    reports = tmp_path / "reports"
    env = {**os.environ, **(extra_env or {})}
    env.pop("PYTEST_ADDOPTS", None)
    # --opt=value: a bare path argument would be taken for a test path by pytest.
    argv = [f"--env-file={env_file}", f"--reports-dir={reports}", *args]
    if cold or os.environ.get("UNIBAZZAR_SELFTEST_COLD_RUNS"):
        result = subprocess.run([sys.executable, "-m", "pytest", *argv], capture_output=True,
                                text=True, cwd=ROOT, env=env, timeout=300)
    else:
        result = _warm_runs().run(argv, env, ROOT, timeout=300)
    summary_path = reports / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return result, summary
