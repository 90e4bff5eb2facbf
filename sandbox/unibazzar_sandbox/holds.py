"""Game-day faults that last only while something holds them open: sessions on PostgreSQL,
a thread pausing Redis. The supervisor holds them (`hold NAME`, `release NAME` on its
control socket), so they outlive the command that switched them on and end with
`fault NAME off`, or with `down` at the latest (the supervisor releases every hold first).

Each hold is made completely before `hold` answers, so the checks run right after `on`
meet the fault.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from unibazzar_sandbox.layout import HOST, PORTS, Layout
from unibazzar_sandbox.seed import CANARY_ORDER_ID

Secrets = dict[str, str]


class Hold(Protocol):
    def release(self) -> None: ...


def _admin(layout: Layout, database: str) -> Any:
    import psycopg

    return psycopg.connect(f"host={layout.path('postgresql', 'run')} port={PORTS['postgresql']} "
                           f"user=postgres dbname={database}", autocommit=True, connect_timeout=5)


def _as_order_service(secrets: Secrets, autocommit: bool) -> Any:
    """A session as order-service opens one: its role, over TCP, named after it."""
    import psycopg

    return psycopg.connect(f"host={HOST} port={PORTS['postgresql']} dbname=orders "
                           "user=order_service application_name=order-service",
                           password=secrets["UNIBAZZAR_ORDER_DB_PASSWORD"],
                           autocommit=autocommit, connect_timeout=5)


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # a server already gone closed it for us
        conn.close()


# ---- connections exhausted -----------------------------------------------------------------
# Connections left to everyone else below the superuser reserve: a check run opens about 7
# at once, the services one per login or webhook. Fewer, and they would be refused.
SPARE_CONNECTIONS = 12


class ConnectionsHeld:
    """order-service's pool leaking: idle sessions of its role, opened until only
    SPARE_CONNECTIONS are left below max_connections minus the superuser reserve (35 of 50
    in the sandbox, with none before)."""

    def __init__(self, layout: Layout, secrets: Secrets) -> None:
        with _admin(layout, "orders") as admin:
            row = admin.execute(
                "SELECT current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int, "
                "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid())").fetchone()
        maximum, reserved, in_use = int(row[0]), int(row[1]), int(row[2])
        self.sessions: list[Any] = []
        try:
            for _ in range(maximum - reserved - SPARE_CONNECTIONS - in_use):
                self.sessions.append(_as_order_service(secrets, autocommit=True))
        except Exception:
            self.release()
            raise

    def release(self) -> None:
        for conn in self.sessions:
            _close(conn)
        self.sessions.clear()


# ---- an idle transaction holding a lock, and a session waiting on it --------------------------
class LockHeld:
    """A session of order-service locks the canary order's row and then sits idle in its
    transaction; another of its sessions waits to update that row. The waiter's update is
    rolled back once the lock goes: nothing is changed."""

    def __init__(self, layout: Layout, secrets: Secrets) -> None:
        self.holder = _as_order_service(secrets, autocommit=False)
        self.waiter = _as_order_service(secrets, autocommit=False)
        self.holder.execute("SELECT id FROM orders WHERE id = %s FOR UPDATE", (CANARY_ORDER_ID,))
        waiter_pid = self.waiter.info.backend_pid
        self.thread = threading.Thread(target=self._wait, name="gameday-lock-waiter",
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        with _admin(layout, "orders") as admin:
            while not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND "
                                    "wait_event_type = 'Lock'", (waiter_pid,)).fetchone():
                if time.monotonic() > deadline:
                    self.release()
                    raise RuntimeError("the waiting session never waited on the lock")
                time.sleep(0.05)

    def _wait(self) -> None:
        with contextlib.suppress(Exception):  # released by closing: the update ends either way
            self.waiter.execute("UPDATE orders SET updated_at = now() WHERE id = %s",
                                (CANARY_ORDER_ID,))
            self.waiter.rollback()

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.holder.rollback()
        _close(self.holder)
        self.thread.join(5)
        _close(self.waiter)


# ---- Redis slow ------------------------------------------------------------------------------
PAUSE_MS = 100


class RedisSlow:
    """Redis answering every command up to PAUSE_MS late: a thread pauses all its clients
    (CLIENT PAUSE ... ALL) for PAUSE_MS, again and again, each next pause queued behind the
    commands already waiting so that every client gets its turn between two pauses."""

    def __init__(self, layout: Layout, secrets: Secrets) -> None:
        import redis

        self.client = redis.Redis(host=HOST, port=PORTS["redis"],
                                  password=secrets["UNIBAZZAR_REDIS_PASSWORD"],
                                  socket_timeout=5, socket_connect_timeout=5)
        self.client.ping()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pause, name="gameday-redis-slow",
                                       daemon=True)
        self.thread.start()

    def _pause(self) -> None:
        import redis

        while not self.stop.is_set():
            try:
                self.client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
            except redis.RedisError:  # Redis stopped meanwhile: try again until released
                self.stop.wait(0.5)
                continue
            # Most of the pause, then the next one, which waits behind the commands that
            # came in meanwhile: every client gets its turn between two pauses.
            self.stop.wait(PAUSE_MS * 0.8 / 1000)

    def release(self) -> None:
        import redis

        self.stop.set()
        self.thread.join(5)
        with contextlib.suppress(redis.RedisError):
            self.client.execute_command("CLIENT", "UNPAUSE")
        self.client.close()


HOLDS: dict[str, Callable[[Layout, Secrets], Hold]] = {
    "connections-exhausted": ConnectionsHeld,
    "idle-transaction-lock": LockHeld,
    "redis-slow": RedisSlow,
}
