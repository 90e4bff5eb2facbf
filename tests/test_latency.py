"""Latency judged as the backend answered, not as our thread got to the answer
(probes/clock.py): a stall of our own is left out, a slow backend is not, and the finding or
the evidence says which it was. Real sockets on loopback; the Redis probe against the
sandbox is in test_probes.py, the busy host's game day in test_game_days.py."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from receivers import answering
from werkzeug import Request, Response

from unibazzar_health.config.platform import Thresholds
from unibazzar_health.probes import http
from unibazzar_health.probes.clock import Latency, Timing, exchange, stamp
from unibazzar_health.probes.redis import CachePerformance

from conftest import check_module

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="the network stack's clock is read on Linux only")




ai = check_module("ai_service/test_ai_service.py", "latency")


# ---- the two clocks, on a real socket ----------------------------------------------------------
@pytest.fixture
def late_answerer() -> Iterator[tuple[str, int]]:
    """Answers each request ``+PONG`` 20 ms after it arrives, from another thread."""
    # Hand-written: raw TCP (Redis's wire answers, one connection kept), not HTTP.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while conn.recv(1024):
                time.sleep(0.02)
                conn.sendall(b"+PONG\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()
    server.close()


@pytest.mark.parametrize("kernel", ["timestamps", "tcp_info"])
def test_a_stall_after_the_answer_arrived_is_ours_the_wait_before_it_the_backends(
        late_answerer: tuple[str, int], kernel: str) -> None:
    """The answer arrives 20 ms after the request; our thread turns to it only 80 ms after
    sending: our clock reads 80, the kernel 20 (its receive timestamp to the microsecond,
    TCP_INFO to its tick, 4 ms here)."""
    with socket.create_connection(late_answerer, timeout=2) as sock:
        stamped = stamp(sock) if kernel == "timestamps" else False
        assert stamped is (kernel == "timestamps")
        stalled = []

        def complete(answer: bytes) -> bool:
            if not stalled:  # our thread busy elsewhere before its first read
                stalled.append(time.sleep(0.08))
            return answer.endswith(b"\r\n")

        answer, timing = exchange(sock, b"PING\r\n", complete, stamped)
        assert answer == b"+PONG\r\n"
        assert timing.ms >= 80
        assert timing.answered_ms is not None and 15 <= timing.answered_ms <= 45, timing
        assert timing.stalled_ms >= 40, timing
        # Without a stall both clocks agree (within a tick).
        answer, timing = exchange(sock, b"PING\r\n", lambda a: a.endswith(b"\r\n"), stamped)
        assert timing.answered_ms is not None and timing.ms - timing.answered_ms <= 5, timing


def slow_answer(request: Request) -> Response:
    time.sleep(0.03)
    return Response(b'{"ok": true}', content_type="application/json")


class StalledSession(requests.Session):
    """Our thread held up 80 ms once the answer is in: what a busy host does to it."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        time.sleep(0.08)
        return response


def test_an_http_answer_is_judged_as_the_service_answered() -> None:
    """The service answers in 30 ms, our thread gets to it 80 ms later (and the server has
    closed its end: Connection: close): the answer's time is the service's, within a tick."""
    with answering(slow_answer, method="GET") as server:
        url = server.url_for("/")
        with StalledSession() as session:
            stalled = http.request("svc", "GET", url, 2.0, session=session)
        quiet = http.request("svc", "GET", url, 2.0)
    assert stalled.status == 200 and stalled.body == {"ok": True}
    assert stalled.elapsed_ms >= 110, stalled
    assert stalled.answered_ms is not None and 25 <= stalled.answered_ms <= 60, stalled
    assert stalled.judged_ms == stalled.answered_ms
    assert quiet.answered_ms is not None and quiet.elapsed_ms - quiet.answered_ms <= 5, quiet


def test_latency_says_which_it_was() -> None:
    # Forty round trips, ten of them stalled on our side: p95 is the 38th.
    busy = Latency.of([Timing(0.3, 0.2)] * 30 + [Timing(110.0, 0.2)] * 8
                      + [Timing(117.0, 0.3)] * 2)
    assert (busy.p95_ms, busy.ours_p95_ms, busy.stalled_max_ms) == (0.2, 110.0, 116.7)
    assert busy.kernel_timed
    assert busy.said("Redis") == (
        "Redis answered in 0.2 ms (p95, as this host's network stack received it); our host "
        "stalled up to 116.7 ms more (our clock read p95 110.0 ms)")
    blind = Latency.of([Timing(0.2), Timing(80.0)])
    assert not blind.kernel_timed and blind.p95_ms == 80.0
    assert "on our own clock only" in blind.said("Redis")


# ---- the checks judge the backend's time and say whose the rest was ---------------------------
CACHE = CachePerformance(samples=40, ping_p50_ms=0.1, ping_p95_ms=0.2, ping_max_ms=0.4,
                         get_p95_ms=0.2, keyspace_hits=10, keyspace_misses=40, hit_ratio=0.2,
                         evicted_keys=0, used_memory=1, maxmemory=100, memory_usage=0.01,
                         ping_p95_our_clock_ms=116.8, stalled_max_ms=150.0, kernel_timed=True,
                         redis_usec_per_ping=1.2)


def judged(test: Any, *args: Any) -> str | None:
    try:
        test(*args)
    except AssertionError as exc:
        return str(exc)
    return None


def test_a_busy_probe_host_is_no_slow_redis_and_a_slow_redis_still_is() -> None:
    # The run: p95 116.8 ms on our clock, Redis itself at 0.2 ms: healthy.
    assert judged(ai.test_step3_redis_cache_performance, CACHE, Thresholds()) is None
    slow = replace(CACHE, ping_p95_ms=201.3, ping_p95_our_clock_ms=201.7, stalled_max_ms=0.4)
    assert judged(ai.test_step3_redis_cache_performance, slow, Thresholds()) == (
        "Redis PING p95 201.3 ms > 50 ms as its answers reached this host (our own stall, up "
        "to 0.4 ms, left out); Redis itself spent 1.2 µs running each PING, so they waited "
        "before it ran them (paused clients, a blocking command, the network)")
    blind = replace(CACHE, ping_p95_ms=80.0, kernel_timed=False, stalled_max_ms=0.0)
    assert judged(ai.test_step3_redis_cache_performance, blind, Thresholds()) == (
        "Redis PING p95 80.0 ms > 50 ms on our own clock (this host's kernel did not time the "
        "answers: a stall of ours counts too)")


SEARCH = {"query": "q", "statuses": [200] * 5, "result_ids": [["l-1"]] * 5,
          "expect_id": "l-1", "samples": 5}


def test_a_search_is_judged_as_ai_service_answered() -> None:
    stalled = SEARCH | {"p95_ms": 240.0, "p95_our_clock_ms": 1300.0}
    assert judged(ai.test_search_returns_results_within_budget, stalled, Thresholds()) is None
    slow = SEARCH | {"p95_ms": 1200.0, "p95_our_clock_ms": 1400.0}
    assert judged(ai.test_search_returns_results_within_budget, slow, Thresholds()) == (
        "canary search p95 1200 ms > 1000 ms over 5 requests as this host received it (our "
        "clock read 1400 ms; our own stall left out)")
    alike = SEARCH | {"p95_ms": 1200.0, "p95_our_clock_ms": 1203.0}
    assert judged(ai.test_search_returns_results_within_budget, alike, Thresholds()) == (
        "canary search p95 1200 ms > 1000 ms over 5 requests")


def test_recommendations_and_embeddings_are_judged_as_ai_service_answered() -> None:
    seen = {"url": "u", "user": "c", "status": 200, "count": 3, "first": [1, 2, 3],
            "elapsed_ms": 300.0, "elapsed_our_clock_ms": 1500.0}
    assert judged(ai.test_recommendations_for_the_canary_user_within_budget, seen,
                  Thresholds()) is None
    assert judged(ai.test_recommendations_for_the_canary_user_within_budget,
                  seen | {"elapsed_ms": 1500.0}, Thresholds()) == (
        "recommendations for the canary user took 1500 ms > 1000 ms")
    embedded = {"model": {"loaded": True, "dimension": 8}, "embed_status": 200, "dimension": 8,
                "deterministic": True, "embed_ms": 90.0, "embed_our_clock_ms": 1100.0}
    assert judged(ai.test_step4_embedding_service_health, embedded, Thresholds()) is None
