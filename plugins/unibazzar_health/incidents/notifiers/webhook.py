"""A generic JSON webhook: every message, its incident and the summary narrowed to it, as
one documented document (docs/notifications.md, schema ``unibazzar-health/notification/v1``),
signed with HMAC-SHA256 when ``secret_env`` names a secret.

The URL carries no secret (the environment file refuses one); the signature is how a
receiver knows the sender. ``X-UniBazzar-Delivery`` is the same on every attempt of one
delivery: a receiver that keeps the ids it saw can drop a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from unibazzar_health.incidents.notifiers.base import (
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    new_session,
    post_json,
)
from unibazzar_health.settings import WebhookNotify

SCHEMA = "unibazzar-health/notification/v1"


class WebhookNotifier:
    name = "webhook"
    kinds = frozenset({"alert", "update", "escalation", "resolved"})
    # Unknown receivers may act twice on a repeat (X-UniBazzar-Delivery lets them drop it,
    # but we cannot count on it).
    idempotent: frozenset[str] = frozenset()
    recoverable: frozenset[str] = frozenset()

    def __init__(self, url: str, secret: str | None, session: Any = None) -> None:
        self._url, self._secret, self._session = url, secret, session

    def __repr__(self) -> str:
        return f"WebhookNotifier(url={self._url!r}, signed={self._secret is not None})"

    def hidden(self) -> list[str]:
        return []

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        if self._session is None:
            self._session = new_session()
        body = json.dumps(document(outgoing), ensure_ascii=False).encode()
        response = post_json(self._session, "POST", self._url, body, budget.timeout(),
                             headers=headers(outgoing, body, self._secret))
        return Receipt(status=response.status_code)


def document(outgoing: Outgoing) -> dict[str, Any]:
    message = outgoing.message
    return {
        "schema": SCHEMA,
        "delivery_id": outgoing.delivery_id,
        "kind": outgoing.kind,
        "environment": outgoing.environment,
        "dedup_key": outgoing.dedup_key,
        "incident": dict(outgoing.incident),
        "message": {"kind": message.kind, "severity": message.severity,
                    "lines": message.lines, "text": message.text,
                    "details": message.details, "markdown": message.markdown()},
        "summary": dict(outgoing.summary),
    }


def headers(outgoing: Outgoing, body: bytes, secret: str | None,
            now: float | None = None) -> dict[str, str]:
    out = {"Content-Type": "application/json; charset=utf-8",
           "User-Agent": "unibazzar-health",
           "X-UniBazzar-Delivery": outgoing.delivery_id,
           "X-UniBazzar-Event": outgoing.kind}
    if secret is not None:
        timestamp = str(int(now if now is not None else time.time()))
        out["X-UniBazzar-Timestamp"] = timestamp
        out["X-UniBazzar-Signature"] = "sha256=" + signature(secret, timestamp, body)
    return out


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``timestamp.body``: the timestamp signed too, so a receiver can
    refuse an old request replayed."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                    hashlib.sha256).hexdigest()


def build(config: WebhookNotify, secret: SecretLookup) -> WebhookNotifier:
    return WebhookNotifier(config.url, secret(config.secret_env) if config.secret_env else None)
