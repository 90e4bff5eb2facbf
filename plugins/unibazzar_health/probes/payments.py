"""The payment provider (Stripe's HTTP API) and our own webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from unibazzar_health.probes import ProbeError, http, status_failure


@dataclass(frozen=True)
class ProviderTarget:
    api_url: str
    api_key: str = field(repr=False)
    deadline: float


@dataclass(frozen=True)
class WebhookEndpoint:
    id: str
    url: str
    status: str
    enabled_events: list[str]


@dataclass(frozen=True)
class ProviderState:
    key_accepted: bool  # False only when the provider says 401/403 to our key
    events_status: int
    endpoints: list[WebhookEndpoint]
    elapsed_ms: float
    endpoints_status: int | None = None  # the webhook endpoint listing's answer


KEY_REFUSED = (401, 403)


def provider_state(target: ProviderTarget) -> ProviderState:
    """Our key against the events API, then our webhook endpoints. Any other error answer
    (5xx, 429) is the provider failing, not our key: it raises."""
    headers = {"Authorization": f"Bearer {target.api_key}"}
    base = target.api_url.rstrip("/")
    url = f"{base}/v1/events?limit=1"
    events = http.request("payments", "GET", url, target.deadline, headers=headers)
    if events.status in KEY_REFUSED:
        return ProviderState(False, events.status, [], events.elapsed_ms)
    if events.status != 200:
        raise _provider_error(target, url, events)
    listed = http.request("payments", "GET", f"{base}/v1/webhook_endpoints?limit=100",
                          target.deadline, headers=headers)
    endpoints: list[WebhookEndpoint] = []
    if listed.status == 200 and isinstance(listed.body, dict):
        endpoints = [WebhookEndpoint(e.get("id", ""), e.get("url", ""), e.get("status", ""),
                                     list(e.get("enabled_events", [])))
                     for e in listed.body.get("data", [])]
    return ProviderState(True, events.status, endpoints, events.elapsed_ms, listed.status)


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def canary_event() -> bytes:
    """An event type no handler acts on: receivers verify and acknowledge it, nothing more."""
    stamp = int(time.time())
    return json.dumps({"id": f"evt_unibazzar_health_canary_{stamp}", "object": "event",
                       "type": "unibazzar.health_check.canary", "created": stamp,
                       "livemode": False, "data": {"object": {}}}).encode()


def deliver(url: str, payload: bytes, signature: str, deadline: float) -> int:
    answer = http.request("order-service", "POST", url, deadline, data=payload,
                          headers={"Content-Type": "application/json",
                                   "Stripe-Signature": signature})
    return answer.status


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    status: str  # succeeded, processing, requires_payment_method, canceled, ...
    amount: int
    currency: str
    created: int  # unix time
    order_id: str | None  # metadata.order_id, as order-service sets it
    # Refunded of its charges, where the answer carries them (API versions before 2022-11-15
    # list them; later ones only when latest_charge is expanded): else 0.
    amount_refunded: int = 0


def _refunded(data: dict[str, Any]) -> int:
    latest = data.get("latest_charge")
    charges = ([latest] if isinstance(latest, dict)
               else (data.get("charges") or {}).get("data") or [])
    return sum(int(c.get("amount_refunded") or 0) for c in charges if isinstance(c, dict))


def _intent(data: dict[str, Any]) -> PaymentIntent:
    return PaymentIntent(
        id=str(data.get("id", "")), status=str(data.get("status", "")),
        amount=int(data.get("amount") or 0), currency=str(data.get("currency", "")),
        created=int(data.get("created") or 0),
        order_id=(data.get("metadata") or {}).get("order_id"), amount_refunded=_refunded(data))


def _provider_error(target: ProviderTarget, url: str, answer: http.HttpAnswer) -> ProbeError:
    body = answer.body if isinstance(answer.body, dict) else {}
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return ProbeError("payments", url,
                      f"HTTP {answer.status}" + (f": {message}" if message else ""),
                      target.deadline, kind=status_failure(answer.status))


def recent_payment_intents(target: ProviderTarget, limit: int = 100) -> list[PaymentIntent]:
    """The provider's newest payment intents (one page, newest first)."""
    url = f"{target.api_url.rstrip('/')}/v1/payment_intents?limit={limit}"
    answer = http.request("payments", "GET", url, target.deadline,
                          headers={"Authorization": f"Bearer {target.api_key}"})
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise _provider_error(target, url, answer)
    return [_intent(d) for d in answer.body.get("data", []) if isinstance(d, dict)]


def payment_intent(target: ProviderTarget, intent_id: str) -> PaymentIntent | None:
    """One payment intent, or None when the provider does not know it."""
    url = f"{target.api_url.rstrip('/')}/v1/payment_intents/{quote(intent_id, safe='')}"
    answer = http.request("payments", "GET", url, target.deadline,
                          headers={"Authorization": f"Bearer {target.api_key}"})
    if answer.status == 404:
        return None
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise _provider_error(target, url, answer)
    return _intent(answer.body)
