"""The sandbox's own promises: a second `up` says it already runs, `down` leaves no
process and no port behind, and `up` brings it back."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from conftest import sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]

STATE_DIR = Path(os.environ.get("UNIBAZZAR_SANDBOX_DIR", "/tmp/unibazzar-sandbox"))
SERVER_NAMES = ("postgres", "beam.smp", "epmd", "moto_server", "chroma",
                "unibazzar_sandbox")


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.3)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def sandbox_processes(ports: list[int]) -> list[str]:
    """Every process that is one of the sandbox's servers or runs from its state dir. A
    redis-server counts on one of the sandbox's ports only: other self-tests run their own."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        redis = "redis-server" in cmdline and any(f":{port}" in cmdline for port in ports)
        if (str(STATE_DIR) in cmdline or redis
                or any(name in cmdline for name in SERVER_NAMES)):
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
