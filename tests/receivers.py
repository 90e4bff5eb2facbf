"""Real HTTP receivers on loopback playing Slack, PagerDuty, a webhook and GitHub Issues for
the posting self-tests: each a pytest-httpserver ``HTTPServer`` (werkzeug, threaded: a held
request never holds the others) whose one handler records what it receives and answers as the
service does. A test switches a receiver's behaviour: ``ok``; ``error`` (HTTP
500, nothing recorded); ``slow`` (holds the request past any deadline, then hangs up;
records nothing: overloaded, never processed); ``lag`` (records the request and acts on it,
but answers only after ``lag_s``: the sender's read times out though it arrived);
``block`` (records the request, then never answers until released: the test kills the
sender meanwhile); ``stall`` (as ``block``, but acts on the request first, as a service that
did the work and never answered). ``fail`` lists requests answered once each with HTTP 502
(method, path suffix); ``answers`` lists whole answers (status, headers, body) given, one
each, to the next requests before anything else (a 429 with Retry-After, a 401), and
``arrivals`` the time of every request that came in. ``down()`` closes the port.

Strict as the real services are (FACTS.md, "What the real receivers accept"): Slack refuses
more than 50 blocks, a section over 3,000 characters, a header over 150, ``text`` over
40,000 (400 ``invalid_blocks`` / ``invalid_payload`` / ``no_text``); PagerDuty a routing key
that is not 32 characters, a summary over 1,024, an event over 512 KB (400 ``invalid
event``) and keeps each dedup_key's alerts as PagerDuty does (a trigger after the resolve
opens a new one); GitHub a title over 256 or a body or comment over 65,536 (422), drops the
labels when the token cannot push (``can_push``), and searches issues; the webhook refuses a
body over ``max_bytes`` (413)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pytest_httpserver import METHOD_ALL, URI_DEFAULT, HTTPServer
from werkzeug import Request, Response
from werkzeug.datastructures import Headers

# werkzeug logs every request at INFO: noise in a failing test's captured log. Its errors
# (a handler that crashed) still show.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


class LoopbackServer(HTTPServer):
    """pytest-httpserver's server on a free loopback port, threaded (a handler holding one
    request, as ``block`` does, never holds the others), polling for its shutdown every 20 ms
    (socketserver's default 0.5 s would cost each test's teardown up to that, per server).
    ``close()`` may be called twice (a test takes a service down, then its fixture ends)."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 0, threaded=True)

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.is_running():
            self.stop()


@contextmanager
def answering(handler: Callable[[Request], Response],
              method: str = METHOD_ALL) -> Iterator[LoopbackServer]:
    """A started ``LoopbackServer`` answering every path (of ``method``) with ``handler``.
    Afterwards a handler that crashed fails the test instead of passing as an HTTP 500."""
    server = LoopbackServer()
    server.expect_request(URI_DEFAULT, method=method).respond_with_handler(handler)
    server.start()
    try:
        yield server
    finally:
        server.close()
    server.check()


def hang_up(request: Request) -> Response:
    """Close the connection without an answer, as a service that never answered: the
    returned response is never sent (werkzeug finds the socket shut and drops it)."""
    with suppress(OSError):  # the sender may have gone already
        request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
    return Response(status=204)


@dataclass
class Received:
    method: str
    path: str  # as sent, query included
    headers: Headers  # case-insensitive, as HTTP's are
    body: Any  # parsed JSON, or the raw text
    raw: bytes = b""


# (status, headers, body): one answer, given whole.
Answer = tuple[int, dict[str, str], Any]


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
    server: LoopbackServer | None = None
    port: int = 0
    answers: list[Answer] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request
    # Hold only the first request this many seconds before acting on it (a race's loser).
    hold_first_s: float = 0.0
    _held: bool = False

    def refuse(self, method: str, path: str, body: Any, raw: bytes) -> Answer | None:
        """What the real service refuses outright (its limits), before acting."""
        return None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 200, "ok"

    def bodies(self, method: str | None = None) -> list[Any]:
        return [r.body for r in self.received if method is None or r.method == method]

    def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def all_text(self) -> str:
        return "\n".join(r.raw.decode("utf-8", "replace") + json.dumps(dict(r.headers))
                         for r in self.received)


class SlackReceiver(Receiver):
    def refuse(self, method: str, path: str, body: Any, raw: bytes) -> Answer | None:
        if not isinstance(body, dict):
            return 400, {}, "invalid_payload"
        blocks = body.get("blocks")
        if not body.get("text") and not blocks:
            return 400, {}, "no_text"
        if len(str(body.get("text") or "")) > 40_000:
            return 400, {}, "invalid_payload"
        if blocks is not None:
            if not isinstance(blocks, list) or len(blocks) > 50:
                return 400, {}, "invalid_blocks"
            for block in blocks:
                text = (block.get("text") or {}).get("text", "")
                limit = {"section": 3000, "header": 150}.get(block.get("type"), 3000)
                if len(text) > limit or any(len(e.get("text", "")) > 2000
                                            for e in block.get("elements", [])):
                    return 400, {}, "invalid_blocks"
        return None


@dataclass
class SlackApiReceiver(Receiver):
    """Slack's Web API for a bot: chat.postMessage (threads, metadata), chat.update,
    conversations.history and .replies, answering as Slack does — HTTP 200 with ``ok:
    false`` and its error (``invalid_auth``, ``channel_not_found``, ``not_in_channel``,
    ``msg_too_long``, ``invalid_blocks``), 429 ``ratelimited`` with Retry-After (through
    ``answers``)."""

    token: str = ""
    channels: dict[str, bool] = field(default_factory=dict)  # id -> the bot is a member
    messages: list[dict[str, Any]] = field(default_factory=list)  # in the order posted
    clock: float = 1_700_000_000.0

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        name = urlsplit(path).path.rsplit("/", 1)[-1]
        args = dict(parse_qsl(urlsplit(path).query))
        if isinstance(body, dict):
            args.update(body)
        elif isinstance(body, str) and "=" in body:
            args.update(parse_qsl(body))
        channel = str(args.get("channel") or "")
        if channel not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}
        if name in ("chat.postMessage", "chat.update") and not self.channels[channel]:
            return 200, {"ok": False, "error": "not_in_channel"}
        if name == "chat.postMessage":
            if len(str(args.get("text") or "")) > 40_000:
                return 200, {"ok": False, "error": "msg_too_long"}
            refused = SlackReceiver.refuse(self, method, path, args, b"")
            if refused is not None:
                return 200, {"ok": False, "error": refused[2]}
            self.clock += 1
            message = {"ts": f"{self.clock:.6f}", "text": args.get("text"),
                       "blocks": args.get("blocks"), "thread_ts": args.get("thread_ts"),
                       "metadata": args.get("metadata"), "channel": channel, "edits": []}
            if message["thread_ts"] and not self._by_ts(message["thread_ts"]):
                return 200, {"ok": False, "error": "thread_not_found"}
            self.messages.append(message)
            return 200, {"ok": True, "channel": channel, "ts": message["ts"],
                         "message": {"text": message["text"], "ts": message["ts"]}}
        if name == "chat.update":
            found = self._by_ts(str(args.get("ts")))
            if found is None:
                return 200, {"ok": False, "error": "message_not_found"}
            found["edits"].append(found["text"])
            found["text"], found["blocks"] = args.get("text"), args.get("blocks")
            return 200, {"ok": True, "channel": channel, "ts": found["ts"],
                         "text": found["text"]}
        metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        if name == "conversations.history":
            listed = [m for m in self.messages if m["channel"] == channel and
                      not m["thread_ts"]][::-1]
        elif name == "conversations.replies":
            root = str(args.get("ts"))
            listed = [m for m in self.messages if m["ts"] == root or m["thread_ts"] == root]
        else:
            return 200, {"ok": False, "error": "unknown_method"}
        return 200, {"ok": True, "messages": [
            {k: v for k, v in m.items() if k != "metadata" or metadata} for m in listed]}

    def _by_ts(self, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["ts"] == ts), None)

    def thread(self, root: int = 0) -> list[dict[str, Any]]:
        """The ``root``-th thread: its root then its replies."""
        roots = [m for m in self.messages if not m["thread_ts"]]
        return [roots[root], *(m for m in self.messages if m["thread_ts"] == roots[root]["ts"])]


@dataclass
class PagerDutyReceiver(Receiver):
    """Events API v2, keeping what PagerDuty would show: each dedup_key's alerts, the last
    one open until a resolve (a trigger after it opens a new one)."""

    # dedup_key -> each alert's state, in order
    alerts: dict[str, list[str]] = field(default_factory=dict)

    def refuse(self, method: str, path: str, body: Any, raw: bytes) -> Answer | None:
        def invalid(error: str) -> Answer:
            return 400, {}, {"status": "invalid event", "message": "Event object is invalid",
                             "errors": [error]}

        if len(raw) > 512 * 1024:
            return invalid("Event object is too large (maximum 512 KB)")
        if not isinstance(body, dict):
            return invalid("Event object is not JSON")
        if len(str(body.get("routing_key") or "")) != 32:
            return invalid("Length of 'routing_key' is incorrect (should be 32 characters)")
        if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
            return invalid("'event_action' is invalid")
        if len(str(body.get("dedup_key") or "")) > 255:
            return invalid("'dedup_key' is too long (maximum 255 characters)")
        if body["event_action"] == "trigger":
            payload = body.get("payload") or {}
            if not payload.get("summary") or len(payload["summary"]) > 1024:
                return invalid("'payload.summary' is missing or longer than 1024 characters")
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                return invalid("'payload.severity' is invalid")
        return None

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        key = body.get("dedup_key")
        alerts = self.alerts.setdefault(key, [])
        if body["event_action"] == "trigger" and (not alerts or alerts[-1] == "resolved"):
            alerts.append("triggered")
        elif body["event_action"] == "resolve" and alerts:
            alerts[-1] = "resolved"
        elif body["event_action"] == "acknowledge" and alerts and alerts[-1] != "resolved":
            alerts[-1] = "acknowledged"
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}

    def open_alerts(self) -> dict[str, int]:
        """dedup_key -> alerts still open (triggered or acknowledged)."""
        return {k: n for k, v in self.alerts.items()
                if (n := sum(state != "resolved" for state in v))}


@dataclass
class WebhookReceiver(Receiver):
    max_bytes: int = 1024 * 1024

    def refuse(self, method: str, path: str, body: Any, raw: bytes) -> Answer | None:
        if len(raw) > self.max_bytes:
            return 413, {}, {"message": "Request Entity Too Large"}
        return None


@dataclass
class GitHubReceiver(Receiver):
    """Issues of one repository: create, list, get, comment, close. Checks the token."""

    token: str = ""
    repository: str = "unibazzar/incidents"
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[str]] = field(default_factory=dict)
    # GitHub drops the labels of a create, silently, when the token cannot push.
    can_push: bool = True

    def refuse(self, method: str, path: str, body: Any, raw: bytes) -> Answer | None:
        def too_long(what: str, limit: int) -> Answer:
            return 422, {}, {"message": "Validation Failed", "errors": [
                {"resource": "Issue", "code": "custom", "field": what,
                 "message": f"{what} is too long (maximum is {limit} characters)"}]}

        if method in ("POST", "PATCH") and isinstance(body, dict):
            if len(str(body.get("title") or "")) > 256:
                return too_long("title", 256)
            if len(str(body.get("body") or "")) > 65_536:
                return too_long("body", 65_536)
        return None

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and urlsplit(path).path == "/search/issues":
            query = dict(parse_qsl(urlsplit(path).query))["q"]
            term = query.split('"')[1] if '"' in query else query.split()[0]
            items = [i for i in self.issues.values() if term in i["body"]]
            return 200, {"total_count": len(items), "items": items}
        route = urlsplit(path).path.removeprefix(f"/repos/{self.repository}")
        if method == "POST" and route == "/issues":
            number = len(self.issues) + 1
            labels = [{"name": n} for n in body.get("labels", [])] if self.can_push else []
            self.issues[number] = {"number": number, "state": "open", "title": body["title"],
                                   "body": body["body"], "labels": labels,
                                   "html_url": f"{self.base}/{self.repository}/issues/{number}"}
            return 201, self.issues[number]
        if method == "GET" and route == "/issues":
            query = dict(parse_qsl(urlsplit(path).query))
            listed = sorted(self.issues.values(), key=lambda i: -i["number"])
            if query.get("labels"):
                listed = [i for i in listed if query["labels"] in
                          {label["name"] for label in i["labels"]}]
            return 200, listed
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


def _serve(receiver: Receiver, request: Request) -> Response:
    """One request to ``receiver``, as its behaviour and the service it plays say."""
    receiver.arrivals.append(time.monotonic())
    if receiver.behaviour == "slow":
        time.sleep(receiver.slow_s)
        return hang_up(request)
    method, path = request.method, request.environ["RAW_URI"]  # the path as sent, with its query
    raw = request.get_data()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    if receiver.answers:
        status, headers, answer = receiver.answers.pop(0)
        return _answer(status, answer, headers)
    if receiver.behaviour == "error":
        return _answer(500, {"message": "internal error"})
    refused = receiver.refuse(method, path, body, raw)
    if refused is not None:
        return _answer(refused[0], refused[2], refused[1])
    if isinstance(receiver, GitHubReceiver) and \
            request.headers.get("Authorization") != f"Bearer {receiver.token}":
        return _answer(401, {"message": "Bad credentials"})
    if isinstance(receiver, SlackApiReceiver) and \
            request.headers.get("Authorization") != f"Bearer {receiver.token}":
        return _answer(200, {"ok": False, "error": "invalid_auth"})
    failing = next((f for f in receiver.fail if f[0] == method
                    and urlsplit(path).path.endswith(f[1])), None)
    if failing is not None:
        receiver.fail.remove(failing)
        return _answer(502, {"message": "bad gateway"})
    receiver.received.append(Received(method, path, Headers(list(request.headers.items())),
                                      body, raw))
    receiver.arrived.set()
    if receiver.hold_first_s and not receiver._held:
        receiver._held = True  # acted on after any request that comes meanwhile
        time.sleep(receiver.hold_first_s)
    if receiver.behaviour == "block":
        receiver.released.wait(120)
        return hang_up(request)
    status, answer = receiver.answer(method, path, body)
    if receiver.behaviour == "stall":
        receiver.released.wait(120)
        return hang_up(request)
    if receiver.behaviour == "lag":
        # The sender's read times out meanwhile: werkzeug drops the answer it cannot send,
        # as a service carries on.
        time.sleep(receiver.lag_s)
    return _answer(status, answer)


def _answer(status: int, answer: Any, headers: dict[str, str] | None = None) -> Response:
    text = isinstance(answer, str)
    return Response(answer if text else json.dumps(answer), status, headers,
                    content_type="text/plain" if text else "application/json")


@contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    server = LoopbackServer()
    server.expect_request(URI_DEFAULT).respond_with_handler(partial(_serve, receiver))
    server.start()
    receiver.server, receiver.port = server, server.port
    try:
        yield receiver
    finally:
        receiver.released.set()
        receiver.down()
    server.check()  # a receiver that crashed fails the test, not just its sender


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
