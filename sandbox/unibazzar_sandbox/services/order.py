"""order-service: sagas on PostgreSQL, payment webhooks signed by the provider."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
import psycopg
import requests
from flask import request

from unibazzar_sandbox.layout import HOST, PORTS
from unibazzar_sandbox.services.common import app_for, layout, make_logger, run, secret

SERVICE = "order-service"
TOLERANCE_S = 300
log = make_logger(SERVICE)
app = app_for(SERVICE)
DSN = f"host={HOST} port={PORTS['postgresql']} dbname=orders user=order_service connect_timeout=2"


def signature_valid(payload: bytes, header: str, key: str) -> bool:
    """Stripe's scheme: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(time.time() - timestamp) > TOLERANCE_S:
        return False
    expected = hmac.new(key.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))


def verifies_signatures() -> bool:
    """faults/order-service.webhook-signatures-unchecked: the receiver takes every event as
    it comes (a verification switched off to debug, and left off)."""
    return not (layout().faults / "order-service.webhook-signatures-unchecked").exists()


@app.post("/webhooks/stripe")
def stripe_webhook() -> Any:
    payload = request.get_data()
    if verifies_signatures() and not signature_valid(
            payload, request.headers.get("Stripe-Signature", ""),
            secret("UNIBAZZAR_STRIPE_WEBHOOK_SECRET")):
        log.warning("webhook rejected: bad signature")
        return {"error": "bad signature"}, 400
    event = json.loads(payload or b"{}")
    kind = event.get("type", "")
    if kind == "payment_intent.succeeded":
        intent = event.get("data", {}).get("object", {}).get("id")
        try:
            with psycopg.connect(DSN, password=secret("UNIBAZZAR_ORDER_DB_PASSWORD")) as conn:
                conn.execute("UPDATE orders SET status = 'paid', updated_at = now() "
                             "WHERE payment_intent_id = %s", (intent,))
                conn.execute("UPDATE sagas SET state = 'completed', step = 'done', "
                             "updated_at = now() WHERE order_id IN (SELECT id FROM orders "
                             "WHERE payment_intent_id = %s)", (intent,))
        except psycopg.Error as exc:
            log.error("saga update failed: %s", type(exc).__name__)
            return {"error": "database unavailable"}, 503
    log.info("webhook accepted: %s", kind)
    return {"received": True}


# ---- its admin API: retry a saga's failed step -------------------------------------------
@app.post("/admin/sagas/<saga_id>/retry")
def retry_saga(saga_id: str) -> Any:
    """The step runs again: a saga that failed (or is stuck) waits for its step anew, from
    now; a completed or compensated one is left alone (409)."""
    try:
        with psycopg.connect(DSN, password=secret("UNIBAZZAR_ORDER_DB_PASSWORD")) as conn:
            row = conn.execute("SELECT state, step FROM sagas WHERE id = %s",
                               (saga_id,)).fetchone()
            if row is None:
                return {"error": "no such saga"}, 404
            if row[0] in ("completed", "compensated"):
                return {"error": f"saga is {row[0]}"}, 409
            conn.execute("UPDATE sagas SET state = CASE WHEN state = 'failed' THEN "
                         "'awaiting_payment' ELSE state END, updated_at = now() WHERE id = %s",
                         (saga_id,))
    except psycopg.Error as exc:
        log.error("saga retry failed: %s", type(exc).__name__)
        return {"error": "database unavailable"}, 503
    log.info("saga %s: retrying step %s", saga_id, row[1])
    return {"saga": saga_id, "retried": row[1]}, 202


# ---- its own view of its downstream dependencies (a "deep health" endpoint) --------------
def _http_ok(url: str, **kwargs: Any) -> None:
    requests.get(url, timeout=(1, 1), **kwargs).raise_for_status()


def _broker_ok() -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        host=HOST, port=PORTS["rabbitmq"], socket_timeout=1, stack_timeout=1,
        connection_attempts=1, credentials=pika.PlainCredentials(
            "unibazzar", secret("UNIBAZZAR_RABBITMQ_PASSWORD"))))
    connection.close()


DOWNSTREAM = {
    "auth-service": lambda: _http_ok(f"http://{HOST}:{PORTS['auth-service']}/health"),
    "listing-service": lambda: _http_ok(f"http://{HOST}:{PORTS['listing-service']}/health"),
    "payments": lambda: _http_ok(f"http://{HOST}:{PORTS['payments']}/v1/events?limit=1",
                                 auth=(secret("UNIBAZZAR_STRIPE_API_KEY"), "")),
    "rabbitmq": _broker_ok,
}


def _partitioned() -> set[str]:
    """Downstream names listed in faults/order-service.partitioned: a network partition
    between order-service and them (the dependency itself stays up for everyone else)."""
    path = layout().faults / "order-service.partitioned"
    return set(path.read_text().split()) if path.exists() else set()


@app.get("/health/dependencies")
def dependencies() -> Any:
    partitioned = _partitioned()

    def probe(name: str, call: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            if name in partitioned:
                raise ConnectionRefusedError(name)
            call()
        except Exception as exc:
            return {"ok": False, "error": type(exc).__name__}
        return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}

    with ThreadPoolExecutor(len(DOWNSTREAM)) as pool:
        futures = {name: pool.submit(probe, name, call) for name, call in DOWNSTREAM.items()}
    return {name: future.result() for name, future in futures.items()}


if __name__ == "__main__":
    run(app, SERVICE)
