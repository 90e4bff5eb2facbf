"""PostgreSQL through psycopg 3: connection and statements bounded by the deadline (see
_session), every statement also by statement_timeout on the server, and no retries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from unibazzar_health.probes import (
    DeadlineExceeded,
    FailureKind,
    ProbeError,
    bounded,
    connection_failure,
    timed,
)

T = TypeVar("T")


@dataclass(frozen=True)
class PostgresTarget:
    dsn: str  # carries no password
    password: str | None = field(repr=False)
    deadline: float

    @property
    def where(self) -> str:
        parts = urlsplit(self.dsn)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


@dataclass(frozen=True)
class Connectivity:
    # The best of a few SELECT 1 round trips: the run's own threads compete for the
    # interpreter and inflate single samples (600 ms seen for an 8 ms round trip), never the
    # fastest one. Connection usage is read by activity(), once per run for every check.
    select_one_ms: float
    select_one_samples: int
    server_version: str


@dataclass(frozen=True)
class Session:
    """One other session of the database, as pg_stat_activity shows it."""

    pid: int
    state: str
    query_age_s: int  # since its current (or last) query started
    transaction_age_s: int | None  # None: not in a transaction
    waiting_on_lock: bool
    blocked_by: tuple[int, ...]
    query: str  # first 120 characters, string literals masked


@dataclass(frozen=True)
class Activity:
    connections: int
    max_connections: int
    connection_usage: float
    deadlocks: int
    sessions: tuple[Session, ...]


def mask_literals(sql: str) -> str:
    """A query's text without its string literals: they may hold passwords or personal data
    that must not reach a report."""
    import re

    return re.sub(r"'(?:[^']|'')*'?", "'…'", sql)


def _session(target: PostgresTarget, work: Callable[[Any], T]) -> T:
    """``work(connection)`` on a fresh connection, all of it within the deadline.

    libpq (and psycopg after it) counts connect_timeout in whole seconds and never less
    than two, so a 1 s deadline would wait 2 s; and once connected, a server that stops
    answering is only bounded by statement_timeout, which a stalled server cannot enforce.
    So connection and statements run under ``bounded``: an abandoned attempt still ends at
    connect_timeout or statement_timeout, and closes its connection then.
    """
    import psycopg

    def run() -> T:
        with psycopg.connect(
            target.dsn,
            password=target.password,
            # Bounds only an abandoned attempt; libpq's floor is 2 s.
            connect_timeout=max(2, math.ceil(target.deadline)),
            options=f"-c statement_timeout={int(target.deadline * 1000)}",
            application_name="unibazzar-health",
            autocommit=True,
        ) as conn:
            return work(conn)

    try:
        return bounded(run, target.deadline, "postgresql", target.where)
    except psycopg.Error as exc:
        raise _explain(exc, target) from None


def _explain(exc: Exception, target: PostgresTarget) -> ProbeError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if "timeout" in lowered or "canceling statement" in lowered:
        return DeadlineExceeded("postgresql", target.where, target.deadline)
    return ProbeError("postgresql", target.where, text, target.deadline,
                      kind=_kind(exc, lowered))


def _kind(exc: Exception, lowered: str) -> FailureKind:
    """A statement's error has its SQLSTATE class; a failed connection only libpq's words."""
    from psycopg import errors

    if isinstance(exc, errors.UndefinedTable | errors.UndefinedColumn
                  | errors.UndefinedFunction | errors.InvalidSchemaName):
        return FailureKind.MISSING_SCHEMA
    if (isinstance(exc, errors.InvalidPassword | errors.InvalidAuthorizationSpecification
                   | errors.InsufficientPrivilege)
            or "password authentication failed" in lowered or "no pg_hba.conf entry" in lowered
            or ("role " in lowered and "does not exist" in lowered)):
        return FailureKind.AUTH_REJECTED
    if "database " in lowered and "does not exist" in lowered:
        return FailureKind.MISSING_OBJECT
    # A server going down cuts its sessions (57P01/57P02, or the socket closed under libpq):
    # as down as one refusing connections, and brought back the same way.
    if (isinstance(exc, errors.AdminShutdown | errors.CrashShutdown | errors.CannotConnectNow)
            or "server closed the connection unexpectedly" in lowered):
        return FailureKind.REFUSED
    return connection_failure(exc)


def fetch(target: PostgresTarget, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return _session(target, lambda conn: list(conn.execute(sql, params).fetchall()))


SELECT_ONE_SAMPLES = 5


def connectivity(target: PostgresTarget) -> Connectivity:
    """A connection, and the fastest of a few SELECT 1 round trips on it."""

    def measure(conn: Any) -> tuple[list[float], str]:
        samples = []
        for _ in range(SELECT_ONE_SAMPLES):
            with timed() as t:
                conn.execute("SELECT 1").fetchone()
            samples.append(t.ms)
        version = conn.execute("SELECT current_setting('server_version')").fetchone()
        return samples, str(version[0]) if version else ""

    samples, version = _session(target, measure)
    return Connectivity(select_one_ms=min(samples), select_one_samples=len(samples),
                        server_version=version)


def activity(target: PostgresTarget) -> Activity:
    """The database's other sessions (transactions, lock waits, query ages), its connection
    usage and its deadlock count, in one round trip's worth of statements."""

    def read(conn: Any) -> tuple[Any, Any, Any]:
        sessions = conn.execute(
            "SELECT pid, coalesce(state, ''), "
            "round(extract(epoch FROM now() - coalesce(query_start, backend_start))), "
            "round(extract(epoch FROM now() - xact_start)), wait_event_type = 'Lock', "
            "pg_blocking_pids(pid), left(query, 120) "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchall()
        usage = conn.execute(
            "SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity "
            "WHERE backend_type = 'client backend'").fetchone()
        deadlocks = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return sessions, usage, deadlocks

    rows, usage, deadlocks = _session(target, read)
    connections, max_connections = int(usage[0]), int(usage[1])
    return Activity(
        connections=connections,
        max_connections=max_connections,
        connection_usage=round(connections / max_connections, 4),
        deadlocks=int(deadlocks[0]) if deadlocks else 0,
        sessions=tuple(
            Session(pid=int(r[0]), state=str(r[1]), query_age_s=int(r[2] or 0),
                    transaction_age_s=None if r[3] is None else int(r[3]),
                    waiting_on_lock=bool(r[4]), blocked_by=tuple(r[5] or ()),
                    query=mask_literals(str(r[6] or "")))
            for r in rows),
    )
