"""ai-service — search returning no results, recommendation failures, high latency."""

from __future__ import annotations

from typing import Any

from unibazzar_health.probes import ProbeFailure
from unibazzar_health.probes.redis import CachePerformance
from unibazzar_health.probes.vectordb import CollectionHealth
from unibazzar_health.runbook import CheckContext, Finding, failures_among, gather, runbook_check
from unibazzar_health.settings import Thresholds


# ---- 1. Check vector database connectivity ------------------------------------------------
def observe_vector_database(ctx: CheckContext) -> CollectionHealth:
    from unibazzar_health.probes import vectordb

    target = ctx.vector_db()
    return vectordb.collection_health(target, ctx.env.spec.vector_db.collection)  # type: ignore[union-attr]


@runbook_check("ai.vector-database-connectivity", observe=observe_vector_database)
def test_step1_vector_database_connectivity(observed: CollectionHealth,
                                            thresholds: Thresholds) -> None:
    assert observed.exists, f"vector collection {observed.collection} does not exist"
    assert observed.count > 0, f"vector collection {observed.collection} is empty"
    assert observed.nearest_id == observed.canary_id, (
        f"canary query returned {observed.nearest_id}, expected {observed.canary_id}")
    if observed.query_ms is not None and observed.query_ms > thresholds.vector_query_ms:
        raise Finding(f"canary nearest-neighbour query took {observed.query_ms:.0f} ms "
                      f"> {thresholds.vector_query_ms:.0f} ms", impact="degradation")


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
    bound = False  # CPU- or memory-bound: more replicas would help
    if isinstance(model, ProbeFailure):
        problems.append(f"model endpoint: {model.message}")
    elif model.status != 200 or not (isinstance(model.body, dict) and model.body.get("loaded")):
        problems.append(f"ai-service reports no model loaded (HTTP {model.status}: "
                        f"{str(model.body)[:100]})")
    if isinstance(pods, ProbeFailure):
        problems.append(f"pods: {pods.message}")
    elif not pods.exists:
        problems.append(f"deployment {pods.deployment} does not exist")
    else:
        # Crash loops are every service's scope-and-impact finding; memory is this step's.
        window = thresholds.restart_window_minutes
        for c in pods.containers:
            if (c.last_termination_reason == "OOMKilled"
                    and c.last_terminated_minutes_ago is not None
                    and c.last_terminated_minutes_ago <= window):
                problems.append(f"{c.pod} was OOMKilled {c.last_terminated_minutes_ago:.0f} min "
                                f"ago ({c.restarts} restarts)")
                bound = True
            if c.memory_usage is not None and c.memory_usage >= thresholds.pod_memory_usage:
                problems.append(f"{c.pod} uses {c.memory_usage:.0%} of its memory limit "
                                f"(>= {thresholds.pod_memory_usage:.0%})")
                bound = True
            if c.cpu_usage is not None and c.cpu_usage >= thresholds.pod_cpu_usage:
                problems.append(f"{c.pod} uses {c.cpu_usage:.0%} of its CPU limit "
                                f"({c.cpu_millicores:g}m of {c.cpu_limit_millicores:g}m, "
                                f">= {thresholds.pod_cpu_usage:.0%})")
                bound = True
    if problems:
        # Scaling out is the runbook's fix for a CPU- or memory-bound service: half as many
        # replicas again (one at least) fills in its `kubectl scale`.
        names = ({"replicas": str(pods.desired + max(1, pods.desired // 2))}
                 if bound and not isinstance(pods, ProbeFailure) else {})
        raise Finding("; ".join(problems), impact="degradation",
                      failures=failures_among(model, pods), names=names)


# ---- 3. Verify Redis cache performance ----------------------------------------------------
def observe_ai_cache(ctx: CheckContext) -> CachePerformance:
    from unibazzar_health.probes import redis

    # A slow first round is measured again: our own start-up must not read as a slow Redis.
    return redis.cache_performance(
        ctx.redis("ai-cache"),
        second_round_above_ms=ctx.env.spec.thresholds.redis_latency_p95_ms)


@runbook_check("ai.redis-cache-performance", observe=observe_ai_cache)
def test_step3_redis_cache_performance(observed: CachePerformance,
                                       thresholds: Thresholds) -> None:
    assert observed.ping_p95_ms <= thresholds.redis_latency_p95_ms, (
        f"Redis PING p95 {observed.ping_p95_ms:.1f} ms > {thresholds.redis_latency_p95_ms:g} ms")
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
        "embed_ms": max(first.elapsed_ms, second.elapsed_ms),
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
        f"embedding took {observed['embed_ms']:.0f} ms > {thresholds.embedding_ms:g} ms")


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
            "elapsed_ms": answer.elapsed_ms}


@runbook_check("ai.end-to-end-recommendations", observe=observe_recommendations)
def test_recommendations_for_the_canary_user_within_budget(observed: dict[str, Any],
                                                          thresholds: Thresholds) -> None:
    assert observed["status"] == 200, (
        f"recommendations for the canary user answered HTTP {observed['status']}")
    assert observed["count"], (
        f"recommendations for the canary user {observed['user']} are empty "
        f"({'no recommendations list' if observed['count'] is None else 'none returned'})")
    if observed["elapsed_ms"] > thresholds.recommendations_ms:
        raise Finding(f"recommendations for the canary user took {observed['elapsed_ms']:.0f} "
                      f"ms > {thresholds.recommendations_ms:g} ms", impact="performance-major")


# ---- Symptoms: search returning no results, high latency (end to end) ---------------------
SEARCH_SAMPLES = 5


def observe_search(ctx: CheckContext) -> dict[str, Any]:
    import time
    from urllib.parse import urlencode

    from unibazzar_health.probes import http, percentile

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

    return {
        "query": query,
        "statuses": [a.status for a in answers],
        "result_ids": [ids(a) for a in answers],
        "expect_id": canary.search_expect_id,
        "p95_ms": percentile([a.elapsed_ms for a in answers], 95),
        "samples": len(answers),
    }


@runbook_check("ai.end-to-end-search", observe=observe_search)
def test_search_returns_results_within_budget(observed: dict[str, Any],
                                             thresholds: Thresholds) -> None:
    failing = [s for s in observed["statuses"] if s != 200]
    assert not failing, (f"canary search answered HTTP {failing[0]} "
                         f"({len(failing)} of {observed['samples']} requests)")
    # Every answer judged: the first may be uncached, the next ones from the cache.
    for n, ids in enumerate(observed["result_ids"], 1):
        assert ids, (f"canary search {observed['query']!r} returned no results "
                     f"(search {n} of {observed['samples']})")
        expect = observed["expect_id"]
        assert expect is None or expect in ids, (
            f"canary search {observed['query']!r} did not return {expect}: {ids} "
            f"(search {n} of {observed['samples']})")
    if observed["p95_ms"] > thresholds.search_p95_ms:
        raise Finding(f"canary search p95 {observed['p95_ms']:.0f} ms > "
                      f"{thresholds.search_p95_ms:g} ms over {observed['samples']} requests",
                      impact="performance-major")
