"""ai-service: embeddings from the stand-in model, searches answered by the vector
database through a Redis cache, recommendations for a user from the vector database."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import redis
import requests
from flask import request

from unibazzar_sandbox.layout import HOST, PORTS
from unibazzar_sandbox.seed import VECTOR_COLLECTION
from unibazzar_sandbox.services.common import app_for, layout, make_logger, run, secret
from unibazzar_sandbox.vectors import DIMENSION, MODEL_NAME, embed

SERVICE = "ai-service"
CHROMA = (f"http://{HOST}:{PORTS['vector-db']}/api/v2/tenants/default_tenant/"
          "databases/default_database/collections")
log = make_logger(SERVICE)
app = app_for(SERVICE)
cache = redis.Redis(host=HOST, port=PORTS["redis"], db=1,
                    password=secret("UNIBAZZAR_REDIS_PASSWORD"),
                    socket_connect_timeout=2, socket_timeout=2)


def _fault(name: str) -> bool:
    """faults/ai-service.model-not-loaded: the model failed to load (/model says so, /embed
    answers 503); faults/ai-service.wrong-embedding-dimension: /embed answers vectors of
    half the model's dimension (a model swapped under the index)."""
    return (layout().faults / f"ai-service.{name}").exists()


@app.get("/model")
def model() -> Any:
    return {"loaded": not _fault("model-not-loaded"), "model": MODEL_NAME,
            "dimension": DIMENSION}


@app.post("/embed")
def embed_text() -> Any:
    text = str((request.get_json(silent=True) or {}).get("text", ""))
    if not text:
        return {"error": "text is required"}, 400
    if _fault("model-not-loaded"):
        log.error("embedding failed: model %s not loaded", MODEL_NAME)
        return {"error": "model not loaded"}, 503
    vector = embed(text)
    if _fault("wrong-embedding-dimension"):
        vector = vector[: DIMENSION // 2]
    return {"model": MODEL_NAME, "dimension": DIMENSION, "embedding": vector}


@app.get("/search")
def search() -> Any:
    query = request.args.get("q", "")
    key = "search:" + hashlib.sha256(query.encode()).hexdigest()
    try:
        cached = cache.get(key)
        if cached:
            return {"results": json.loads(cached), "cached": True}
    except redis.RedisError as exc:
        log.error("cache read failed: %s", type(exc).__name__)
    try:
        collection = requests.get(f"{CHROMA}/{VECTOR_COLLECTION}", timeout=2).json()["id"]
        answer = requests.post(f"{CHROMA}/{collection}/query", timeout=2, json={
            "query_embeddings": [embed(query)], "n_results": 3}).json()
    except (requests.RequestException, KeyError, ValueError) as exc:
        log.error("vector search failed: %s", type(exc).__name__)
        return {"error": "vector database unavailable"}, 503
    results = [{"id": i, "distance": d} for i, d in zip(answer["ids"][0], answer["distances"][0],
                                                        strict=True)]
    try:
        cache.setex(key, 60, json.dumps(results))
    except redis.RedisError as exc:
        log.error("cache write failed: %s", type(exc).__name__)
    return {"results": results, "cached": False}


@app.get("/recommendations")
def recommendations() -> Any:
    """The listings nearest a user's taste (the stand-in's: the embedding of their address).
    Faults: faults/ai-service.recommendations-empty (the model answers nothing) and
    faults/ai-service.recommendations-slow (seconds in the file, default 1.5)."""
    faults = layout().faults
    slow = faults / "ai-service.recommendations-slow"
    if slow.exists():
        time.sleep(float(slow.read_text().strip() or 1.5))
    user = request.args.get("user", "")
    if not user:
        return {"error": "user is required"}, 400
    if (faults / "ai-service.recommendations-empty").exists():
        log.warning("no recommendations for a user: the model returned nothing")
        return {"user": user, "recommendations": []}
    try:
        collection = requests.get(f"{CHROMA}/{VECTOR_COLLECTION}", timeout=2).json()["id"]
        answer = requests.post(f"{CHROMA}/{collection}/query", timeout=2, json={
            "query_embeddings": [embed(user)], "n_results": 3}).json()
    except (requests.RequestException, KeyError, ValueError) as exc:
        log.error("recommendations failed: %s", type(exc).__name__)
        return {"error": "vector database unavailable"}, 503
    items = [{"listing_id": i, "score": round(1 - d, 4)}
             for i, d in zip(answer["ids"][0], answer["distances"][0], strict=True)]
    return {"user": user, "recommendations": items}


if __name__ == "__main__":
    run(app, SERVICE)
