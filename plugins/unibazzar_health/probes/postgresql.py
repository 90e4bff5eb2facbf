"""PostgreSQL through psycopg 3: connection and statements bounded by the deadline (see
_session), every statement also by statement_timeout on the server, and no retries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from unibazzar_health.probes import DeadlineExceeded, ProbeError, bounded, timed

T = TypeVar("T")


@dataclass(frozen=True)
class PostgresTarget:
    dsn: str  # carries no password
    password: str | None
    deadline: float

    @property
    def where(self) -> str:
        parts = urlsplit(self.dsn)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


@dataclass(frozen=True)
class Connectivity:
    select_one_ms: float
    connections: int
    max_connections: int
    connection_usage: float
    server_version: str


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
    return ProbeError("postgresql", target.where, text, target.deadline)


def fetch(target: PostgresTarget, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return _session(target, lambda conn: list(conn.execute(sql, params).fetchall()))


def connectivity(target: PostgresTarget) -> Connectivity:
    def measure(conn: Any) -> tuple[float, Any]:
        with timed() as t:
            conn.execute("SELECT 1").fetchone()
        elapsed = t.ms
        row = conn.execute(
            "SELECT count(*), current_setting('max_connections')::int, "
            "current_setting('server_version') FROM pg_stat_activity "
            "WHERE backend_type = 'client backend'"
        ).fetchone()
        return elapsed, row

    select_one_ms, row = _session(target, measure)
    assert row is not None
    connections, max_connections, version = int(row[0]), int(row[1]), str(row[2])
    return Connectivity(
        select_one_ms=select_one_ms,
        connections=connections,
        max_connections=max_connections,
        connection_usage=round(connections / max_connections, 4),
        server_version=version,
    )
