"""The incident store for runners on several machines or pods: Redis (redis-py), bounded as
the Redis probe is: socket timeouts from ``deadline``, no retries of its own.

The environment's lock is redis-py's ``Lock`` (``SET lock token NX PX lease``, polled for a
bounded wait, released by its compare-and-delete script, so a run never frees another's
lock), holding a token of ours. The save is fenced by that token: it WATCHes the lock, finds
its own token there and writes in one MULTI/EXEC, so a run whose lease ran out while it
decided (the lock gone, or another run's now) changes nothing. Claims and their results are
compare-and-set scripts on the delivery's hash.

Every key of one environment carries the same hash tag (``prefix:{environment}:…``): the
scripts and transactions stay on one slot of a Redis Cluster.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from unibazzar_health.incidents.lifecycle import runs_needed
from unibazzar_health.incidents.state import (
    FINISHED,
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

# Milliseconds a lock lives if its holder dies: the read-decide-save it guards takes tens of
# milliseconds, and a run waiting on a dead holder's lock waits at most this long.
LOCK_LEASE_MS = 5000
# How often a run waiting for the lock asks again (redis-py's Lock polls at a fixed interval).
LOCK_POLL_S = 0.05
# The delivery's fields kept as strings in its hash (payload and receipt apart).
FIELDS = ("id", "environment", "incident_id", "incident_key", "kind", "notifier", "headline",
          "dedup_key", "created_at", "status", "attempts", "last_error", "updated_at",
          "claimed_by", "claimed_at", "sent_at", "seq", "not_before")

CLAIM = """
if redis.call('HGET', KEYS[1], 'status') == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'sending', 'claimed_by', ARGV[1], 'claimed_at', ARGV[2],
             'updated_at', ARGV[2])
  return 1
end
return 0
"""
FINISH = """
if redis.call('HGET', KEYS[1], 'status') == 'sending'
   and redis.call('HGET', KEYS[1], 'claimed_by') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'attempts', ARGV[3], 'last_error', ARGV[4],
             'updated_at', ARGV[5])
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'receipt', ARGV[6]) end
  if ARGV[2] == 'sent' then redis.call('HSET', KEYS[1], 'sent_at', ARGV[5]) end
  redis.call('HSET', KEYS[1], 'not_before', ARGV[7])
  return 1
end
return 0
"""


class RedisStore:
    def __init__(self, url: str, password: str | None = None, *,
                 prefix: str = "unibazzar-health", deadline: float = 2.0,
                 lock_wait: float = 10.0, keep_runs: int = 500, keep_days: float = 30.0) -> None:
        self._url, self._password = url, password
        self.prefix, self.deadline, self.lock_wait = prefix, deadline, lock_wait
        self.keep_runs, self.keep_days = keep_runs, keep_days
        self._client: Any = None

    @property
    def where(self) -> str:
        parts = urlsplit(self._url)
        return f"redis at {parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r})"

    def exists(self) -> bool:
        return True  # a read creates nothing

    def _redis(self) -> Any:
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._client = redis.Redis.from_url(
                self._url, password=self._password, socket_connect_timeout=self.deadline,
                socket_timeout=self.deadline, retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False)
        return self._client

    def _error(self, exc: Exception) -> StoreError:
        """Words of our own: a client's message may quote what it was sent."""
        import redis

        if isinstance(exc, redis.TimeoutError):
            return StoreError(f"{self.where}: no answer within {self.deadline:g} s")
        if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
            return StoreError(f"{self.where}: authentication rejected")
        if isinstance(exc, redis.ConnectionError):
            what = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
            return StoreError(f"{self.where}: {what}")
        return StoreError(f"{self.where}: {type(exc).__name__}")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- keys ---------------------------------------------------------------------------
    def _key(self, environment: str, *parts: str) -> str:
        return ":".join([self.prefix, "{" + environment + "}", *parts])

    # ---- reading ------------------------------------------------------------------------
    def _load(self, environment: str) -> EnvironmentState:
        r = self._redis()
        document = r.get(self._key(environment, "state"))
        ids = [i.decode() for i in r.zrange(self._key(environment, "outbox"), 0, -1)]
        pipe = r.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hmget(self._key(environment, "d", delivery_id), [*FIELDS, "receipt"])
        outbox = [self._delivery(values) for values in pipe.execute() if values[0] is not None]
        try:
            data = json.loads(document) if document else None
        except ValueError:
            raise StateFormatError(f"{self.where}: the state of {environment} is not JSON "
                                   "(nothing decided, nothing changed)") from None
        return EnvironmentState.from_document(environment, data, outbox, where=self.where)

    @staticmethod
    def _delivery(values: list[bytes | None], payload: bytes | None = None) -> Delivery:
        text = {name: (v.decode() if v is not None else None)
                for name, v in zip([*FIELDS, "receipt"], values, strict=True)}
        data: dict[str, Any] = {name: (text[name] or None) for name in FIELDS}
        data["attempts"] = int(text["attempts"] or 0)
        data["seq"] = int(text["seq"] or 0)
        data["headline"] = text["headline"] or ""
        data["receipt"] = json.loads(text["receipt"]) if text["receipt"] else None
        data["payload"] = decode(payload) if payload else {}
        return Delivery.from_dict(data)

    def peek(self, environment: str) -> EnvironmentState:
        with self._guard():
            return self._load(environment)

    def runs(self, environment: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        with self._guard():
            blobs = self._redis().mget([self._key(environment, "run", i) for i in wanted])
        return {run_id: decode(blob) for run_id, blob in zip(wanted, blobs, strict=True) if blob}

    def deliveries(self, environment: str, statuses: Iterable[str]) -> list[Delivery]:
        wanted = set(statuses)
        with self._guard():
            state = self._load(environment)
            chosen = [d for d in state.outbox if d.status in wanted]
            pipe = self._redis().pipeline(transaction=False)
            for d in chosen:
                pipe.hmget(self._key(environment, "d", d.id), [*FIELDS, "receipt", "payload"])
            rows = pipe.execute()
        return [self._delivery(values[:-1], values[-1]) for values in rows
                if values[0] is not None]

    # ---- the lock -----------------------------------------------------------------------
    @contextmanager
    def transaction(self, environment: str) -> Iterator[_Transaction]:
        from redis.exceptions import LockNotOwnedError

        token = uuid.uuid4().hex  # the save's fence: the lock must still hold it
        # thread_local off: this Lock belongs to one transaction, never shared, so a token
        # kept per thread would guard nothing.
        lock = self._redis().lock(self._key(environment, "lock"), timeout=LOCK_LEASE_MS / 1000,
                                  sleep=LOCK_POLL_S, blocking_timeout=self.lock_wait,
                                  thread_local=False)
        with self._guard():
            if not lock.acquire(token=token):
                raise StoreBusy(f"{self.where}: another run held the lock for more than "
                                f"{self.lock_wait:g} s")
        try:
            with self._guard():
                tx = _Transaction(self, environment, lock.name, token, self._load(environment))
                yield tx
        finally:
            # Our lease ran out: the lock is no longer ours to free (the save said so).
            with self._guard(), suppress(LockNotOwnedError):
                lock.release()

    # ---- claims -------------------------------------------------------------------------
    def claim(self, environment: str, delivery_id: str, claimant: str, now: str) -> bool:
        with self._guard():
            return bool(self._redis().eval(CLAIM, 1, self._key(environment, "d", delivery_id),
                                           claimant, now))

    def finish(self, environment: str, delivery_id: str, claimant: str, status: str, *,
               now: str, attempts: int, error: str | None = None,
               receipt: dict[str, Any] | None = None, not_before: str | None = None) -> bool:
        with self._guard():
            return bool(self._redis().eval(
                FINISH, 1, self._key(environment, "d", delivery_id), claimant, status,
                str(attempts), error or "", now, json.dumps(receipt) if receipt else "",
                not_before or ""))

    def delivery(self, environment: str, delivery_id: str) -> Delivery | None:
        with self._guard():
            values = self._redis().hmget(self._key(environment, "d", delivery_id),
                                         [*FIELDS, "receipt"])
        return self._delivery(values) if values[0] is not None else None


class _Transaction:
    def __init__(self, store: RedisStore, environment: str, lock: str, token: str,
                 state: EnvironmentState) -> None:
        self._store, self._environment, self._lock, self._token = store, environment, lock, token
        self.state = state

    def runs(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self._store.runs(self._environment, ids)

    def save(self, state: EnvironmentState, *, run: RunRecord | None,
             deliveries: list[Delivery], changes: list[StatusChange], now: str) -> None:
        import redis

        for _ in range(3):
            try:
                with self._store._guard():
                    self._save_once(state, run, deliveries, changes, now)
                return
            except redis.WatchError:
                continue  # a claim moved a watched delivery meanwhile: read again
        raise StoreError(f"{self._store.where}: the state kept changing while saving")

    def _save_once(self, state: EnvironmentState, run: RunRecord | None,
                   deliveries: list[Delivery], changes: list[StatusChange], now: str) -> None:
        store, env = self._store, self._environment
        key = store._key
        r = store._redis()
        with r.pipeline(transaction=True) as pipe:
            changed = [key(env, "d", c.delivery_id) for c in changes]
            pipe.watch(self._lock, *changed)
            if pipe.get(self._lock) != self._token.encode():
                raise StoreError(f"{store.where}: the lock expired before the save (a run "
                                 f"took more than {LOCK_LEASE_MS / 1000:g} s to decide)")
            statuses = [pipe.hget(k, "status") for k in changed]
            fresh = [d for d in deliveries if not pipe.exists(key(env, "d", d.id))]
            seq = int(pipe.get(key(env, "seq")) or 0)
            stale_runs, stale_deliveries, old_payloads = self._prunable(state, run, now, pipe)
            pipe.multi()
            pipe.set(key(env, "state"), json.dumps(state.document(), ensure_ascii=False))
            if run is not None:
                pipe.set(key(env, "run", run.id), encode(run.summary))
                pipe.zadd(key(env, "runs"), {run.id: _epoch(run.started_at)})
            for d in fresh:
                seq += 1
                fields = {**{name: str(getattr(d, name) or "") for name in FIELDS},
                          "seq": str(seq), "attempts": "0", "updated_at": now}
                pipe.hset(key(env, "d", d.id), mapping={**fields, "payload": encode(d.payload)})
                pipe.zadd(key(env, "outbox"), {d.id: seq})
            pipe.set(key(env, "seq"), seq)
            # A delivery may be changed twice in one save (a stale claim settled back to
            # pending, then superseded): each change sees the status the one before left.
            current = {k: (status or b"").decode() for k, status in zip(changed, statuses,
                                                                       strict=True)}
            for change, k in zip(changes, changed, strict=True):
                if change.expected is None or current[k] == change.expected:
                    current[k] = change.status
                    pipe.hset(k, mapping={"status": change.status, "updated_at": now,
                                          "claimed_by": ""})
                    if change.error is not None:
                        pipe.hset(k, "last_error", change.error)
                    if change.attempts is not None:
                        pipe.hset(k, "attempts", str(change.attempts))
            for run_id in stale_runs:
                pipe.zrem(key(env, "runs"), run_id)
                pipe.delete(key(env, "run", run_id))
            for delivery_id in stale_deliveries:
                pipe.zrem(key(env, "outbox"), delivery_id)
                pipe.delete(key(env, "d", delivery_id))
            for delivery_id in old_payloads:
                pipe.hdel(key(env, "d", delivery_id), "payload")
            pipe.execute()

    def _prunable(self, state: EnvironmentState, run: RunRecord | None, now: str, pipe: Any
                  ) -> tuple[list[str], list[str], list[str]]:
        """Bounded retention, as in the SQLite store: (runs beyond the newest keep_runs or
        older than keep_days, not those an open incident speaks of; finished deliveries of
        incidents no longer remembered; finished deliveries older than keep_days, whose
        payload is dropped)."""
        store, env = self._store, self._environment
        cutoff = datetime.fromisoformat(now).astimezone(UTC) - timedelta(days=store.keep_days)
        needed = runs_needed(state)
        ranked = [(run_id.decode(), score) for run_id, score in
                  pipe.zrevrange(store._key(env, "runs"), 0, -1, withscores=True)]
        if run is not None:  # the run being saved counts among the newest
            ranked = sorted([*[r for r in ranked if r[0] != run.id],
                             (run.id, _epoch(run.started_at))], key=lambda r: -r[1])
        stale = [run_id for n, (run_id, score) in enumerate(ranked)
                 if (n >= store.keep_runs or score < cutoff.timestamp())
                 and run_id not in needed and (run is None or run_id != run.id)]
        remembered = {i.id for i in state.incidents.values()} | {i.id for i in state.closed}
        cutoff_iso = cutoff.isoformat(timespec="seconds")
        finished = [d for d in self.state.outbox if d.status in FINISHED]
        forgotten = [d.id for d in finished if d.incident_id not in remembered]
        old = [d.id for d in finished
               if d.incident_id in remembered and d.created_at < cutoff_iso]
        return stale, forgotten, old


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
