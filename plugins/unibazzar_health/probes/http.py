"""HTTP services through requests: connect and read timeouts from the deadline."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.probes import DeadlineExceeded, ProbeError, connection_failure
from unibazzar_health.probes.clock import AnswerWatch


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    elapsed_ms: float  # on our clock: until our thread had the whole answer
    body: Any  # parsed JSON, or the text's first 500 characters
    # The answer's rate-limit headers only (RateLimit*, X-RateLimit*, Retry-After), names in
    # lower case: never a cookie or a token.
    headers: dict[str, str] = field(default_factory=dict)
    # Until the answer's last data reached this host's network stack (clock.py): what the
    # service took, without our own host's stall. None: the kernel could not say.
    answered_ms: float | None = None

    @property
    def judged_ms(self) -> float:
        """The time a latency budget judges: the service's, or our clock's where unknown."""
        return self.elapsed_ms if self.answered_ms is None else self.answered_ms


RATE_LIMIT_HEADER = re.compile(r"(x-)?ratelimit(-[a-z]+)?|retry-after")


def request(
    backend: str,
    method: str,
    url: str,
    deadline: float,
    *,
    json: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    session: Any = None,
) -> HttpAnswer:
    import requests

    sender = session or requests
    watch = AnswerWatch()  # when the answer arrived, as the kernel saw it
    try:
        started = time.perf_counter_ns()
        response = sender.request(method, url, json=json, data=data, headers=headers,
                                  timeout=(deadline, deadline), allow_redirects=False,
                                  hooks=watch.hooks)
        timing = watch.timing(time.perf_counter_ns() - started)
    except requests.Timeout:
        raise DeadlineExceeded(backend, url, deadline) from None
    except requests.RequestException as exc:
        raise ProbeError(backend, url, reason(exc), deadline,
                         kind=connection_failure(exc)) from None
    finally:
        watch.close()
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    kept = {name.lower(): value[:500] for name, value in response.headers.items()
            if RATE_LIMIT_HEADER.fullmatch(name.lower())}
    return HttpAnswer(status=response.status_code, elapsed_ms=timing.ms, body=body,
                      headers=kept, answered_ms=timing.answered_ms)


def reason(exc: Exception) -> str:
    """Why a request failed, readably: requests nests the socket error deep in its message;
    the innermost cause reads best."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    if "Connection refused" in text:
        return "connection refused"
    return f"{type(exc).__name__}: {text[:200]}"
