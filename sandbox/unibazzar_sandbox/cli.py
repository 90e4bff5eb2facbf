"""unibazzar-sandbox up | down | status | stop NAME | start NAME | fault list | fault NAME on|off

`up` is idempotent and says so when a sandbox already runs; `down` leaves no
process or port behind; stop/start take one component down and back (faults);
`fault` switches a game-day fault (faults.py) on or off, `fault list` names them all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from unibazzar_sandbox.control import control
from unibazzar_sandbox.layout import HOST, PORTS, Layout

UP_TIMEOUT_S = 240.0
DOWN_TIMEOUT_S = 90.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive (our own child that has not been reaped).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def supervisor_pid(layout: Layout) -> int | None:
    try:
        pid = int(layout.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.3)
        return probe.connect_ex((HOST, port)) == 0


def _read_state(layout: Layout) -> dict[str, Any]:
    try:
        return json.loads(layout.statefile.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _log_tail(layout: Layout, lines: int = 30) -> str:
    path = layout.path("supervisor.log")
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no supervisor log)"


def up(layout: Layout) -> int:
    pid = supervisor_pid(layout)
    if pid is not None:
        print(f"sandbox already running (supervisor pid {pid}, state in {layout.root})")
        return status(layout)
    busy = [f"{name} port {port}" for name, port in PORTS.items() if port_in_use(port)]
    if busy:
        print(f"cannot start the sandbox: in use on {HOST}: {', '.join(busy)}", file=sys.stderr)
        return 1
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.statefile.unlink(missing_ok=True)
    started = time.monotonic()
    with open(layout.path("supervisor.log"), "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "unibazzar_sandbox", "--dir", str(layout.root), "_supervise"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # outlives this command, apart from its terminal
    print(f"starting the sandbox in {layout.root} (supervisor pid {process.pid}) ...", flush=True)
    while time.monotonic() - started < UP_TIMEOUT_S:
        state = _read_state(layout)
        if state.get("status") == "ready":
            print(f"sandbox ready in {time.monotonic() - started:.1f} s")
            return status(layout)
        if process.poll() is not None or state.get("status") == "failed":
            process.wait()
            print(f"sandbox failed to start: {state.get('error')}\n{_log_tail(layout)}",
                  file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"sandbox not ready after {UP_TIMEOUT_S:g} s; stopping it\n{_log_tail(layout)}",
          file=sys.stderr)
    down(layout)
    return 1


def down(layout: Layout) -> int:
    pid = supervisor_pid(layout)
    state = _read_state(layout)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    # Whatever a dead supervisor left behind, by the pids it recorded.
    for component in state.get("components", {}).values():
        if component.get("pid") and _alive(component["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component["pid"], signal.SIGKILL)
    busy = [f"{name} port {port}" for name, port in PORTS.items() if port_in_use(port)]
    if busy:
        print(f"sandbox down, but still in use: {', '.join(busy)}", file=sys.stderr)
        return 1
    print("sandbox down" if pid or state else "sandbox was not running")
    return 0


def status(layout: Layout) -> int:
    pid = supervisor_pid(layout)
    if pid is None:
        print("sandbox not running")
        return 3
    state = control(layout, "status")
    print(f"sandbox {state['status']} (supervisor pid {pid}, state in {layout.root})")
    for name, component in state["components"].items():
        ports = ", ".join(f"{p}={HOST}:{n}" for p, n in component["ports"].items())
        mark = "up  " if component["running"] else "DOWN"
        print(f"  {mark} {name:16} {ports}")
    print(f"secrets: {layout.secrets_file}")
    return 0


def switch(layout: Layout, verb: str, name: str) -> int:
    if supervisor_pid(layout) is None:
        print("sandbox not running", file=sys.stderr)
        return 3
    answer = control(layout, f"{verb} {name}")
    if not answer.get("ok"):
        print(answer.get("error"), file=sys.stderr)
        return 2
    print(f"{name}: {'stopped' if verb == 'stop' else 'started'}")
    return 0


def fault(layout: Layout, name: str, state: str | None, as_json: bool = False) -> int:
    from unibazzar_sandbox.faults import BY_NAME, FAULTS

    running = supervisor_pid(layout) is not None
    if name == "list":
        # Without a sandbox the list still says what each fault is; whether it is on, not.
        described = [f.describe(layout if running else None) for f in FAULTS]
        if as_json:
            print(json.dumps(described, indent=2))
            return 0
        for f in described:
            print(f"{ {True: 'ON ', False: 'off', None: '   '}[f['on']]} {f['name']:26} "
                  f"{f['what']}")
            print(f"    {'':26} {_caught_by(f['fails'], f['changes'], f['ripens_s'])}")
        return 0
    if not running:
        print("sandbox not running", file=sys.stderr)
        return 3
    chosen = BY_NAME.get(name)
    if chosen is None or state not in ("on", "off"):
        known = ", ".join(BY_NAME)
        print(f"usage: fault NAME on|off, or fault list (faults: {known})", file=sys.stderr)
        return 2
    (chosen.on if state == "on" else chosen.off)(layout)
    if state == "on":
        print(f"{name}: on ({_caught_by(chosen.fails, chosen.changes, chosen.ripens_s)})")
    else:
        print(f"{name}: off")
    return 0


def _caught_by(fails: Any, changes: Any, ripens_s: float) -> str:
    """What a fault does to a run: (check, severity) pairs or dicts, or changes named."""
    pairs = [(f["check"], f["severity"]) if isinstance(f, dict) else tuple(f) for f in fails]
    said = ("fails: " + ", ".join(f"{check} ({severity})" for check, severity in pairs)
            if pairs else "fails nothing; the verdict names CHANGE " + ", ".join(changes)
            if changes else "fails nothing; the verdict stays healthy")
    return said + (f"; seen by the checks {ripens_s:g} s after on" if ripens_s else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unibazzar-sandbox", description=__doc__)
    parser.add_argument("--dir", help="state directory (default $UNIBAZZAR_SANDBOX_DIR "
                                      "or /tmp/unibazzar-sandbox)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the sandbox (idempotent)")
    sub.add_parser("down", help="stop everything it started")
    sub.add_parser("status", help="what runs, on which ports")
    for verb in ("stop", "start"):
        p = sub.add_parser(verb, help=f"{verb} one component (fault injection)")
        p.add_argument("name")
    p = sub.add_parser("fault", help="game days: fault list, or fault NAME on|off")
    p.add_argument("name", help="a fault's name, or list")
    p.add_argument("state", nargs="?", choices=("on", "off"))
    p.add_argument("--json", action="store_true", help="fault list as JSON")
    sub.add_parser("_supervise", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    layout = Layout.from_env(args.dir)
    if args.command == "_supervise":
        from unibazzar_sandbox.supervisor import serve

        return serve(layout)
    if args.command == "up":
        return up(layout)
    if args.command == "down":
        return down(layout)
    if args.command == "status":
        return status(layout)
    if args.command == "fault":
        return fault(layout, args.name, args.state, args.json)
    return switch(layout, args.command, args.name)
