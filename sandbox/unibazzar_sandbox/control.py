"""The supervisor's control socket, as its clients speak it: one line of command, one line of
JSON back. Its own module, below both the command line and the faults that switch
components through it, so neither imports the other."""

from __future__ import annotations

import json
import socket
from typing import Any

from unibazzar_sandbox.layout import Layout


def control(layout: Layout, command: str, timeout: float = 120.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(timeout)
        conn.connect(str(layout.control_socket))
        conn.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)  # type: ignore[no-any-return]
