"""The one interface every notifier implements, and what crosses it.

A notifier is built from its validated section of the environment file (``build``, at
start-up: a bad config stops the run before any probe) and is handed, per delivery, the
rendered message and the summary narrowed to the incident (``Outgoing``): never a check, a
probe or the environment. It answers with a ``Receipt`` or raises ``DeliveryError``, whose
class is one of four (docs/notifications.md, "How an answer is classified"):

- delivered: a ``Receipt``;
- not delivered, retry (``retryable``): refused or unreachable before the request left
  (connection refused, TLS or proxy failure), 408, 429, 5xx, a rate limit — after
  ``retry_after`` seconds when the service says how long;
- may have been delivered (``maybe_delivered``): the request left and no answer came;
  posting resends only what the service deduplicates (``idempotent``) or what the notifier
  looks for before sending it again (``recoverable``); anything else ends ``unknown``;
- refused for good (neither): any other 4xx. It never succeeds as sent, so it is ``failed``
  at once with the service's own words, and ``fix`` names the ``[notify.*]`` key to correct
  when the service refused our credentials.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from unibazzar_health.reports.messages import Message

# Reads a secret by the variable a *_env key names (the run's resolved secrets).
SecretLookup = Callable[[str], str]
# Below this many seconds left, no request is started: it could not finish.
MIN_REQUEST_S = 0.2


@dataclass(frozen=True)
class Outgoing:
    delivery_id: str  # stable across retries and runs: an idempotency key for receivers
    kind: str  # alert | update | escalation | resolved
    environment: str
    dedup_key: str  # one per incident key and environment
    message: Message
    summary: Mapping[str, Any]  # the run's summary narrowed to this incident (redacted)
    incident: Mapping[str, Any]  # id, key, title, severity, services, checks, report_url…
    # For a threaded notifier (the ticket, Slack's thread mode): what its alert made (the
    # ticket's number, the thread's ts), once recorded; later kinds go there.
    root: Mapping[str, Any] | None = None
    attempt: int = 0  # earlier attempts of this delivery (this run's and previous runs')


@dataclass(frozen=True)
class Receipt:
    status: int | None = None  # the HTTP status
    detail: dict[str, Any] = field(default_factory=dict)  # kept: an issue number, a URL


class DeliveryError(Exception):
    """A send that did not succeed. ``maybe_delivered``: the request left and no answer came
    (a read timeout, a dropped connection), so the service may have acted on it; resending
    could post twice. ``retryable``: trying again may succeed (refused, 429, 5xx), not
    before ``retry_after`` seconds when the service said so. Neither: refused for good
    (``permanent``); ``fix`` then says which setting to correct, when one is to blame."""

    def __init__(self, reason: str, *, retryable: bool, maybe_delivered: bool = False,
                 retry_after: float | None = None, fix: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retryable, self.maybe_delivered = reason, retryable, maybe_delivered
        self.retry_after, self.fix = retry_after, fix

    @property
    def permanent(self) -> bool:
        """Refused for good: sending it again, as it is, can never succeed."""
        return not self.retryable and not self.maybe_delivered


class RequestBudget:
    """The time one send may take, request by request: each request at most
    ``per_request`` seconds, and none started that could not end before ``ends_at``
    (time.monotonic) — a notifier that makes several requests (the ticket's comment and
    close) never overruns the posting budget with a request in flight."""

    def __init__(self, per_request: float, ends_at: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_request, self.ends_at, self._clock = per_request, ends_at, clock

    def timeout(self) -> float:
        """Seconds for the next request; DeliveryError (nothing sent) when too few are
        left."""
        left = min(self.per_request, self.ends_at - self._clock())
        if left < MIN_REQUEST_S:
            raise DeliveryError("the posting budget ran out before the next request",
                                retryable=True)
        return left


class ConfigError(Exception):
    """A notifier's section cannot be used: ``key`` is relative to the section."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(reason)
        self.key, self.value, self.reason = key, value, reason


class Notifier(Protocol):
    name: str
    # The message kinds it posts (state.SEVERITY_CHANGE: the updates whose severity changed).
    kinds: frozenset[str]
    # Kinds whose resend is harmless at any moment, the service deduplicating (PagerDuty's
    # dedup_key): one that may have arrived is retried in the same run, one a dead runner
    # left mid-send is sent again.
    idempotent: frozenset[str]
    # Kinds whose resend first looks for what an earlier attempt made (a marker in the
    # ticket and its comments): one that may have arrived is sent again by the next run,
    # once the service has finished what it got; so is one a dead runner left mid-send.
    recoverable: frozenset[str]

    # Later kinds go where its alert went (the ticket, a Slack thread): they wait for the
    # alert's receipt, and fail if it is never recorded.
    threaded: bool
    # Kinds a resolution makes pointless while they wait unsent (PagerDuty: a trigger of an
    # occurrence already resolved would open an alert nothing closes); posting supersedes them.
    cancelled_by_resolution: frozenset[str]

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        """Deliver, each request within ``budget.timeout()``; raise DeliveryError."""
        ...

    def test(self, budget: RequestBudget) -> list[str]:
        """The test page (``notify test``): one clearly marked test message, sent now and
        outside the incident store; the service's answers, one line each. Raises
        DeliveryError like ``send``."""
        ...

    def hidden(self) -> list[str]:
        """Pieces of its secrets that could show in an error without the whole value (a
        webhook URL's path): the run's redactor hides them too."""
        ...


# Statuses that say "try again": a timeout, too early, rate limited, the service's own failure.
RETRY_STATUSES = (408, 425, 429)


def error_text(body: str) -> str:
    """The service's own words from an error body, short and on one line: a JSON error's
    message and errors (Slack's ``invalid_blocks``, PagerDuty's ``Invalid routing key``,
    GitHub's ``body is too long``), else the text itself."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("error", "message") if data.get(k)]
        errors = data.get("errors")
        if isinstance(errors, list):
            parts += [e.get("message") or e.get("code") or json.dumps(e)
                      if isinstance(e, dict) else str(e) for e in errors[:3]]
        if parts:
            body = "; ".join(str(p) for p in parts)
    return " ".join(body.split())[:300]


def retry_after(headers: Mapping[str, str] | None,
                now: Callable[[], float] = time.time) -> float | None:
    """Seconds the service asked us to wait (``Retry-After``: seconds or an HTTP date), None
    when it did not say."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def http_status_error(status: int, body: str, headers: Mapping[str, str] | None = None, *,
                      credentials: str | None = None,
                      revoked: Collection[int] = ()) -> DeliveryError:
    """An HTTP answer that is not a success, classified: retried when the service says to
    (408, 425, 429, with its Retry-After) or failed itself (5xx); any other 4xx is refused
    for good. ``credentials`` names the setting behind a 401/403 (and the ``revoked``
    statuses: a deleted incoming webhook answers 404 or 410)."""
    text = error_text(body)
    reason = f"HTTP {status}" + (f": {text}" if text else "")
    if status in RETRY_STATUSES or status >= 500:
        return DeliveryError(reason, retryable=True, retry_after=retry_after(headers))
    fix = None
    if credentials and (status in (401, 403) or status in revoked):
        fix = f"the service refused our credentials: check {credentials}"
    return DeliveryError(reason, retryable=False, fix=fix)


def requests_error(exc: Exception, timeout: float) -> DeliveryError:
    """What a requests exception says about delivery, in words that carry no URL (a URL
    may hold a token) and no header."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return DeliveryError(f"no connection within {timeout:g} s", retryable=True)
    # Both fail while connecting, before a byte of the request is sent: nothing arrived.
    if isinstance(exc, requests.exceptions.SSLError):
        return DeliveryError(f"TLS handshake failed ({_first_line(exc)})", retryable=True)
    if isinstance(exc, requests.exceptions.ProxyError):
        return DeliveryError(f"the proxy refused or failed ({_first_line(exc)})",
                             retryable=True)
    if isinstance(exc, requests.Timeout):
        return DeliveryError(f"no answer within {timeout:g} s (may have been delivered)",
                             retryable=True, maybe_delivered=True)
    if isinstance(exc, requests.ConnectionError):
        text = repr(exc.args)
        if "NewConnectionError" in text or "NameResolutionError" in text:
            refused = "refused" in text.lower()
            return DeliveryError("connection refused" if refused else "cannot connect",
                                 retryable=True)
        return DeliveryError("connection dropped before an answer (may have been delivered)",
                             retryable=True, maybe_delivered=True)
    return DeliveryError(f"{type(exc).__name__}", retryable=False)


def urllib_error(exc: BaseException, timeout: float) -> DeliveryError:
    """What an exception of urllib (slack_sdk's transport) says about delivery: urlopen
    wraps in URLError what happens before the request is sent (connect, DNS, TLS, a proxy),
    so nothing arrived; a timeout or a dropped connection after that may have."""
    import http.client
    import ssl
    import urllib.error

    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return DeliveryError(
            "connection refused" if isinstance(reason, ConnectionRefusedError) else
            f"no connection within {timeout:g} s" if isinstance(reason, TimeoutError) else
            "TLS handshake failed" if isinstance(reason, ssl.SSLError) else
            "cannot connect", retryable=True)
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"no answer within {timeout:g} s (may have been delivered)",
                             retryable=True, maybe_delivered=True)
    if isinstance(exc, http.client.HTTPException | OSError):
        return DeliveryError("connection dropped before an answer (may have been delivered)",
                             retryable=True, maybe_delivered=True)
    return DeliveryError(type(exc).__name__, retryable=False)


def _first_line(exc: BaseException) -> str:
    """An exception's innermost reason, without the URL requests puts around it."""
    import re

    text = str(exc)
    found = re.findall(r"\(Caused by \w+\((.*)\)\)", text)
    text = found[-1] if found else text
    text = re.sub(r"https?://\S+", "the URL", text)
    return " ".join(text.split())[:160]


def post_json(session: Any, method: str, url: str, body: Any, timeout: float,
              headers: Mapping[str, str] | None = None, *,
              classify: Callable[[Any], DeliveryError] | None = None) -> Any:
    """One HTTP request with a JSON body (or, as bytes, an already encoded one), bounded
    (connect and read timeouts), no retries of its own; returns the response of a 2xx,
    raises DeliveryError otherwise (``classify`` turns a non-2xx response into one; by
    default http_status_error)."""
    import requests

    sent = {"data": body} if isinstance(body, bytes) else {"json": body}
    try:
        response = session.request(method, url, headers=dict(headers or {}),
                                   timeout=(timeout, timeout), allow_redirects=False, **sent)
    except requests.RequestException as exc:
        raise requests_error(exc, timeout) from None
    if not 200 <= response.status_code < 300:
        if classify is not None:
            raise classify(response)
        raise http_status_error(response.status_code, response.text, response.headers)
    return response


def new_session() -> Any:
    """A requests session that never retries on its own (posting decides what is resent)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # trust_env stays on: a runner may reach Slack or PagerDuty only through HTTPS_PROXY.
    return session


# ---- fitting a message within a service's limits ----------------------------------------
EVIDENCE_CHARS = 1000  # an evidence line is cut to this first: the report has it whole
LINE_CHARS = 2000  # no other line is longer than this
MORE = "… {n} more lines — see the report"
_KEPT_AT_END = ("Report: ", "Runbook: ")


def _cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[:max(0, limit - 1)] + "…"


def fit_lines(lines: list[str], limit: int) -> list[str]:
    """Markdown lines whose text (joined by newlines) is at most ``limit`` characters: the
    evidence is cut first (each line to EVIDENCE_CHARS, then fewer), then lines from the end
    go, said in their place (MORE); the report and runbook links are always kept, so the
    whole incident stays one link away."""
    def size(chosen: list[str]) -> int:
        return sum(len(line) + 1 for line in chosen) - (1 if chosen else 0)

    if size(lines) <= limit:
        return list(lines)
    for evidence in (EVIDENCE_CHARS, 200):
        lines = [_cut(line, evidence) if line.lstrip().startswith("- Evidence:")
                 else _cut(line, LINE_CHARS) for line in lines]
        if size(lines) <= limit:
            return lines
    tail = [line for line in lines if line.startswith(_KEPT_AT_END)]
    body = [line for line in lines if not line.startswith(_KEPT_AT_END)]
    room = limit - size(tail) - len(MORE.format(n=len(body))) - 2
    kept: list[str] = []
    used = 0
    for line in body:
        if used + len(line) + 1 > room:
            break
        kept.append(line)
        used += len(line) + 1
    dropped = len(body) - len(kept)
    return [*kept, MORE.format(n=dropped), *tail] if dropped else [*kept, *tail]


def fit_text(text: str, limit: int) -> str:
    """Plain text at most ``limit`` characters, cut at a line where one is near."""
    if len(text) <= limit:
        return text
    lines = fit_lines([_cut(line, limit) for line in text.split("\n")], limit)
    out = "\n".join(lines)
    return out if len(out) <= limit else _cut(out, limit)


def fit_markdown(lines: list[str], details: list[str], limit: int, suffix: str = "") -> str:
    """A message as Markdown (its template lines in a code block, then the details) in at
    most ``limit`` characters with ``suffix`` (a marker) always whole at its end."""
    block = "\n".join(["```", *(_cut(line, LINE_CHARS) for line in lines), "```"])
    room = limit - len(block) - len(suffix) - 3
    shown = fit_lines(details, room) if details else []
    text = block + ("\n\n" + "\n".join(shown) if shown else "") + "\n"
    return _cut(text, limit - len(suffix)) + suffix
