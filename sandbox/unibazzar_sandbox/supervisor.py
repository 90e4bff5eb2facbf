"""The one long-lived process that owns every server of a running sandbox.

It starts the components (in parallel where they do not depend on each other),
answers a small control protocol on a Unix socket (status, stop NAME, start NAME,
hold NAME, release NAME, down), and on SIGTERM releases every hold and stops everything
in reverse order (again in parallel). Owning the children (and the game-day faults held
open, holds.py) in one process is what lets `down` leave nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socketserver
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mirakuru import Executor

from unibazzar_sandbox.components import BY_NAME, COMPONENTS, Component
from unibazzar_sandbox.holds import HOLDS, Hold
from unibazzar_sandbox.layout import PORTS, Layout, load_or_create_secrets

DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "auth-service": ("postgresql",),
    "listing-service": ("moto", "rabbitmq", "redis"),
    "order-service": ("postgresql", "payments"),
    # Its seed pays the canary order in the orders database.
    "payments": ("postgresql",),
    "ai-service": ("vector-db", "redis"),
}


def _in_dependency_order(act: Callable[[Component], None], reverse: bool = False) -> None:
    """``act`` on every component at once, each on its own thread, a component only after
    those it depends on (``reverse``: only after those that depend on it)."""
    after = {c.name: set(DEPENDS_ON.get(c.name, ())) for c in COMPONENTS}
    if reverse:
        after = {c.name: {d for d, on in DEPENDS_ON.items() if c.name in on}
                 for c in COMPONENTS}
    done = {c.name: threading.Event() for c in COMPONENTS}

    def run(component: Component) -> None:
        try:
            for name in after[component.name]:
                done[name].wait()
            act(component)
        finally:
            done[component.name].set()

    threads = [threading.Thread(target=run, args=(c,), name=c.name) for c in COMPONENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _terminate_within(executor: Executor, grace_s: float) -> None:
    assert executor.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(executor.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while executor.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    executor.kill()  # what is left of its group, and its daemons (mirakuru finds them all)


class Supervisor:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.secrets = load_or_create_secrets(layout)
        self.executors: dict[str, Executor] = {}
        self.logs: dict[str, IO[Any]] = {}
        self.lock = threading.RLock()
        self.status = "starting"
        self.error: str | None = None
        self.stop_requested = threading.Event()
        self.holds: dict[str, Hold] = {}  # game-day faults held open, by name

    # ---- state file ---------------------------------------------------------------------
    def write_state(self) -> None:
        with self.lock:
            components = {}
            for c in COMPONENTS:
                executor = self.executors.get(c.name)
                running = bool(executor and executor.running())
                components[c.name] = {
                    "running": running,
                    "pid": executor.process.pid if running and executor and executor.process else None,
                    "ports": {p: PORTS[p] for p in c.ports},
                }
            state = {"pid": os.getpid(), "status": self.status, "error": self.error,
                     "components": components, "holds": sorted(self.holds)}
            # Under the lock: components start and stop on threads of their own, and two
            # writers of the one temporary file would interleave.
            tmp = self.layout.statefile.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(self.layout.statefile)

    # ---- components ---------------------------------------------------------------------
    def _log(self, name: str) -> IO[Any]:
        if name not in self.logs:
            self.layout.logs.mkdir(parents=True, exist_ok=True)
            self.logs[name] = open(self.layout.logs / f"{name}.server.log", "a")  # noqa: SIM115
        return self.logs[name]

    def start(self, name: str) -> None:
        component = BY_NAME[name]
        with self.lock:
            executor = self.executors.get(name)
            if executor is not None and executor.running():
                return
            executor = component.make(self.layout, self.secrets, self._log(name))
            self.executors[name] = executor
        executor.start()
        if component.seed is not None:
            component.seed(self.layout, self.secrets)
        self.write_state()

    def stop(self, name: str, grace_s: float | None = None) -> None:
        """SIGTERM, and the server's own time to end; ``grace_s``: at most that, then kill."""
        with self.lock:
            executor = self.executors.get(name)
        if executor is not None and executor.running():
            try:
                if grace_s is None:
                    executor.stop()
                else:
                    _terminate_within(executor, grace_s)
            except Exception:  # a server that exits uncleanly on SIGTERM is still stopped
                executor.kill()
        self.write_state()

    def up(self) -> None:
        from unibazzar_sandbox.faults import clear

        clear(self.layout)  # a fresh sandbox starts with no game-day fault on
        for component in COMPONENTS:
            if component.prepare is not None:
                component.prepare(self.layout, self.secrets)
        failures: list[str] = []

        def start(component: Component) -> None:
            if failures:
                return
            started = time.monotonic()
            try:
                self.start(component.name)
            except Exception as exc:
                failures.append(f"{component.name}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                return
            print(f"{component.name}: ready in {time.monotonic() - started:.1f} s", flush=True)

        _in_dependency_order(start)
        if failures:
            raise RuntimeError("; ".join(failures))

    # ---- game-day faults held open -----------------------------------------------------------
    def hold(self, name: str) -> None:
        with self.lock:
            if name in self.holds:
                return
        held = HOLDS[name](self.layout, self.secrets)  # seconds at most: outside the lock
        with self.lock:
            duplicate = name in self.holds
            if not duplicate:
                self.holds[name] = held
        if duplicate:
            held.release()
        self.write_state()

    def release(self, name: str) -> None:
        with self.lock:
            held = self.holds.pop(name, None)
        if held is not None:
            held.release()
        self.write_state()

    def down(self) -> None:
        self.status = "stopping"
        for name in list(self.holds):
            try:
                self.release(name)
            except Exception:  # its component may be gone already; stopping ends it anyway
                traceback.print_exc()

        def stop(component: Component) -> None:
            started = time.monotonic()
            try:
                self.stop(component.name, component.down_grace_s)
            except Exception:  # the others still stop
                traceback.print_exc()
            print(f"{component.name}: stopped in {time.monotonic() - started:.1f} s", flush=True)

        # At once, each after what stands on it: one after another took 8 s, mostly waiting.
        _in_dependency_order(stop, reverse=True)
        for log in self.logs.values():
            log.close()

    # ---- control ------------------------------------------------------------------------
    def handle(self, command: str) -> dict[str, Any]:
        verb, _, name = command.strip().partition(" ")
        if verb == "status":
            self.write_state()
            return json.loads(self.layout.statefile.read_text())  # type: ignore[no-any-return]
        if verb in ("stop", "start"):
            if name not in BY_NAME:
                return {"ok": False, "error": f"no component {name!r}; one of {sorted(BY_NAME)}"}
            (self.stop if verb == "stop" else self.start)(name)
            return {"ok": True}
        if verb in ("hold", "release"):
            if name not in HOLDS:
                return {"ok": False, "error": f"no hold {name!r}; one of {sorted(HOLDS)}"}
            (self.hold if verb == "hold" else self.release)(name)
            return {"ok": True}
        if verb == "down":
            self.stop_requested.set()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {command!r}"}


def serve(layout: Layout) -> int:
    supervisor = Supervisor(layout)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop_requested.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop_requested.set())
    layout.pidfile.write_text(str(os.getpid()))
    supervisor.write_state()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline().decode()
            try:
                answer = supervisor.handle(line)
            except Exception as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    Path(layout.control_socket).unlink(missing_ok=True)
    server = socketserver.ThreadingUnixStreamServer(str(layout.control_socket), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = 0
    try:
        supervisor.up()
        supervisor.status = "ready"
        supervisor.write_state()
        print("sandbox ready", flush=True)
        supervisor.stop_requested.wait()
    except Exception as exc:
        supervisor.status, supervisor.error, code = "failed", str(exc), 1
        supervisor.write_state()
    finally:
        server.shutdown()
        server.server_close()
        supervisor.down()
        supervisor.status = "stopped" if code == 0 else "failed"
        supervisor.write_state()
        layout.control_socket.unlink(missing_ok=True)
        layout.pidfile.unlink(missing_ok=True)
    return code
