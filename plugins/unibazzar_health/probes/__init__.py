"""Probes: thin layers over the real clients, one module per backend.

A probe measures and returns plain values, or raises ProbeError, which says what kind of
failure it met (FailureKind). It knows nothing of pytest, severities or the runbook, and
every call is bounded by the deadline it is given: no client's default timeout is trusted,
no retries hide. The backends' modules are imported by the checks that need them, never
here (only probes.deadline, the one way a call runs under a deadline).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from unibazzar_health.probes.deadline import start as start_call

T = TypeVar("T")


class FailureKind(enum.StrEnum):
    """What kind of failure a probe met: what to do next depends on it more than on the
    backend (a deleted table and a slow one are both "DynamoDB errors")."""

    UNREACHABLE = "unreachable"  # the host name does not resolve, no route, network down
    TIMEOUT = "timeout"  # no answer within the deadline
    REFUSED = "refused"  # connection refused: nothing listens there
    # Our credentials, key or signature were refused. Refused by a backend the checks log
    # into with their own (a database role, a Redis password, an AWS identity, a
    # kubeconfig), it is the checks' configuration that is wrong, not the platform: the
    # verdict says so (results.OWN_CREDENTIAL_BACKENDS), so a probe must give this kind for
    # every refusal of its credential, and only for that.
    AUTH_REJECTED = "auth_rejected"
    MISSING_OBJECT = "missing_object"  # a table, bucket, queue, collection... is not there
    # A relation or column does not exist: the database is not the schema the checks
    # expect (wrong database in the environment file, a migration not applied).
    MISSING_SCHEMA = "missing_schema"
    UNEXPECTED_ANSWER = "unexpected_answer"  # anything else: a 5xx, a malformed reply


class ProbeError(Exception):
    """The backend gave no usable answer; ``kind`` says how (FailureKind)."""

    def __init__(self, backend: str, target: str, problem: str, deadline: float | None = None,
                 *, kind: FailureKind):
        self.backend, self.target, self.problem, self.deadline = backend, target, problem, deadline
        self.kind = kind
        super().__init__(describe(backend, target, problem, deadline))


class DeadlineExceeded(ProbeError):
    """The backend did not answer within the probe's deadline."""

    def __init__(self, backend: str, target: str, deadline: float, doing: str = "answer"):
        super().__init__(backend, target, f"did not {doing} within the deadline", deadline,
                         kind=FailureKind.TIMEOUT)


def describe(backend: str, target: str, problem: str, deadline: float | None) -> str:
    """A failure as one line: "backend at target: problem (deadline N s)"."""
    bound = f" (deadline {deadline:g} s)" if deadline is not None else ""
    return f"{backend} at {target}: {problem}{bound}"


@dataclass(frozen=True)
class ProbeFailure:
    """A probe's failure as plain data, in place of the value it would have returned:
    what checks judge and what the verdict reports (kind and all), across processes."""

    backend: str  # the probe's backend: "postgresql", "rabbitmq-management", a service
    target: str  # where it was aimed: "host:port/db", a URL, "table T (region)"
    kind: FailureKind
    problem: str
    deadline: float | None = None

    @classmethod
    def of(cls, error: ProbeError) -> ProbeFailure:
        return cls(error.backend, error.target, error.kind, error.problem, error.deadline)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeFailure:
        return cls(str(data["backend"]), str(data["target"]), FailureKind(data["kind"]),
                   str(data["problem"]), data.get("deadline"))

    @property
    def message(self) -> str:
        """The same words as the ProbeError it stands for."""
        return describe(self.backend, self.target, self.problem, self.deadline)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.target, "kind": self.kind.value,
                "problem": self.problem, "deadline": self.deadline}


def connection_failure(error: BaseException | str) -> FailureKind:
    """The kind of a failed connection attempt: from the socket error in the exception's
    chain where the client kept it, else from its words (libpq, redis-py and botocore pass
    on only the socket error's text)."""
    import errno
    import socket

    chain: list[BaseException] = []
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or any(current is c for c in chain):
            continue
        chain.append(current)
        # urllib3 keeps the socket error as .reason of its own, botocore in kwargs["error"],
        # pika among its exception's args.
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None),
                    (getattr(current, "kwargs", None) or {}).get("error"), *current.args]
    for exc in chain:
        if isinstance(exc, socket.gaierror):
            return FailureKind.UNREACHABLE
        if isinstance(exc, ConnectionRefusedError):
            return FailureKind.REFUSED
        if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return FailureKind.UNREACHABLE
    text = " ".join([str(error) if isinstance(error, str) else ""]
                    + [f"{exc} {exc!r}" for exc in chain]).lower()
    for words, kind in _CONNECTION_WORDS:
        if any(w in text for w in words):
            return kind
    return FailureKind.UNEXPECTED_ANSWER


def status_failure(status: int) -> FailureKind:
    """The kind of an HTTP error answer from an API whose path names what it reads."""
    if status in (401, 403):
        return FailureKind.AUTH_REJECTED
    if status == 404:
        return FailureKind.MISSING_OBJECT
    return FailureKind.UNEXPECTED_ANSWER


# The socket errors' words as the C library and the clients write them, and the names of
# Python's exceptions for them (a service reporting its own client's failure).
_CONNECTION_WORDS = (
    # PostgreSQL accepting no session while it shuts down or starts: nothing serves there.
    (("connection refused", "connectionrefusederror", "the database system is shutting down",
      "the database system is starting up"), FailureKind.REFUSED),
    (("name or service not known", "temporary failure in name resolution", "failed to resolve",
      "could not translate host name", "nodename nor servname", "no address associated",
      "getaddrinfo failed", "gaierror", "nameresolutionerror", "no route to host",
      "network is unreachable", "host is unreachable"), FailureKind.UNREACHABLE),
    (("timed out", "timeout expired", "timeouterror"), FailureKind.TIMEOUT),
)


def bounded(fn: Callable[[], T], deadline: float, backend: str, target: str, *,
            discard: Callable[[T], None] | None = None, spent: float = 0.0) -> T:
    """``fn()``, waited for at most ``deadline`` seconds, for a client whose own timeouts
    cannot express the deadline (or do not cover every step).

    ``fn`` runs on a daemon thread (the process never waits for it at exit); past the
    deadline DeadlineExceeded is raised here and the thread is abandoned: a result it
    produces later goes to ``discard`` (to close a connection), an exception is dropped
    (probes.deadline, the one way a call runs under a deadline). ``spent``: seconds of the
    deadline the probe already used before this call.
    """
    running = start_call(fn, f"{backend}-probe", discard=discard)
    if not running.wait(deadline - spent) and running.abandon():
        raise DeadlineExceeded(backend, target, deadline)
    return running.result()


class Stopwatch:
    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._start = time.perf_counter()

    @property
    def ms(self) -> float:
        return round((time.perf_counter() - self._start) * 1000, 2)


@contextmanager
def timed() -> Iterator[Stopwatch]:
    yield Stopwatch()


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: no interpolation, so the value was really observed."""
    import math

    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
