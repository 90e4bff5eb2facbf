"""Both incident stores against real servers (a SQLite file; a redis-server started for the
session): what is saved is read back, one transaction at a time per environment, a claim
succeeds for exactly one of many concurrent claimants, only the claimant records the
result, a Redis save whose lock expired changes nothing, retention is bounded (delivery rows
as long as their incident is remembered, payloads for keep_days), and a state document of a
newer version is refused with a clear error."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from receivers import RedisServer, start_redis

from unibazzar_health.incidents.redis_store import RedisStore
from unibazzar_health.incidents.sqlite_store import SqliteStore
from unibazzar_health.incidents.state import (
    Delivery,
    EnvironmentState,
    Event,
    Incident,
    RunRecord,
    StateFormatError,
    StatusChange,
    StoreBusy,
    StoreError,
)

NOW = "2026-11-27T03:00:00+00:00"


@pytest.fixture(scope="module")  # gone before other modules count the machine's servers
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    process, server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    process.terminate()
    process.wait(10)


Factory = Callable[..., Any]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Builds stores over one shared backing store (each its own connection)."""
    made: list[Any] = []
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    def make(**options: Any) -> Any:
        if request.param == "sqlite":
            store: Any = SqliteStore(tmp_path / "state" / "incidents.sqlite3", **options)
        else:
            server = request.getfixturevalue("redis_server")
            store = RedisStore(server.url, server.password, prefix=prefix, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def incident(key: str = "dependency:redis") -> Incident:
    return Incident(id="i-1", key=key, title="redis failing", services=["ai-service"],
                    dependency="redis", severity="SEV2", first_failure_at=NOW,
                    first_run_id="run-1", last_failure_at=NOW, last_failing_run_id="run-1",
                    checks=["ai.redis-cache-performance"],
                    all_checks=["ai.redis-cache-performance"], alerted=True,
                    events=[Event(NOW, "alert", "Initial Notification")])


def delivery(number: int = 1, notifier: str = "slack") -> Delivery:
    return Delivery(id=f"d-{number}-{notifier}", environment="production", incident_id="i-1",
                    incident_key="dependency:redis", kind="alert", notifier=notifier,
                    payload={"message": {"lines": ["🚨 INCIDENT ALERT - SEV 2"]},
                             "summary": {"evidence": "x" * 5000}},
                    dedup_key="k", created_at=NOW, headline="🚨 INCIDENT ALERT - SEV 2")


def save(store: Any, deliveries: tuple[Delivery, ...] = (), run_id: str = "run-1",
         changes: tuple[StatusChange, ...] = (), started_at: str = NOW) -> None:
    with store.transaction("production") as tx:
        state = tx.state
        state.incidents["dependency:redis"] = incident()
        tx.save(state, run=RunRecord(run_id, started_at, "failing", {"run": run_id}),
                deliveries=list(deliveries), changes=list(changes), now=NOW)


def test_what_is_saved_is_read_back(make_store: Factory) -> None:
    store = make_store()
    save(store, (delivery(1), delivery(1, "pagerduty")))
    state = make_store().peek("production")
    assert state.incidents["dependency:redis"] == incident()
    assert [(d.id, d.status, d.seq, d.payload) for d in state.outbox] == [
        ("d-1-slack", "pending", 1, {}), ("d-1-pagerduty", "pending", 2, {})]
    pending = store.deliveries("production", ["pending"])
    assert pending[0].payload == delivery(1).payload
    assert store.runs("production", ["run-1", "gone"]) == {"run-1": {"run": "run-1"}}
    assert make_store().peek("staging").incidents == {}  # environments apart


def test_a_delivery_decided_twice_is_one_row(make_store: Factory) -> None:
    store = make_store()
    save(store, (delivery(1),))
    save(store, (delivery(1),), run_id="run-2")
    assert [d.id for d in store.peek("production").outbox] == ["d-1-slack"]


def test_one_claimant_wins_among_many_at_once(make_store: Factory) -> None:
    save(make_store(), (delivery(1),))
    stores = [make_store() for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    won: list[bool] = []

    def claim(store: Any, n: int) -> None:
        barrier.wait()
        won.append(store.claim("production", "d-1-slack", f"host:{n}:run", NOW))

    threads = [threading.Thread(target=claim, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]
    assert make_store().peek("production").outbox[0].status == "sending"


def test_only_the_claimant_records_the_result(make_store: Factory) -> None:
    store = make_store()
    save(store, (delivery(1),))
    assert store.claim("production", "d-1-slack", "a:1:r", NOW)
    assert not store.finish("production", "d-1-slack", "b:2:r", "sent", now=NOW, attempts=1)
    assert store.finish("production", "d-1-slack", "a:1:r", "sent", now=NOW, attempts=1,
                        receipt={"number": 7})
    row = store.peek("production").outbox[0]
    assert (row.status, row.attempts, row.receipt, row.sent_at) == ("sent", 1, {"number": 7}, NOW)
    assert not store.claim("production", "d-1-slack", "c:3:r", NOW)  # sent is final


def test_status_changes_apply_only_from_the_expected_status(make_store: Factory) -> None:
    store = make_store()
    save(store, (delivery(1), delivery(2)))
    store.claim("production", "d-2-slack", "a:1:r", NOW)  # another runner took it meanwhile
    save(store, run_id="run-2", changes=(
        StatusChange("d-1-slack", "superseded", expected="pending"),
        StatusChange("d-2-slack", "superseded", expected="pending")))
    assert [d.status for d in store.peek("production").outbox] == ["superseded", "sending"]


def test_one_transaction_at_a_time_per_environment(make_store: Factory) -> None:
    holder, waiter = make_store(), make_store(lock_wait=0.5)
    with holder.transaction("production"):
        started = time.monotonic()
        with pytest.raises(StoreBusy), waiter.transaction("production"):
            pass
        assert time.monotonic() - started < 5  # bounded wait, not a hang
    with waiter.transaction("production"):  # free again
        pass


def test_retention_keeps_the_newest_runs_and_those_an_open_incident_needs(
        make_store: Factory) -> None:
    store = make_store(keep_runs=2)
    for n in range(1, 6):
        save(store, run_id=f"run-{n}", started_at=f"2026-11-27T03:0{n}:00+00:00")
    kept = store.runs("production", [f"run-{n}" for n in range(1, 6)])
    # run-1 is the open incident's first run (its Duration starts there).
    assert sorted(kept) == ["run-1", "run-4", "run-5"]


def test_a_redis_save_after_the_lock_expired_changes_nothing(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import unibazzar_health.incidents.redis_store as module

    monkeypatch.setattr(module, "LOCK_LEASE_MS", 200)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    slow = RedisStore(redis_server.url, redis_server.password, prefix=prefix)
    other = RedisStore(redis_server.url, redis_server.password, prefix=prefix)
    with slow.transaction("production") as tx:
        time.sleep(0.4)  # the lease runs out while this run "decides"
        with other.transaction("production") as tx2:  # another run takes the lock
            with pytest.raises(StoreError, match="lock expired"):
                tx.save(EnvironmentState("production", {"x": incident("x")}), run=None,
                        deliveries=[], changes=[], now=NOW)
            tx2.save(EnvironmentState("production"), run=None, deliveries=[], changes=[],
                     now=NOW)
    assert other.peek("production").incidents == {}
    slow.close()
    other.close()


def test_a_redis_lease_that_ran_out_fences_the_save_and_never_frees_anothers_lock(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import unibazzar_health.incidents.redis_store as module

    monkeypatch.setattr(module, "LOCK_LEASE_MS", 200)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    slow, other, third = (RedisStore(redis_server.url, redis_server.password, prefix=prefix,
                                     lock_wait=0.1) for _ in range(3))
    # Nobody took the lock after the lease ran out: the save is refused all the same.
    with slow.transaction("production") as tx:
        time.sleep(0.4)
        with pytest.raises(StoreError, match="lock expired"):
            tx.save(EnvironmentState("production", {"x": incident("x")}), run=None,
                    deliveries=[], changes=[], now=NOW)
    assert other.peek("production").incidents == {}
    # Leaving after the lease ran out frees nothing: the lock another run took stays its own.
    monkeypatch.setattr(module, "LOCK_LEASE_MS", 5000)
    held = slow.transaction("production")
    held.__enter__()
    slow._redis().delete(slow._key("production", "lock"))  # the lease ran out
    with other.transaction("production"):
        held.__exit__(None, None, None)
        with pytest.raises(StoreBusy), third.transaction("production"):
            pass
    for store in (slow, other, third):
        store.close()


def test_an_unreachable_redis_is_a_store_error_within_its_deadline() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/7", "pw-never-shown", deadline=1.0)
    with pytest.raises(StoreError) as raised:
        store.peek("production")
    assert str(raised.value) == f"redis at 127.0.0.1:{port}/7: connection refused"


def test_delivery_rows_live_as_long_as_their_incident_is_remembered(
        make_store: Factory) -> None:
    store = make_store(keep_days=1)
    old = "2026-11-01T03:00:00+00:00"
    kept = replace(delivery(1, "ticket"), created_at=old)  # incident i-1: resolved, kept
    forgotten = replace(delivery(2, "ticket"), created_at=old, incident_id="i-0")
    with store.transaction("production") as tx:
        state = tx.state
        state.closed = [replace(incident(), resolved_at=old)]
        tx.save(state, run=None, deliveries=[kept, forgotten], changes=[], now=old)
    for d in (kept, forgotten):
        assert store.claim("production", d.id, "a:1:r", old)
        assert store.finish("production", d.id, "a:1:r", "sent", now=old, attempts=1,
                            receipt={"number": 7})
    with store.transaction("production") as tx:  # a run 26 days later prunes
        tx.save(tx.state, run=None, deliveries=[], changes=[], now=NOW)
    state = make_store().peek("production")
    assert [d.id for d in state.outbox] == [kept.id]
    assert state.ticket_of("i-1") == {"number": 7}  # the timeline still names the ticket
    assert store.deliveries("production", ["sent"])[0].payload == {}  # its body is dropped


def test_the_state_document_says_its_version() -> None:
    assert EnvironmentState("production").document() == {
        "version": 2, "environment": "production", "incidents": {}, "closed": [],
        "silences": []}


def test_a_state_of_a_newer_version_is_refused_clearly(make_store: Factory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import unibazzar_health.incidents.state as state_module

    store = make_store()
    monkeypatch.setattr(state_module, "STATE_VERSION", 3)  # a newer runner saves
    save(store)
    monkeypatch.undo()
    with pytest.raises(StateFormatError) as raised:
        make_store().peek("production")
    assert str(raised.value) == (
        f"{store.where}: the state of production is version 3; this unibazzar-health reads "
        "versions 1 to 2: run the same version on every runner that shares the store "
        "(nothing decided, nothing changed)")
    with pytest.raises(StateFormatError), store.transaction("production"):
        pass
