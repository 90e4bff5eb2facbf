"""ai-service — search returning no results, recommendation failures, high latency."""

from __future__ import annotations

from typing import Any

from unibazzar_health.config.platform import Thresholds
from unibazzar_health.judges.pods import resource_bound, scaled_replicas
from unibazzar_health.judges.runbook import (
    CheckContext,
    Finding,
    failures_among,
    gather,
    runbook_check,
)
from unibazzar_health.probes import ProbeFailure
from unibazzar_health.probes.clock import ms, stall_note
from unibazzar_health.probes.redis import CachePerformance
from unibazzar_health.probes.vectordb import CollectionHealth


# ---- 1. Check vector database connectivity ------------------------------------------------
def observe_vector_database(ctx: CheckContext) -> CollectionHealth:
    from unibazzar_health.probes import vectordb

    target = ctx.vector_db()
    return vectordb.collection_health(target, ctx.env.spec.vector_db.collection)  # type: ignore[union-attr]


@runbook_check("ai.vector-database-connectivity", observe=observe_vector_database)
def test_step1_vector_database_connectivity(observed: CollectionHealth,
                                            thresholds: Thresholds) -> None:
    # Gone, empty or answering wrongly: lost data to reindex or restore (the mode's fixes),
    # which no cache clearing brings back.
    if not observed.exists:
        raise Finding(f"vector collection {observed.collection} does not exist",
                      mode="needs-reindex")
    if observed.count <= 0:
        raise Finding(f"vector collection {observed.collection} is empty", mode="needs-reindex")
    if observed.nearest_id != observed.canary_id:
        raise Finding(f"canary query returned {observed.nearest_id}, expected "
                      f"{observed.canary_id}", mode="needs-reindex")
    if observed.query_ms is not None and observed.query_ms > thresholds.vector_query_ms:
        raise Finding(f"canary nearest-neighbour query took {observed.query_ms:.0f} ms "
                      f"> {thresholds.vector_query_ms:.0f} ms"
                      + stall_note(observed.query_ms, observed.query_our_clock_ms),
                      impact="degradation")


# ---- 2. Review model loading and memory usage -------------------------------------------
def observe_model_and_memory(ctx: CheckContext) -> dict[str, Any]:
    from unibazzar_health.probes import http

    url = ctx.service_url("ai-service", "/model")
    ctx.kube()  # not configured: skipped, as before any probe
    return gather(
        model=lambda: http.request("ai-service", "GET", url, ctx.env.deadline("http")),
        pods=lambda: ctx.pods("ai-service"),  # one reading, shared with its scope check
    )


@runbook_check("ai.model-loading-and-memory", observe=observe_model_and_memory)
def test_step2_model_loading_and_memory_usage(observed: dict[str, Any],
                                              thresholds: Thresholds) -> None:
    model, pods = observed["model"], observed["pods"]
    problems = []
    if isinstance(model, ProbeFailure):
        problems.append(f"model endpoint: {model.message}")
    elif model.status != 200 or not (isinstance(model.body, dict) and model.body.get("loaded")):
        problems.append(f"ai-service reports no model loaded (HTTP {model.status}: "
                        f"{str(model.body)[:100]})")
    bound = []  # CPU- or memory-bound: more replicas would help
    if isinstance(pods, ProbeFailure):
        if not problems:
            # Only the cluster could not be read: the catalog rates and fixes that alike
            # for every check (kubernetes failure_fixes), not as this step's degradation.
            raise Finding.of((pods,), "pods: ")
        problems.append(f"pods: {pods.message}")
    elif not pods.exists:
        problems.append(f"deployment {pods.deployment} does not exist")
    else:
        # Crash loops are every service's scope-and-impact finding; memory is this step's.
        bound = resource_bound(pods, thresholds.restart_window_minutes,
                               thresholds.pod_memory_usage, thresholds.pod_cpu_usage)
        problems += [b.text for b in bound]
    if problems:
        # Scaling out is the runbook's fix for a CPU- or memory-bound service only (its
        # resource-bound mode): half as many replicas again fills in its `kubectl scale`.
        raise Finding("; ".join(problems), impact="degradation",
                      failures=failures_among(model, pods),
                      mode="resource-bound" if bound else None,
                      names={"replicas": scaled_replicas(pods)} if bound else {})


# ---- 3. Verify Redis cache performance ----------------------------------------------------
def observe_ai_cache(ctx: CheckContext) -> CachePerformance:
    from unibazzar_health.probes import redis

    # Timed as the answers reached this host, not when our thread got to them: a busy
    # probe host must not read as a slow Redis (the evidence's "timing" says which it was).
    return redis.cache_performance(ctx.redis("ai-cache"))


@runbook_check("ai.redis-cache-performance", observe=observe_ai_cache)
def test_step3_redis_cache_performance(observed: CachePerformance,
                                       thresholds: Thresholds) -> None:
    limit = thresholds.redis_latency_p95_ms
    if observed.ping_p95_ms > limit:
        if not observed.kernel_timed:
            raise Finding(
                f"Redis PING p95 {observed.ping_p95_ms:.1f} ms > {limit:g} ms on our own clock "
                "(this host's kernel did not time the answers: a stall of ours counts too)")
        own = observed.redis_usec_per_ping
        said = ("" if own is None
                else f"; Redis itself spent {observed.redis_ping_time} running each PING")
        if own is not None and own / 1000 < observed.ping_p95_ms / 2:
            # Redis's own view acquits the command: the wait is in front of it.
            said += (", so they waited before it ran them (paused clients, a blocking "
                     "command, the network)")
        raise Finding(
            f"Redis PING p95 {observed.ping_p95_ms:.1f} ms > {limit:g} ms as its answers "
            f"reached this host (our own stall, up to {ms(observed.stalled_max_ms)} ms, left "
            f"out){said}")
    if observed.memory_usage is not None:
        assert observed.memory_usage < thresholds.redis_memory_usage, (
            f"Redis memory {observed.memory_usage:.0%} of maxmemory "
            f">= {thresholds.redis_memory_usage:.0%} (evicted keys: {observed.evicted_keys})")


# ---- 4. Check embedding service health ----------------------------------------------------
def observe_embeddings(ctx: CheckContext) -> dict[str, Any]:
    from unibazzar_health.probes import http

    deadline = ctx.env.deadline("http")
    model = http.request("ai-service", "GET", ctx.service_url("ai-service", "/model"), deadline)
    url = ctx.service_url("ai-service", "/embed")
    canary = {"text": "unibazzar health canary: used calculus textbook"}
    first = http.request("ai-service", "POST", url, deadline, json=canary)
    second = http.request("ai-service", "POST", url, deadline, json=canary)

    def vector(answer: Any) -> list[float]:
        return answer.body.get("embedding", []) if isinstance(answer.body, dict) else []

    return {
        "model": model.body if model.status == 200 else {"status": model.status},
        "embed_status": first.status,
        "dimension": len(vector(first)),
        "deterministic": vector(first) == vector(second),
        # The slower of the two as ai-service answered it, and on our own clock: a busy
        # probe host stalls only the latter.
        "embed_ms": max(first.judged_ms, second.judged_ms),
        "embed_our_clock_ms": max(first.elapsed_ms, second.elapsed_ms),
    }


@runbook_check("ai.embedding-service-health", observe=observe_embeddings)
def test_step4_embedding_service_health(observed: dict[str, Any],
                                        thresholds: Thresholds) -> None:
    model = observed["model"]
    assert model.get("loaded") is True, f"ai-service reports no model loaded: {model}"
    assert observed["embed_status"] == 200, f"/embed answered HTTP {observed['embed_status']}"
    assert observed["dimension"] == model.get("dimension"), (
        f"canary embedding has {observed['dimension']} dimensions, model says "
        f"{model.get('dimension')}")
    assert observed["deterministic"], "the same canary text embedded to different vectors"
    assert observed["embed_ms"] <= thresholds.embedding_ms, (
        f"embedding took {observed['embed_ms']:.0f} ms > {thresholds.embedding_ms:g} ms"
        + stall_note(observed["embed_ms"], observed.get("embed_our_clock_ms")))


# ---- Symptoms: recommendation failures (end to end) ---------------------------------------
def observe_recommendations(ctx: CheckContext) -> dict[str, Any]:
    from urllib.parse import urlencode

    from unibazzar_health.probes import http

    canary = ctx.require("canary", ctx.env.spec.canary)
    spec = ctx.env.spec.service("ai-service")
    path = ctx.require("services.ai-service.recommendations_path",
                       spec.recommendations_path if spec else None)
    url = ctx.service_url("ai-service", path + ("&" if "?" in path else "?")
                          + urlencode({"user": canary.email}))
    answer = http.request("ai-service", "GET", url, ctx.env.deadline("http"))
    body = answer.body if isinstance(answer.body, dict) else {}
    items = body.get("recommendations")
    return {"url": url, "user": canary.email, "status": answer.status,
            "count": len(items) if isinstance(items, list) else None,
            "first": items[:3] if isinstance(items, list) else None,
            # As ai-service answered, and on our own clock (which a busy probe host stalls).
            "elapsed_ms": answer.judged_ms, "elapsed_our_clock_ms": answer.elapsed_ms}


@runbook_check("ai.end-to-end-recommendations", observe=observe_recommendations)
def test_recommendations_for_the_canary_user_within_budget(observed: dict[str, Any],
                                                          thresholds: Thresholds) -> None:
    assert observed["status"] == 200, (
        f"recommendations for the canary user answered HTTP {observed['status']}")
    assert observed["count"], (
        f"recommendations for the canary user {observed['user']} are empty "
        f"({'no recommendations list' if observed['count'] is None else 'none returned'})")
    if observed["elapsed_ms"] > thresholds.recommendations_ms:
        # Slow says nothing of CPU or memory yet: read them before scaling (the mode).
        raise Finding(f"recommendations for the canary user took {observed['elapsed_ms']:.0f} "
                      f"ms > {thresholds.recommendations_ms:g} ms"
                      + stall_note(observed["elapsed_ms"], observed.get("elapsed_our_clock_ms")),
                      impact="performance-major", mode="slow")


# ---- Symptoms: search returning no results, high latency (end to end) ---------------------
SEARCH_SAMPLES = 5


def observe_search(ctx: CheckContext) -> dict[str, Any]:
    import time
    from urllib.parse import urlencode

    from unibazzar_health.probes import http
    from unibazzar_health.probes.clock import Latency, Timing

    canary = ctx.require("canary", ctx.env.spec.canary)
    query = ctx.require("canary.search_query", canary.search_query)
    url = ctx.service_url("ai-service", "/search?" + urlencode({"q": query}))
    deadline = ctx.env.deadline("http")
    started, answers = time.monotonic(), []
    # Up to SEARCH_SAMPLES searches, within about one deadline in all (the first may be the
    # uncached one, so at least two).
    while len(answers) < SEARCH_SAMPLES and (len(answers) < 2
                                             or time.monotonic() - started < deadline):
        answers.append(http.request("ai-service", "GET", url, deadline))

    def ids(answer: Any) -> list[Any]:
        results = answer.body.get("results", []) if isinstance(answer.body, dict) else []
        return [r.get("id") for r in results if isinstance(r, dict)]

    # As ai-service answered (this host's network stack's clock), our own clock beside it.
    latency = Latency.of([Timing(a.elapsed_ms, a.answered_ms) for a in answers])
    return {
        "query": query,
        "statuses": [a.status for a in answers],
        "result_ids": [ids(a) for a in answers],
        "expect_id": canary.search_expect_id,
        "p95_ms": latency.p95_ms,
        "p95_our_clock_ms": latency.ours_p95_ms,
        "timing": latency.said("ai-service's search"),
        "samples": len(answers),
    }


@runbook_check("ai.end-to-end-search", observe=observe_search)
def test_search_returns_results_within_budget(observed: dict[str, Any],
                                             thresholds: Thresholds) -> None:
    failing = [s for s in observed["statuses"] if s != 200]
    assert not failing, (f"canary search answered HTTP {failing[0]} "
                         f"({len(failing)} of {observed['samples']} requests)")
    # Every answer judged: the first may be uncached, the next ones from the cache. Nothing
    # found, or not the canary's listing: the vector collection's (the mode's fixes).
    for n, ids in enumerate(observed["result_ids"], 1):
        if not ids:
            raise Finding(f"canary search {observed['query']!r} returned no results "
                          f"(search {n} of {observed['samples']})", mode="no-results")
        expect = observed["expect_id"]
        if expect is not None and expect not in ids:
            raise Finding(f"canary search {observed['query']!r} did not return {expect}: "
                          f"{ids} (search {n} of {observed['samples']})", mode="no-results")
    if observed["p95_ms"] > thresholds.search_p95_ms:
        raise Finding(f"canary search p95 {observed['p95_ms']:.0f} ms > "
                      f"{thresholds.search_p95_ms:g} ms over {observed['samples']} requests"
                      + stall_note(observed["p95_ms"], observed.get("p95_our_clock_ms")),
                      impact="performance-major", mode="slow")
