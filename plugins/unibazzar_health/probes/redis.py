"""Redis through redis-py: socket timeouts from the deadline, retries off."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from unibazzar_health.probes import (
    DeadlineExceeded,
    FailureKind,
    ProbeError,
    connection_failure,
    timed,
)
from unibazzar_health.probes.clock import Latency, Timing, exchange, stamp, stop_stamping


@dataclass(frozen=True)
class RedisTarget:
    url: str  # carries no password
    password: str | None = field(repr=False)
    deadline: float

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


@dataclass(frozen=True)
class CachePerformance:
    samples: int
    # PING and GET as Redis answered them: until each answer reached this host's network
    # stack (clock.py), so a stall of our own host is not counted as Redis's.
    ping_p50_ms: float
    ping_p95_ms: float
    ping_max_ms: float
    get_p95_ms: float
    keyspace_hits: int
    keyspace_misses: int
    hit_ratio: float | None
    evicted_keys: int
    used_memory: int
    maxmemory: int
    memory_usage: float | None
    # Our own clock's PING p95 and our host's longest stall in a PING, and whether the
    # kernel timed every answer (False: the p95s above are our clock's too).
    ping_p95_our_clock_ms: float = 0.0
    stalled_max_ms: float = 0.0
    kernel_timed: bool = False
    # Redis's own view: microseconds it spent running each PING during the round (INFO
    # commandstats); None where it does not say. Tiny beside a slow answer: the time went
    # before Redis ran the command (paused clients, a blocking command, the network).
    redis_usec_per_ping: float | None = None
    timing: str = ""  # which it was, in words

    @property
    def redis_ping_time(self) -> str | None:
        """Redis's own time per PING in words (it counts whole microseconds per call)."""
        own = self.redis_usec_per_ping
        return None if own is None else f"{own:g} µs" if own >= 1 else "under 1 µs"


def client(target: RedisTarget) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        target.url,
        password=target.password,
        socket_connect_timeout=target.deadline,
        socket_timeout=target.deadline,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


def _explain(exc: Exception, target: RedisTarget) -> ProbeError:
    import redis

    if isinstance(exc, redis.TimeoutError):
        return DeadlineExceeded("redis", target.where, target.deadline)
    problem = f"{type(exc).__name__}: {exc}"
    # Before ConnectionError: redis-py makes AuthenticationError (NOAUTH, WRONGPASS) one.
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return ProbeError("redis", target.where, problem, target.deadline,
                          kind=FailureKind.AUTH_REJECTED)
    if isinstance(exc, redis.ConnectionError):
        kind = connection_failure(exc)
        if kind is FailureKind.REFUSED:
            problem = "connection refused"
        return ProbeError("redis", target.where, problem, target.deadline, kind=kind)
    return ProbeError("redis", target.where, problem, target.deadline,
                      kind=FailureKind.UNEXPECTED_ANSWER)


def ping(target: RedisTarget) -> float:
    """Milliseconds to connect and answer one PING."""
    import redis

    conn = client(target)
    try:
        with timed() as t:
            conn.ping()
    except redis.RedisError as exc:
        raise _explain(exc, target) from None
    finally:
        conn.close()
    return t.ms


def cache_performance(target: RedisTarget, samples: int = 40) -> CachePerformance:
    """Latency percentiles over ``samples`` PING and GET round trips, each timed on two
    clocks (clock.py): ours, and this host's network stack's. The p95s judged are the
    latter's: on a busy probe host our thread waits for a core or for the interpreter after
    Redis answered (a healthy Redis read p95 117 ms on our clock with three runs at once on
    two cores, 3.5 ms as the answers arrived), while a slow Redis is slow on both. Redis's
    own time per PING (INFO commandstats) is kept beside them."""
    import redis

    conn = client(target)
    started = time.monotonic()
    try:
        conn.ping()  # connects and logs in through redis-py: its failures named as ever
        before = _usec_per_ping(conn)
        pings, gets = _latency_round(conn, target, samples, started)
        after = _usec_per_ping(conn)
        stats = conn.info("stats")
        memory = conn.info("memory")
    except redis.RedisError as exc:
        raise _explain(exc, target) from None
    finally:
        conn.close()
    hits, misses = int(stats.get("keyspace_hits", 0)), int(stats.get("keyspace_misses", 0))
    used, maxmemory = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    ping, get = Latency.of(pings), Latency.of(gets)
    own = None
    if before is not None and after is not None and after[0] > before[0]:
        own = round((after[1] - before[1]) / (after[0] - before[0]), 2)
    performance = CachePerformance(
        samples=ping.samples,
        ping_p50_ms=ping.p50_ms,
        ping_p95_ms=ping.p95_ms,
        ping_max_ms=ping.max_ms,
        get_p95_ms=get.p95_ms,
        keyspace_hits=hits,
        keyspace_misses=misses,
        hit_ratio=round(hits / (hits + misses), 4) if hits + misses else None,
        evicted_keys=int(stats.get("evicted_keys", 0)),
        used_memory=used,
        maxmemory=maxmemory,
        memory_usage=round(used / maxmemory, 4) if maxmemory else None,
        ping_p95_our_clock_ms=ping.ours_p95_ms,
        stalled_max_ms=ping.stalled_max_ms,  # of the PINGs, the round trips judged
        kernel_timed=ping.kernel_timed and get.kernel_timed,
        redis_usec_per_ping=own,
    )
    own_time = performance.redis_ping_time
    said = ping.said("Redis") + ("" if own_time is None else f"; Redis itself spent {own_time} "
                                 "running each PING (INFO commandstats)")
    return replace(performance, timing=said)


def _usec_per_ping(conn: Any) -> tuple[int, int] | None:
    """PING's calls and microseconds so far (INFO commandstats), None where Redis does not
    say (the section renamed or refused to our user)."""
    import redis

    try:
        ping = conn.info("commandstats").get("cmdstat_ping")
    except redis.ResponseError:
        return None
    if not isinstance(ping, dict) or "calls" not in ping or "usec" not in ping:
        return None
    return int(ping["calls"]), int(ping["usec"])


# A key nobody writes: GET measures the read path without touching data.
LATENCY_KEY = "unibazzar-health:canary:latency-probe"
_PING = b"*1\r\n$4\r\nPING\r\n"
_GET = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(LATENCY_KEY), LATENCY_KEY.encode())


def _latency_round(conn: Any, target: RedisTarget, samples: int,
                   started: float) -> tuple[list[Timing], list[Timing]]:
    """Up to ``samples`` PING and GET round trips within the deadline (three at least:
    against a slow Redis, fewer samples still give the percentile), written and read on the
    socket of redis-py's logged-in connection, where the kernel can timestamp the answers."""
    pool = conn.connection_pool
    connection = pool.get_connection()
    sock = getattr(connection, "_sock", None)
    pings: list[Timing] = []
    gets: list[Timing] = []
    stamped = sock is not None and stamp(sock)
    failed = True
    try:
        if stamped:
            # The kernel turns receive timestamps on for the whole host a moment after the
            # first socket asks (a worker of its own, late on a busy host): PINGs not
            # counted until one comes back stamped, for a tenth of the deadline at most.
            warming = time.monotonic() + target.deadline / 10
            while (_round_trip(sock, _PING, stamped, target).answered_ms is None
                   and time.monotonic() < warming):
                time.sleep(0.002)
        while len(pings) < samples and (len(pings) < 3
                                        or time.monotonic() - started < target.deadline):
            if sock is None:  # a connection class without a socket: our clock only
                with timed() as t:
                    connection.send_command("PING")
                    connection.read_response()
                pings.append(Timing(t.ms))
                with timed() as t:
                    connection.send_command("GET", LATENCY_KEY)
                    connection.read_response()
                gets.append(Timing(t.ms))
                continue
            pings.append(_round_trip(sock, _PING, stamped, target))
            gets.append(_round_trip(sock, _GET, stamped, target))
        failed = False
    finally:
        if stamped:
            stop_stamping(sock)
        if failed:
            connection.disconnect()  # maybe mid-answer: no longer a stream redis-py can read
        pool.release(connection)
    return pings, gets


def _round_trip(sock: Any, request: bytes, stamped: bool, target: RedisTarget) -> Timing:
    try:
        answer, timing = exchange(sock, request, _complete, stamped)
    except TimeoutError:
        raise DeadlineExceeded("redis", target.where, target.deadline) from None
    except OSError as exc:
        raise ProbeError("redis", target.where, f"{type(exc).__name__}: {exc}",
                         target.deadline, kind=connection_failure(exc)) from None
    except ValueError:  # a bulk string's length that is no number: not Redis speaking
        raise ProbeError("redis", target.where, "malformed answer", target.deadline,
                         kind=FailureKind.UNEXPECTED_ANSWER) from None
    if answer.startswith(b"-"):
        raise ProbeError("redis", target.where, answer[1:].decode(errors="replace").strip(),
                         target.deadline, kind=FailureKind.UNEXPECTED_ANSWER)
    return timing


def _complete(answer: bytes) -> bool:
    """Whether ``answer`` holds one whole reply to PING or GET (RESP2 or RESP3): a simple
    line, or a bulk string ``$N`` followed by N bytes."""
    end = answer.find(b"\r\n")
    if end < 0:
        return False
    if not answer.startswith(b"$"):
        return True
    length = int(answer[1:end])
    return length < 0 or len(answer) >= end + 2 + length + 2
