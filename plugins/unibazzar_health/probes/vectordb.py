"""The vector database (Chroma's HTTP API v2) through requests, every call bounded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.probes import (
    DeadlineExceeded,
    ProbeError,
    connection_failure,
    status_failure,
    timed,
)
from unibazzar_health.probes.clock import AnswerWatch, Timing
from unibazzar_health.probes.http import reason


@dataclass(frozen=True)
class VectorTarget:
    url: str
    tenant: str
    database: str
    token: str | None = field(repr=False)
    deadline: float


@dataclass(frozen=True)
class CollectionHealth:
    collection: str
    exists: bool
    count: int = 0
    heartbeat_ms: float = 0.0
    # The canary query until its answer reached this host's network stack (clock.py): the
    # vector database's time, without our own host's stall (our clock's where the kernel
    # could not say).
    query_ms: float | None = None
    canary_id: str | None = None
    nearest_id: str | None = None  # a stored vector's own nearest neighbour: itself
    query_our_clock_ms: float | None = None  # the same query on our own clock


def _call(target: VectorTarget, method: str, path: str, json: Any = None) -> tuple[int, Any]:
    status, body, _ = _timed_call(target, method, path, json)
    return status, body


def _timed_call(target: VectorTarget, method: str, path: str,
                json: Any = None) -> tuple[int, Any, Timing]:
    import requests

    url = target.url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    watch = AnswerWatch()  # when the answer arrived, as the kernel saw it
    try:
        started = time.perf_counter_ns()
        response = requests.request(method, url, json=json, headers=headers,
                                    timeout=(target.deadline, target.deadline),
                                    hooks=watch.hooks)
        timing = watch.timing(time.perf_counter_ns() - started)
    except requests.Timeout:
        raise DeadlineExceeded("vector-db", target.url, target.deadline) from None
    except requests.RequestException as exc:
        raise ProbeError("vector-db", target.url, reason(exc), target.deadline,
                         kind=connection_failure(exc)) from None
    finally:
        watch.close()
    try:
        return response.status_code, response.json(), timing
    except ValueError:
        return response.status_code, response.text[:200], timing


def _ok(target: VectorTarget, status: int, body: Any, doing: str) -> Any:
    if status >= 400:
        message = body.get("message") if isinstance(body, dict) else body
        raise ProbeError("vector-db", target.url, f"{doing}: HTTP {status} {message}",
                         target.deadline, kind=status_failure(status))
    return body


def heartbeat(target: VectorTarget) -> float:
    """Milliseconds for the server's heartbeat."""
    with timed() as t:
        _ok(target, *_call(target, "GET", "/api/v2/heartbeat"), "heartbeat")
    return t.ms


def has_ids(target: VectorTarget, collection: str, ids: list[str]) -> list[str]:
    """Which of ``ids`` the collection holds."""
    base = f"/api/v2/tenants/{target.tenant}/databases/{target.database}/collections"
    collection_id = _ok(target, *_call(target, "GET", f"{base}/{collection}"),
                        "get collection")["id"]
    found = _ok(target, *_call(target, "POST", f"{base}/{collection_id}/get",
                               {"ids": ids, "include": []}), "get by id")
    return [str(i) for i in found.get("ids", [])]


def collection_health(target: VectorTarget, collection: str) -> CollectionHealth:
    base = f"/api/v2/tenants/{target.tenant}/databases/{target.database}/collections"
    with timed() as t:
        _ok(target, *_call(target, "GET", "/api/v2/heartbeat"), "heartbeat")
    heartbeat_ms = t.ms
    status, body = _call(target, "GET", f"{base}/{collection}")
    if status == 404:
        return CollectionHealth(collection, False, heartbeat_ms=heartbeat_ms)
    collection_id = _ok(target, status, body, "get collection")["id"]
    count = int(_ok(target, *_call(target, "GET", f"{base}/{collection_id}/count"), "count"))
    if count == 0:
        return CollectionHealth(collection, True, 0, heartbeat_ms)
    sample = _ok(target, *_call(target, "POST", f"{base}/{collection_id}/get",
                                {"limit": 1, "include": ["embeddings"]}), "get one item")
    canary_id, vector = sample["ids"][0], sample["embeddings"][0]
    status, body, timing = _timed_call(target, "POST", f"{base}/{collection_id}/query",
                                       {"query_embeddings": [vector], "n_results": 1,
                                        "include": ["distances"]})
    answer = _ok(target, status, body, "query")
    nearest = answer["ids"][0][0] if answer.get("ids") and answer["ids"][0] else None
    return CollectionHealth(collection, True, count, heartbeat_ms, timing.judged_ms, canary_id,
                            nearest, query_our_clock_ms=timing.ms)
