"""listing-service: listings in DynamoDB, images in S3, events to RabbitMQ, a Redis cache,
and the search indexer consuming those events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from typing import Any

import boto3
import pika
import redis
import requests
from botocore.config import Config
from flask import request
from redis.backoff import NoBackoff
from redis.retry import Retry

from unibazzar_sandbox.layout import HOST, PORTS
from unibazzar_sandbox.seed import (
    EVENTS_EXCHANGE,
    EVENTS_QUEUE,
    IMAGES_BUCKET,
    LISTINGS_TABLE,
    VECTOR_COLLECTION,
)
from unibazzar_sandbox.services.common import app_for, layout, make_logger, run, secret
from unibazzar_sandbox.vectors import embed

SERVICE = "listing-service"
CACHE_TTL_S = 60
log = make_logger(SERVICE)
app = app_for(SERVICE)
_aws_config = Config(connect_timeout=2, read_timeout=2,
                     retries={"mode": "standard", "total_max_attempts": 1})


def _aws(name: str) -> Any:
    return boto3.client(name, endpoint_url=f"http://{HOST}:{PORTS['moto']}",
                        region_name="eu-west-1", config=_aws_config)


dynamodb, s3 = _aws("dynamodb"), _aws("s3")
# A cache must never slow the service down: one attempt, no retries with backoff.
cache = redis.Redis(host=HOST, port=PORTS["redis"], db=0,
                    password=secret("UNIBAZZAR_REDIS_PASSWORD"),
                    socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def _rabbit_params() -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=HOST, port=PORTS["rabbitmq"], socket_timeout=2, stack_timeout=3,
        connection_attempts=1,
        credentials=pika.PlainCredentials("unibazzar", secret("UNIBAZZAR_RABBITMQ_PASSWORD")))


def _item(listing: dict[str, Any]) -> dict[str, Any]:
    return {k: ({"N": str(v)} if isinstance(v, int) else {"S": str(v)}) for k, v in listing.items()}


@app.get("/listings/newest")
def newest_listings() -> Any:
    """The newest listings first, their ids and creation times (the "new in" feed); a
    stand-in's table is small enough to scan."""
    limit = max(1, min(int(request.args.get("limit", "10")), 100))
    try:
        items: list[dict[str, Any]] = []
        for page in dynamodb.get_paginator("scan").paginate(
                TableName=LISTINGS_TABLE, ProjectionExpression="listing_id, created_at"):
            items += page.get("Items", [])
    except Exception as exc:
        log.error("listing read failed: %s", type(exc).__name__)
        return {"error": "listing store unavailable"}, 503
    listings = sorted(({"listing_id": i["listing_id"]["S"],
                        "created_at": i.get("created_at", {}).get("S", "")} for i in items),
                      key=lambda listing: listing["created_at"], reverse=True)
    return {"listings": listings[:limit]}


@app.get("/listings/<listing_id>")
def get_listing(listing_id: str) -> Any:
    key = f"listing:{listing_id}"
    try:
        cached = cache.get(key)
        if cached:
            return {"listing": json.loads(cached), "source": "cache"}
    except redis.RedisError as exc:
        log.error("cache read failed: %s", type(exc).__name__)
    try:
        item = dynamodb.get_item(TableName=LISTINGS_TABLE, Key={"listing_id": {"S": listing_id}})
    except Exception as exc:
        log.error("listing read failed: %s", type(exc).__name__)
        return {"error": "listing store unavailable"}, 503
    if "Item" not in item:
        return {"error": "not found"}, 404
    listing = {k: next(iter(v.values())) for k, v in item["Item"].items()}
    try:
        cache.setex(key, CACHE_TTL_S, json.dumps(listing))
    except redis.RedisError as exc:
        log.error("cache write failed: %s", type(exc).__name__)
    return {"listing": listing, "source": "dynamodb"}


@app.post("/listings")
def create_listing() -> Any:
    body = request.get_json(silent=True) or {}
    listing = {"listing_id": f"listing-{uuid.uuid4().hex[:12]}",
               "category": str(body.get("category", "misc")),
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "title": str(body.get("title", "untitled")),
               "price_cents": int(body.get("price_cents", 0))}
    try:
        dynamodb.put_item(TableName=LISTINGS_TABLE, Item=_item(listing))
        s3.put_object(Bucket=IMAGES_BUCKET, Key=f"listings/{listing['listing_id']}/cover.txt",
                      Body=b"image")
        _publish("listing.created", listing)
    except Exception as exc:
        log.error("listing creation failed: %s", type(exc).__name__)
        # Undone, as the real service's compensation does: a listing it answered 503 for
        # (its id never returned) must not stay in the table, unindexed and unowned.
        with contextlib.suppress(Exception):
            dynamodb.delete_item(TableName=LISTINGS_TABLE,
                                 Key={"listing_id": {"S": listing["listing_id"]}})
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=IMAGES_BUCKET,
                             Key=f"listings/{listing['listing_id']}/cover.txt")
        return {"error": "listing creation failed"}, 503
    log.info("listing created %s", listing["listing_id"])
    return {"listing": listing}, 201


def _publish(routing_key: str, event: dict[str, Any]) -> None:
    connection = pika.BlockingConnection(_rabbit_params())
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        # Stamped, so the queue's oldest waiting event has an age (head_message_timestamp).
        channel.basic_publish(EVENTS_EXCHANGE, routing_key, json.dumps(event).encode(),
                              pika.BasicProperties(timestamp=int(time.time()),
                                                   content_type="application/json"))
    finally:
        connection.close()


@app.delete("/listings/<listing_id>")
def delete_listing(listing_id: str) -> Any:
    try:
        dynamodb.delete_item(TableName=LISTINGS_TABLE, Key={"listing_id": {"S": listing_id}})
        s3.delete_object(Bucket=IMAGES_BUCKET, Key=f"listings/{listing_id}/cover.txt")
        _publish("listing.deleted", {"listing_id": listing_id})
    except Exception as exc:
        log.error("listing deletion failed: %s", type(exc).__name__)
        return {"error": "listing deletion failed"}, 503
    try:
        cache.delete(f"listing:{listing_id}")
    except redis.RedisError as exc:
        log.error("cache delete failed: %s", type(exc).__name__)
    log.info("listing deleted %s", listing_id)
    return {"deleted": listing_id}


# ---- the search indexer: listing events into the vector database -------------------------
CHROMA = (f"http://{HOST}:{PORTS['vector-db']}/api/v2/tenants/default_tenant/"
          "databases/default_database/collections")


def _collection() -> str:
    return str(requests.get(f"{CHROMA}/{VECTOR_COLLECTION}", timeout=2).json()["id"])


def _index(routing_key: str, event: dict[str, Any]) -> None:
    listing_id = str(event.get("listing_id", ""))
    if routing_key == "listing.created":
        # Only if it still exists: a deletion may have overtaken its creation.
        if "Item" not in dynamodb.get_item(TableName=LISTINGS_TABLE,
                                           Key={"listing_id": {"S": listing_id}}):
            return
        title = str(event.get("title", ""))
        requests.post(f"{CHROMA}/{_collection()}/upsert", timeout=2, json={
            "ids": [listing_id], "embeddings": [embed(title)], "documents": [title],
            "metadatas": [{"category": str(event.get("category", ""))}]}).raise_for_status()
    elif routing_key == "listing.deleted":
        requests.post(f"{CHROMA}/{_collection()}/delete", timeout=2,
                      json={"ids": [listing_id]}).raise_for_status()


def _indexer_fault(name: str) -> bool:
    return (layout().faults / f"listing-service.{name}").exists()


def _indexer_paused() -> bool:
    """The indexer takes no event while it stays subscribed (a stuck consumer):
    faults/listing-service.indexer-paused, faults/listing-service.indexer-stuck (the game
    day that also fills the queue) or faults/listing-service.indexer-reindexing (the one
    that empties the vector collection, as a reindex would)."""
    return any(_indexer_fault(name)
               for name in ("indexer-paused", "indexer-stuck", "indexer-reindexing"))


def _indexer_stopped() -> bool:
    """faults/listing-service.indexer-stopped: the indexer cancels its subscription (the
    queue has no consumer) until the file is gone."""
    return _indexer_fault("indexer-stopped")


def search_indexer() -> None:
    """Consumes listing events into the vector database, as the search indexer does."""
    while True:
        if _indexer_stopped():
            time.sleep(0.2)
            continue
        connection = None
        try:
            connection = pika.BlockingConnection(_rabbit_params())
            channel = connection.channel()
            channel.basic_qos(prefetch_count=10)
            for method, _, body in channel.consume(EVENTS_QUEUE, inactivity_timeout=0.2):
                while _indexer_paused() and not _indexer_stopped():
                    connection.sleep(0.2)
                if _indexer_stopped():
                    # Closing the connection hands back what it had not acknowledged.
                    log.warning("search indexer stopped consuming %s", EVENTS_QUEUE)
                    break
                if method is None:
                    continue
                try:
                    _index(method.routing_key, json.loads(body or b"{}"))
                except Exception as exc:
                    log.error("indexing %s failed: %s", method.routing_key, type(exc).__name__)
                channel.basic_ack(method.delivery_tag)
                log.info("indexed event %s", method.routing_key)
        except Exception as exc:
            log.error("search indexer lost RabbitMQ: %s", type(exc).__name__)
            time.sleep(1)
        finally:
            if connection is not None and connection.is_open:
                with contextlib.suppress(Exception):  # already going: nothing to hand back
                    connection.close()


if __name__ == "__main__":
    threading.Thread(target=search_indexer, name="search-indexer", daemon=True).start()
    run(app, SERVICE)
