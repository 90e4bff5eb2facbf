"""The sandbox's own promises: a second `up` says it already runs, `down` leaves no
process and no port behind, and `up` brings it back."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from conftest import DEFAULT_SANDBOX_STATE, SANDBOX_STATE, sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]

STATE_DIR = SANDBOX_STATE
SERVER_NAMES = ("postgres", "beam.smp", "epmd", "moto_server", "chroma",
                "unibazzar_sandbox")


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.3)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def started_for(pid: str) -> str:
    """The state dir the sandbox a process belongs to was started for: the one its command
    line names, or its environment; else its parent's (PostgreSQL's children write their
    title over both); else the default one."""
    for _ in range(64):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            break
        if f"{STATE_DIR}/" in cmdline:
            return str(STATE_DIR)
        named = [v.split(b"=", 1)[1].decode() for v in environ
                 if v.startswith(b"UNIBAZZAR_SANDBOX_DIR=")]
        if named:
            return named[0]
        if parent in ("0", "1"):
            break
        pid = parent
    return DEFAULT_SANDBOX_STATE


def sandbox_processes(ports: list[int]) -> list[str]:
    """Every process that is one of this sandbox's servers or runs from its state dir. A
    redis-server counts on one of the sandbox's ports only: other self-tests run their own.
    A second sandbox may run beside this one: its servers are not counted."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        redis = "redis-server" in cmdline and any(f":{port}" in cmdline for port in ports)
        server = any(name in cmdline for name in SERVER_NAMES)
        if (redis or server or f"{STATE_DIR}/" in cmdline) \
                and started_for(pid) == str(STATE_DIR):
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def test_up_twice_says_so_down_leaves_nothing_up_again() -> None:
    again = sandbox("up")
    assert "sandbox already running" in again.stdout
    state = json.loads((STATE_DIR / "state.json").read_text())
    ports = [p for c in state["components"].values() for p in c["ports"].values()]
    assert len(ports) == 14 and all(listening(p) for p in ports)
    # Outside the kernel's ephemeral range, where an outgoing connection could hold a port.
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ports) < ephemeral_low
    assert sandbox_processes(ports)

    down = sandbox("down")
    try:
        assert down.stdout.strip() == "sandbox down"
        assert [p for p in ports if listening(p)] == []
        assert sandbox_processes(ports) == []
        assert sandbox("status", check=False).returncode == 3
    finally:
        # Back up whatever was found: the tests after this one stand on it.
        up = sandbox("up")
    assert "sandbox ready" in up.stdout
    assert all(listening(p) for p in ports)
