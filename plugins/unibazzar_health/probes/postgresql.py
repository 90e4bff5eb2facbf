"""PostgreSQL through psycopg 3: connection bounded by connect_timeout, every
statement by statement_timeout, and no retries."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from unibazzar_health.probes import DeadlineExceeded, ProbeError, timed


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


def _connect(target: PostgresTarget) -> Any:
    import psycopg

    try:
        return psycopg.connect(
            target.dsn,
            password=target.password,
            # libpq counts whole seconds; never less than one.
            connect_timeout=max(1, math.ceil(target.deadline)),
            options=f"-c statement_timeout={int(target.deadline * 1000)}",
            application_name="unibazzar-health",
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        raise _explain(exc, target) from None


def _explain(exc: Exception, target: PostgresTarget) -> ProbeError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if "timeout" in lowered or "canceling statement" in lowered:
        return DeadlineExceeded("postgresql", target.where, target.deadline)
    return ProbeError("postgresql", target.where, text, target.deadline)


def fetch(target: PostgresTarget, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with _connect(target) as conn:
        try:
            return list(conn.execute(sql, params).fetchall())
        except psycopg.Error as exc:
            raise _explain(exc, target) from None


def connectivity(target: PostgresTarget) -> Connectivity:
    import psycopg

    with _connect(target) as conn:
        try:
            with timed() as t:
                conn.execute("SELECT 1").fetchone()
            row = conn.execute(
                "SELECT count(*), current_setting('max_connections')::int, "
                "current_setting('server_version') FROM pg_stat_activity "
                "WHERE backend_type = 'client backend'"
            ).fetchone()
        except psycopg.Error as exc:
            raise _explain(exc, target) from None
    assert row is not None
    connections, max_connections, version = int(row[0]), int(row[1]), str(row[2])
    return Connectivity(
        select_one_ms=t.ms,
        connections=connections,
        max_connections=max_connections,
        connection_usage=round(connections / max_connections, 4),
        server_version=version,
    )
