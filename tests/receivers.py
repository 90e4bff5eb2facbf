"""Real HTTP receivers on loopback playing Slack, PagerDuty, a webhook and GitHub Issues for
the posting self-tests: each a small threaded http.server that records what it receives and
answers as the service does. A test switches a receiver's behaviour: ``ok``; ``error`` (HTTP
500, nothing recorded); ``slow`` (holds the request past any deadline before reading it,
records nothing: overloaded, never processed); ``lag`` (records the request and acts on it,
but answers only after ``lag_s``: the sender's read times out though it arrived);
``block`` (records the request, then never answers until released: the test kills the
sender meanwhile); ``stall`` (as ``block``, but acts on the request first, as a service that
did the work and never answered). ``fail`` lists requests answered once each with HTTP 502
(method, path suffix). ``down()`` closes the port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text
    raw: bytes = b""


@dataclass
class Receiver:
    name: str
    behaviour: str = "ok"
    slow_s: float = 30.0
    lag_s: float = 2.0
    fail: list[tuple[str, str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 200, "ok"

    def bodies(self, method: str | None = None) -> list[Any]:
        return [r.body for r in self.received if method is None or r.method == method]

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def all_text(self) -> str:
        return "\n".join(r.raw.decode("utf-8", "replace") + json.dumps(r.headers)
                         for r in self.received)


class SlackReceiver(Receiver):
    pass


class PagerDutyReceiver(Receiver):
    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 202, {"status": "success", "message": "Event processed",
                     "dedup_key": body.get("dedup_key") if isinstance(body, dict) else None}


class WebhookReceiver(Receiver):
    pass


@dataclass
class GitHubReceiver(Receiver):
    """Issues of one repository: create, list, get, comment, close. Checks the token."""

    token: str = ""
    repository: str = "unibazzar/incidents"
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[str]] = field(default_factory=dict)

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        route = urlsplit(path).path.removeprefix(f"/repos/{self.repository}")
        if method == "POST" and route == "/issues":
            number = len(self.issues) + 1
            self.issues[number] = {"number": number, "state": "open", "title": body["title"],
                                   "body": body["body"], "labels": body.get("labels", []),
                                   "html_url": f"{self.base}/{self.repository}/issues/{number}"}
            return 201, self.issues[number]
        if method == "GET" and route == "/issues":
            return 200, sorted(self.issues.values(), key=lambda i: -i["number"])
        parts = route.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "issues" and parts[1].isdigit():
            number = int(parts[1])
            if number not in self.issues:
                return 404, {"message": "Not Found"}
            if method == "POST" and parts[2:] == ["comments"]:
                self.comments.setdefault(number, []).append(body["body"])
                return 201, {"html_url": f"{self.base}/issues/{number}#c"
                                         f"{len(self.comments[number])}"}
            if method == "GET" and parts[2:] == ["comments"]:
                query = dict(parse_qsl(urlsplit(path).query))
                size, page = int(query.get("per_page", 30)), int(query.get("page", 1))
                listed = [{"body": text, "html_url": f"{self.base}/issues/{number}#c{n}"}
                          for n, text in enumerate(self.comments.get(number, []), 1)]
                return 200, listed[(page - 1) * size:page * size]
            if method == "PATCH" and len(parts) == 2:
                self.issues[number].update(body)
                return 200, self.issues[number]
            if method == "GET" and len(parts) == 2:
                return 200, self.issues[number]
        return 404, {"message": "Not Found"}


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            if receiver.behaviour == "slow":
                time.sleep(receiver.slow_s)
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            if receiver.behaviour == "error":
                self._send(500, {"message": "internal error"})
                return
            if isinstance(receiver, GitHubReceiver) and \
                    self.headers.get("Authorization") != f"Bearer {receiver.token}":
                self._send(401, {"message": "Bad credentials"})
                return
            failing = next((f for f in receiver.fail if f[0] == self.command
                            and urlsplit(self.path).path.endswith(f[1])), None)
            if failing is not None:
                receiver.fail.remove(failing)
                self._send(502, {"message": "bad gateway"})
                return
            receiver.received.append(Received(self.command, self.path, dict(self.headers),
                                              body, raw))
            receiver.arrived.set()
            if receiver.behaviour == "block":
                receiver.released.wait(120)
                return
            status, answer = receiver.answer(self.command, self.path, body)
            if receiver.behaviour == "stall":
                receiver.released.wait(120)
                return
            if receiver.behaviour == "lag":
                time.sleep(receiver.lag_s)
            self._send(status, answer)

        def _send(self, status: int, answer: Any) -> None:
            data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(answer, str)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the sender gave up waiting (lag): as a service would, carry on
                pass

        do_POST = do_GET = do_PATCH = _serve

    return Handler


@contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.server, receiver.port = server, server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        receiver.down()


@dataclass(frozen=True)
class RedisServer:
    url: str  # carries no password
    password: str


def start_redis(directory: Any) -> tuple[Any, RedisServer]:
    """A real redis-server on a free loopback port, with a password, persisting nothing
    (ready in about 0.05 s)."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        import pytest

        pytest.skip("redis-server is not installed (scripts/bootstrap installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = "r3dis-store-pw-5c1e"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    return process, RedisServer(f"redis://127.0.0.1:{port}/7", password)
