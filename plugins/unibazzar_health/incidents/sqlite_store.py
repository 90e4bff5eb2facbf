"""The default incident store: one SQLite file (WAL) on the runner's disk.

The environment's lock is the database's write lock: ``BEGIN IMMEDIATE`` starts the short
read-decide-save transaction, and a second run waits for it at most ``lock_wait`` seconds
(busy timeout). Claims are one conditional UPDATE each (pending → sending), so two runs
sharing the file never send one delivery twice. For runners on several machines, use Redis:
SQLite's locks are only as good as the file system's, and network file systems lie.

synchronous=NORMAL: in WAL mode a commit survives the process being killed (what the
exactly-once rules are about); only an OS crash or power loss may lose the last commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from unibazzar_health.incidents.lifecycle import runs_needed
from unibazzar_health.incidents.state import (
    FINISHED,
    SENDING,
    SENT,
    Delivery,
    EnvironmentState,
    RunRecord,
    StateFormatError,
    StatusChange,
    StoreBusy,
    StoreError,
    decode,
    encode,
)

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    environment TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    environment TEXT NOT NULL,
    id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    status TEXT NOT NULL,
    summary BLOB NOT NULL,
    PRIMARY KEY (environment, id)
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (environment, started_at);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    environment TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    incident_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    notifier TEXT NOT NULL,
    headline TEXT NOT NULL,
    payload BLOB NOT NULL,
    dedup_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT,
    claimed_by TEXT,
    claimed_at TEXT,
    receipt TEXT,
    sent_at TEXT,
    not_before TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_status ON outbox (environment, status);
"""
COLUMNS = ("seq", "id", "environment", "incident_id", "incident_key", "kind", "notifier",
           "headline", "dedup_key", "created_at", "status", "attempts", "last_error",
           "updated_at", "claimed_by", "claimed_at", "receipt", "sent_at", "not_before")
# What each schema version adds to the one before (a file made by an older version).
MIGRATIONS = {2: "ALTER TABLE outbox ADD COLUMN not_before TEXT;"}
EMPTY_PAYLOAD = encode({})  # what a finished delivery keeps once its payload is dropped


class SqliteStore:
    def __init__(self, path: Path, *, lock_wait: float = 10.0, keep_runs: int = 500,
                 keep_days: float = 30.0) -> None:
        self.path, self.lock_wait = Path(path), lock_wait
        self.keep_runs, self.keep_days = keep_runs, keep_days
        self._conn: sqlite3.Connection | None = None
        self._mutex = threading.Lock()

    @property
    def where(self) -> str:
        return f"sqlite at {self.path}"

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.exists()

    # ---- connection ---------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we say when transactions begin (BEGIN IMMEDIATE).
                conn = sqlite3.connect(self.path, timeout=self.lock_wait, isolation_level=None,
                                       check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {int(self.lock_wait * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    self._create_or_migrate(conn)
            except (sqlite3.Error, OSError) as exc:
                raise self._error(exc) from None
            self._conn = conn
        return self._conn

    @staticmethod
    def _create_or_migrate(conn: sqlite3.Connection) -> None:
        """A new file gets the schema; one of an older version its migrations, under the
        write lock (two runs doing it at once: the second finds it done)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # IF NOT EXISTS: tables a version-0 file may hold already stay.
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                columns = {r[1] for r in conn.execute("PRAGMA table_info(outbox)")}
                version = 1 if "not_before" not in columns else SCHEMA_VERSION
            for step in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[step])
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _error(self, exc: BaseException) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreBusy(f"{self.where}: another run held the lock for more than "
                             f"{self.lock_wait:g} s")
        return StoreError(f"{self.where}: {text}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- reading ------------------------------------------------------------------------
    def _load(self, conn: sqlite3.Connection, environment: str) -> EnvironmentState:
        row = conn.execute("SELECT document FROM state WHERE environment = ?",
                           (environment,)).fetchone()
        outbox = [self._delivery(r, with_payload=False) for r in conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM outbox WHERE environment = ? ORDER BY seq",
            (environment,))]
        try:
            document = json.loads(row[0]) if row else None
        except ValueError:
            raise StateFormatError(f"{self.where}: the state of {environment} is not JSON "
                                   "(nothing decided, nothing changed)") from None
        return EnvironmentState.from_document(environment, document, outbox, where=self.where)

    @staticmethod
    def _delivery(row: Any, with_payload: bool, payload: bytes | None = None) -> Delivery:
        values = dict(zip(COLUMNS, row, strict=False))
        values["receipt"] = json.loads(values["receipt"]) if values["receipt"] else None
        values["payload"] = decode(payload) if with_payload and payload is not None else {}
        return Delivery.from_dict(values)

    def peek(self, environment: str) -> EnvironmentState:
        with self._mutex:
            try:
                return self._load(self._connection(), environment)
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def environments(self) -> list[str]:
        """The environments this file remembers (for a command given only the file)."""
        with self._mutex:
            try:
                rows = self._connection().execute("SELECT environment FROM state ORDER BY 1")
                return [name for (name,) in rows]
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def runs(self, environment: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        with self._mutex:
            try:
                return _runs(self._connection(), environment, ids)
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def deliveries(self, environment: str, statuses: Iterable[str]) -> list[Delivery]:
        wanted = list(statuses)
        marks = ", ".join("?" for _ in wanted)
        with self._mutex:
            try:
                rows = self._connection().execute(
                    f"SELECT {', '.join(COLUMNS)}, payload FROM outbox WHERE environment = ? "
                    f"AND status IN ({marks}) ORDER BY seq", (environment, *wanted)).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return [self._delivery(r[:-1], True, r[-1]) for r in rows]

    # ---- the lock -----------------------------------------------------------------------
    @contextmanager
    def transaction(self, environment: str) -> Iterator[_Transaction]:
        with self._mutex:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            try:
                tx = _Transaction(self, conn, environment, self._load(conn, environment))
                yield tx
                conn.execute("COMMIT" if tx.saved else "ROLLBACK")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise self._error(exc) from None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # ---- claims -------------------------------------------------------------------------
    def claim(self, environment: str, delivery_id: str, claimant: str, now: str) -> bool:
        with self._mutex:
            try:
                done = self._connection().execute(
                    "UPDATE outbox SET status = 'sending', claimed_by = ?, claimed_at = ?, "
                    "updated_at = ? WHERE environment = ? AND id = ? AND status = 'pending'",
                    (claimant, now, now, environment, delivery_id))
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            return done.rowcount == 1

    def finish(self, environment: str, delivery_id: str, claimant: str, status: str, *,
               now: str, attempts: int, error: str | None = None,
               receipt: dict[str, Any] | None = None, not_before: str | None = None) -> bool:
        with self._mutex:
            try:
                done = self._connection().execute(
                    "UPDATE outbox SET status = ?, attempts = ?, last_error = ?, updated_at = ?, "
                    "receipt = COALESCE(?, receipt), sent_at = CASE WHEN ? = ? THEN ? ELSE "
                    "sent_at END, not_before = ? WHERE environment = ? AND id = ? AND "
                    "status = ? AND claimed_by = ?",
                    (status, attempts, error, now,
                     json.dumps(receipt) if receipt is not None else None, status, SENT, now,
                     not_before, environment, delivery_id, SENDING, claimant))
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            return done.rowcount == 1

    def delivery(self, environment: str, delivery_id: str) -> Delivery | None:
        with self._mutex:
            try:
                row = self._connection().execute(
                    f"SELECT {', '.join(COLUMNS)} FROM outbox WHERE environment = ? AND id = ?",
                    (environment, delivery_id)).fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return self._delivery(row, with_payload=False) if row else None


def _runs(conn: sqlite3.Connection, environment: str, ids: Iterable[str]
          ) -> dict[str, dict[str, Any]]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    marks = ", ".join("?" for _ in wanted)
    rows = conn.execute(f"SELECT id, summary FROM runs WHERE environment = ? AND id IN "
                        f"({marks})", (environment, *wanted))
    return {run_id: decode(blob) for run_id, blob in rows}


class _Transaction:
    def __init__(self, store: SqliteStore, conn: sqlite3.Connection, environment: str,
                 state: EnvironmentState) -> None:
        self._store, self._conn, self._environment = store, conn, environment
        self.state = state
        self.saved = False

    def runs(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return _runs(self._conn, self._environment, ids)

    def save(self, state: EnvironmentState, *, run: RunRecord | None,
             deliveries: list[Delivery], changes: list[StatusChange], now: str) -> None:
        conn, env = self._conn, self._environment
        conn.execute("INSERT INTO state (environment, document, updated_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (environment) DO UPDATE SET document = excluded.document, "
                     "updated_at = excluded.updated_at",
                     (env, json.dumps(state.document(), ensure_ascii=False), now))
        if run is not None:
            conn.execute("INSERT OR REPLACE INTO runs (environment, id, started_at, status, "
                         "summary) VALUES (?, ?, ?, ?, ?)",
                         (env, run.id, run.started_at, run.status, encode(run.summary)))
        for d in deliveries:
            # OR IGNORE: a delivery id is deterministic; one decided twice is one row.
            conn.execute(
                "INSERT OR IGNORE INTO outbox (id, environment, incident_id, incident_key, kind, "
                "notifier, headline, payload, dedup_key, created_at, status, attempts, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (d.id, env, d.incident_id, d.incident_key, d.kind, d.notifier, d.headline,
                 encode(d.payload), d.dedup_key, d.created_at, d.status, now))
        for change in changes:
            conn.execute(
                "UPDATE outbox SET status = ?, last_error = COALESCE(?, last_error), "
                "attempts = COALESCE(?, attempts), updated_at = ?, claimed_by = NULL "
                "WHERE environment = ? AND id = ? AND (? IS NULL OR status = ?)",
                (change.status, change.error, change.attempts, now, env, change.delivery_id,
                 change.expected, change.expected))
        self._prune(state, now)
        self.saved = True

    def _prune(self, state: EnvironmentState, now: str) -> None:
        """Bounded retention: the newest keep_runs runs younger than keep_days, and every run
        an open incident still speaks of. A finished delivery keeps its row while its
        incident is remembered (open, or among the resolved ones kept: the timeline and the
        ticket read them) and its payload for keep_days."""
        conn, env = self._conn, self._environment
        cutoff = (datetime.fromisoformat(now).astimezone(UTC)
                  - timedelta(days=self._store.keep_days)).isoformat(timespec="seconds")
        # "" stands in for an empty list: NOT IN (NULL) would match nothing.
        keep = sorted(runs_needed(state)) or [""]
        marks = ", ".join("?" for _ in keep)
        conn.execute(
            f"DELETE FROM runs WHERE environment = ? AND id NOT IN ({marks}) AND "
            f"(started_at < ? OR id NOT IN (SELECT id FROM runs WHERE environment = ? "
            f"ORDER BY started_at DESC LIMIT ?))",
            (env, *keep, cutoff, env, self._store.keep_runs))
        remembered = sorted({i.id for i in state.incidents.values()}
                            | {i.id for i in state.closed}) or [""]
        marks = ", ".join("?" for _ in remembered)
        done = ", ".join("?" for _ in FINISHED)
        conn.execute(
            f"DELETE FROM outbox WHERE environment = ? AND status IN ({done}) AND "
            f"incident_id NOT IN ({marks})", (env, *FINISHED, *remembered))
        conn.execute(
            f"UPDATE outbox SET payload = ? WHERE environment = ? AND status IN ({done}) AND "
            f"created_at < ? AND payload != ?",
            (EMPTY_PAYLOAD, env, *FINISHED, cutoff, EMPTY_PAYLOAD))
