"""A generic JSON webhook: every message, its incident and the summary narrowed to it, as
one documented document (docs/notifications.md, schema ``unibazzar-health/notification/v1``),
signed with HMAC-SHA256 when ``secret_env`` names a secret.

The URL carries no secret (the environment file refuses one); the signature is how a
receiver knows the sender. ``X-UniBazzar-Delivery`` is the same on every attempt of one
delivery: a receiver that keeps the ids it saw can drop a repeat.

A document is at most ``max_bytes`` (default 256 KB): past it, the evidence is cut first,
then the pods' context and the probe failures, then the summary itself, and ``truncated``
says what went (the report, linked, has it all).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from unibazzar_health.config.fields import EnvVar, HttpUrl, _Section
from unibazzar_health.incidents.notifiers.base import (
    EVIDENCE_CHARS,
    DeliveryError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    fit_lines,
    http_status_error,
    new_session,
    post_json,
)
from unibazzar_health.incidents.state import KINDS
from unibazzar_health.verdict.model import Check, carried_summary

SCHEMA = "unibazzar-health/notification/v1"


class WebhookNotifier:
    name = "webhook"
    kinds = frozenset(KINDS)
    # Unknown receivers may act twice on a repeat (X-UniBazzar-Delivery lets them drop it,
    # but we cannot count on it).
    idempotent: frozenset[str] = frozenset()
    recoverable: frozenset[str] = frozenset()
    cancelled_by_resolution: frozenset[str] = frozenset()
    threaded = False

    def __init__(self, url: str, secret: str | None, session: Any = None,
                 max_bytes: int = 256 * 1024) -> None:
        self._url, self._secret, self._session = url, secret, session
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"WebhookNotifier(url={self._url!r}, signed={self._secret is not None})"

    def hidden(self) -> list[str]:
        return []

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        body = encoded(outgoing, self.max_bytes)
        return self._post(body, headers(outgoing.delivery_id, outgoing.kind, body,
                                        self._secret), budget)

    def test(self, budget: RequestBudget) -> list[str]:
        test_id = f"test-{uuid.uuid4().hex[:12]}"
        body = json.dumps({"schema": SCHEMA, "delivery_id": test_id, "kind": "test",
                           "text": "TEST — unibazzar-health notification test: no incident"},
                          ensure_ascii=False).encode()
        receipt = self._post(body, headers(test_id, "test", body, self._secret), budget)
        return [f"HTTP {receipt.status}: delivery {test_id} accepted"]

    def _post(self, body: bytes, sent_headers: dict[str, str], budget: RequestBudget
              ) -> Receipt:
        if self._session is None:
            self._session = new_session()
        response = post_json(self._session, "POST", self._url, body, budget.timeout(),
                             headers=sent_headers, classify=self._refused)
        return Receipt(status=response.status_code)

    def _refused(self, response: Any) -> DeliveryError:
        setting = "[notify.webhook] url" + (" and secret_env" if self._secret else "")
        return http_status_error(response.status_code, response.text, response.headers,
                                 credentials=setting, revoked=(404, 410))


def encoded(outgoing: Outgoing, max_bytes: int) -> bytes:
    """The document as sent, within ``max_bytes``: each step cuts more, and ``truncated``
    names what it cut."""
    steps: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("evidence cut to 1,000 characters", _cut_evidence),
        ("pod context and probe failures dropped", _drop_context),
        ("the summary's checks reduced to id, outcome and severity", _bare_checks),
        ("details cut", _cut_details),
    ]
    data = document(outgoing)
    body = json.dumps(data, ensure_ascii=False).encode()
    cut: list[str] = []
    for what, step in steps:
        if len(body) <= max_bytes:
            break
        step(data)
        cut.append(what)
        data["truncated"] = {"cut": list(cut), "max_bytes": max_bytes,
                             "report_url": outgoing.incident.get("report_url")}
        body = json.dumps(data, ensure_ascii=False).encode()
    return body


def _each_check(data: dict[str, Any], change: Callable[[Check], Check]) -> None:
    """The document's summary with each of its checks changed (read through its model and
    written back as it was given, the changes included)."""
    summary = carried_summary(data["summary"])
    if summary is not None:
        data["summary"] = summary.model_copy(
            update={"checks": [change(c) for c in summary.checks]}).to_dict()


def _cut_evidence(data: dict[str, Any]) -> None:
    def cut(check: Check) -> Check:
        message = check.message or ""
        update: dict[str, Any] = {}
        if len(message) > EVIDENCE_CHARS:
            update["message"] = message[:EVIDENCE_CHARS - 1] + "…"
        if len(json.dumps(check.evidence, default=str)) > EVIDENCE_CHARS:
            update["evidence"] = None
        return check.model_copy(update=update)

    _each_check(data, cut)
    data["message"]["details"] = fit_lines(data["message"]["details"], 32 * 1024)
    data["message"]["markdown"] = None


def _drop_context(data: dict[str, Any]) -> None:
    _each_check(data, lambda c: c.model_copy(update={"context": None, "failures": [],
                                                      "evidence": None}))


def _bare_checks(data: dict[str, Any]) -> None:
    _each_check(data, lambda c: Check(id=c.id, service=c.service, outcome=c.outcome,
                                      severity=c.severity))


def _cut_details(data: dict[str, Any]) -> None:
    data["message"]["details"] = fit_lines(data["message"]["details"], 4 * 1024)
    data["message"]["lines"] = [line[:1000] for line in data["message"]["lines"]]
    data["message"]["text"] = "\n".join(data["message"]["lines"])


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


def headers(delivery_id: str, kind: str, body: bytes, secret: str | None,
            now: float | None = None) -> dict[str, str]:
    out = {"Content-Type": "application/json; charset=utf-8",
           "User-Agent": "unibazzar-health",
           "X-UniBazzar-Delivery": delivery_id,
           "X-UniBazzar-Event": kind}
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


class WebhookNotify(_Section):
    """[notify.webhook]: any receiver of the notification document (SCHEMA)."""

    url: HttpUrl  # carries no secret (refused with one); sign with secret_env instead
    secret_env: EnvVar | None = None  # HMAC-SHA256 of each body, X-UniBazzar-Signature
    # The largest document sent: a receiver behind a proxy refuses bigger bodies (413).
    max_bytes: Annotated[int, Field(ge=16 * 1024)] = 256 * 1024


SETTINGS = WebhookNotify


def build(config: WebhookNotify, secret: SecretLookup) -> WebhookNotifier:
    return WebhookNotifier(config.url, secret(config.secret_env) if config.secret_env else None,
                           max_bytes=config.max_bytes)


# What a notifier of this module takes, without building one (a command that only
# enqueues needs no secret).
NOTIFIER = WebhookNotifier
