"""order-service: sagas on PostgreSQL, payment webhooks signed by the provider."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import psycopg
from flask import request

from unibazzar_sandbox.layout import HOST, PORTS
from unibazzar_sandbox.services.common import app_for, make_logger, run, secret

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


@app.post("/webhooks/stripe")
def stripe_webhook() -> Any:
    payload = request.get_data()
    if not signature_valid(payload, request.headers.get("Stripe-Signature", ""),
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


if __name__ == "__main__":
    run(app, SERVICE)
