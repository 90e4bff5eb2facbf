"""The one interface every notifier implements, and what crosses it.

A notifier is built from its validated section of the environment file (``build``, at
start-up: a bad config stops the run before any probe) and is handed, per delivery, the
rendered message and the summary narrowed to the incident (``Outgoing``): never a check, a
probe or the environment. It answers with a ``Receipt`` or raises ``DeliveryError`` saying
whether the request may have reached the service: posting resends only what surely did not,
what the service deduplicates (``idempotent``) or what the notifier looks for before sending
it again (``recoverable``); anything else that may have arrived ends ``unknown``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from unibazzar_health.messages import Message

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
    ticket: Mapping[str, Any] | None = None  # the incident's ticket, once created
    attempt: int = 0  # earlier attempts of this delivery (this run's and previous runs')


@dataclass(frozen=True)
class Receipt:
    status: int | None = None  # the HTTP status
    detail: dict[str, Any] = field(default_factory=dict)  # kept: an issue number, a URL


class DeliveryError(Exception):
    """A send that did not succeed. ``maybe_delivered``: the request left and no answer came
    (a read timeout, a dropped connection), so the service may have acted on it; resending
    could post twice. ``retryable``: trying again may succeed (refused, 429, 5xx)."""

    def __init__(self, reason: str, *, retryable: bool, maybe_delivered: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.retryable, self.maybe_delivered = reason, retryable, maybe_delivered


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

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        """Deliver, each request within ``budget.timeout()``; raise DeliveryError."""
        ...

    def hidden(self) -> list[str]:
        """Pieces of its secrets that could show in an error without the whole value (a
        webhook URL's path): the run's redactor hides them too."""
        ...


def http_status_error(status: int, body: str) -> DeliveryError:
    """An HTTP answer that is not a success: retried when the service says to (429) or
    failed itself (5xx); a 4xx means this request will not succeed as it is."""
    text = " ".join(body.split())[:200]
    reason = f"HTTP {status}" + (f": {text}" if text else "")
    return DeliveryError(reason, retryable=status in (408, 425, 429) or status >= 500)


def requests_error(exc: Exception, timeout: float) -> DeliveryError:
    """What a requests exception says about delivery, in words that carry no URL (a URL
    may hold a token) and no header."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return DeliveryError(f"no connection within {timeout:g} s", retryable=True)
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


def post_json(session: Any, method: str, url: str, body: Any, timeout: float,
              headers: Mapping[str, str] | None = None) -> Any:
    """One HTTP request with a JSON body (or, as bytes, an already encoded one), bounded
    (connect and read timeouts), no retries of its own; returns the response of a 2xx,
    raises DeliveryError otherwise."""
    import requests

    sent = {"data": body} if isinstance(body, bytes) else {"json": body}
    try:
        response = session.request(method, url, headers=dict(headers or {}),
                                   timeout=(timeout, timeout), allow_redirects=False, **sent)
    except requests.RequestException as exc:
        raise requests_error(exc, timeout) from None
    if not 200 <= response.status_code < 300:
        raise http_status_error(response.status_code, response.text)
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
