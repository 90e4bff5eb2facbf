"""Check-suite runs forked from one warm interpreter, for the self-tests that run the suite
as a user does (conftest.run_checks), about 200 times a session.

A cold ``python -m pytest`` spends half a second importing pytest and the clients (boto3,
kubernetes, psycopg, pika, …) before its first probe. Here one process imports them once
and forks a child per run: the child is a process of its own, as a user's run is (its own
environment, working directory, file descriptors, exit status), only without the imports.

The warm process has no thread (forking a threaded process can copy a held lock): it reads
one JSON request a line on stdin, forks, and answers ``{"id", "pid"}`` at once and
``{"id", "status"}`` when that child ends, so runs may overlap (the busy-host game day runs
three at a time). The caller (WarmRuns) waits in threads of its own.

    python tests/warm_runs.py     # serves; conftest.py starts it
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

# Imported once here, so no run pays for them (what a checks run imports: test_lean_startup).
# No pytest plugin (xdist, allure_pytest, ours): pytest rewrites a plugin's asserts as it
# imports it, and warns of one that was imported before.
WARM_MODULES = ("pytest", "allure_commons", "boto3", "botocore.session", "kubernetes.client",
                "psycopg", "redis", "pika", "requests", "pydantic", "execnet")


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the user's ``python -m pytest ARGS`` and exit with its
    status. Never returns."""
    code = 3
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdin = open(0)  # noqa: SIM115 - the child's stdin until it exits
        sys.stdout = open(1, "w", buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1)  # noqa: SIM115
        sys.argv = [sys.executable, *request["args"]]
        sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        import pytest

        code = int(pytest.main(request["args"]))
        # What an interpreter does as it ends, which os._exit below skips: wait for the
        # threads that are no daemons and run the exit handlers. A run that would hang or
        # fail there as a user's process does so here too.
        import atexit

        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a run that crashed before pytest's own handling: say so
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve() -> None:
    import importlib
    import pkgutil

    for name in WARM_MODULES:
        importlib.import_module(name)
    # Our plugin's modules too, whatever a run would import of them lazily: building the
    # summary's pydantic models alone reads their source for the docstrings (0.1 s a run).
    import unibazzar_health

    for module in pkgutil.walk_packages(unibazzar_health.__path__, "unibazzar_health."):
        importlib.import_module(module.name)
    children: dict[int, Any] = {}
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    pending = b""
    while True:
        # The descriptor itself, not sys.stdin: a buffered reader would hold the second of
        # two requests that arrived together where select() cannot see it.
        readable, _, _ = select.select([0], [], [], 0.01 if children else 0.2)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(request)
            children[pid] = request["id"]
            print(json.dumps({"id": request["id"], "pid": pid}), file=out, flush=True)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print(json.dumps({"id": children.pop(pid),
                                  "status": os.waitstatus_to_exitcode(status)}),
                      file=out, flush=True)


class WarmRuns:
    """The self-tests' side: start the warm process once, run the suite through it."""

    def __init__(self, root: Path) -> None:
        env = {**os.environ}
        env.pop("PYTEST_ADDOPTS", None)
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())], cwd=root, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline()
        if not first:
            raise RuntimeError("the warm pytest process did not start")
        self._lock = threading.Lock()
        self._closed = False
        self._dir = Path(tempfile.mkdtemp(prefix="unibazzar-warm-runs-"))
        self._next = 0
        self._waiting: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            answer = json.loads(line)
            with self._arrived:
                self._waiting.setdefault(answer["id"], {}).update(answer)
                self._arrived.notify_all()
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()

    def run(self, args: list[str], env: dict[str, str], cwd: Path,
            timeout: float) -> subprocess.CompletedProcess[str]:
        """``python -m pytest ARGS`` as a subprocess.run(capture_output=True, text=True)
        would give it; TimeoutExpired after ``timeout`` seconds (the child is killed)."""
        with self._lock:
            self._next += 1
            rid = self._next
        stdout, stderr = self._dir / f"run{rid}.out", self._dir / f"run{rid}.err"
        request = {"id": rid, "args": args, "env": env, "cwd": str(cwd),
                   "stdout": str(stdout), "stderr": str(stderr)}
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        with self._arrived:
            ended = self._arrived.wait_for(
                lambda: "status" in self._waiting.get(rid, {}) or self._closed, timeout)
            answer = self._waiting.pop(rid, {})
        if not ended or "status" not in answer:
            if "pid" in answer:
                os.kill(answer["pid"], signal.SIGKILL)
            raise subprocess.TimeoutExpired(["pytest", *args], timeout)
        text = [path.read_text(errors="replace") for path in (stdout, stderr)]
        for path in (stdout, stderr):
            path.unlink()
        return subprocess.CompletedProcess(["pytest", *args], answer["status"], *text)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


if __name__ == "__main__":
    serve()
