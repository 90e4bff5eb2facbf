"""PagerDuty Events API v2: the alert triggers, the resolution resolves, both under one
``dedup_key`` per incident key and environment, so a trigger sent twice (two runners, a
resend after a crash) is one PagerDuty incident. An update whose severity changed triggers
again under the same key with the new severity; other updates and escalations stay in the
chat and the ticket: PagerDuty runs its own escalation policy once paged.
"""

from __future__ import annotations

from typing import Any

from unibazzar_health.incidents.notifiers.base import (
    DeliveryError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    new_session,
    post_json,
)
from unibazzar_health.incidents.state import SEVERITY_CHANGE
from unibazzar_health.settings import PagerDutyNotify

SEVERITIES = {"SEV1": "critical", "SEV2": "error", "SEV3": "warning", "SEV4": "info"}
SUMMARY_LIMIT = 1024  # characters of payload.summary (the Events API's limit)


class PagerDutyNotifier:
    name = "pagerduty"
    kinds = frozenset({"alert", SEVERITY_CHANGE, "resolved"})
    idempotent = frozenset({"alert", "update", "resolved"})  # deduplicated by dedup_key
    recoverable: frozenset[str] = frozenset()

    def __init__(self, routing_key: str, api_url: str, session: Any = None) -> None:
        self._routing_key, self._api_url = routing_key, api_url
        self._session = session

    def __repr__(self) -> str:
        return f"PagerDutyNotifier(api_url={self._api_url!r}, routing_key=***)"

    def hidden(self) -> list[str]:
        return []

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        if self._session is None:
            self._session = new_session()
        response = post_json(self._session, "POST", self._api_url, event(outgoing,
                                                                         self._routing_key),
                             budget.timeout())
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            raise DeliveryError("the Events API answered something that is not JSON",
                                retryable=False)
        return Receipt(status=response.status_code,
                       detail={"dedup_key": answer.get("dedup_key", outgoing.dedup_key)})


def event(outgoing: Outgoing, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body: trigger for the alert and for an update whose severity
    changed (the same dedup_key: the same PagerDuty incident, its severity now the new one),
    resolve for the resolution."""
    if outgoing.kind == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve",
                "dedup_key": outgoing.dedup_key}
    incident = outgoing.incident
    message = outgoing.message
    summary = f"{message.lines[0]}: {incident['title']} ({outgoing.environment})"
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": outgoing.dedup_key,
        "payload": {
            "summary": summary[:SUMMARY_LIMIT],
            "source": f"unibazzar-health/{outgoing.environment}",
            "severity": SEVERITIES.get(str(incident.get("severity")), "error"),
            "timestamp": incident.get("first_failure_at"),
            "component": ", ".join(incident.get("services", [])),
            "group": outgoing.environment,
            "class": incident["key"],
            "custom_details": {"message": message.lines, "checks": incident.get("checks", []),
                               "first_failure_at": incident.get("first_failure_at")},
        },
        "client": "UniBazzar health checks",
    }
    report = incident.get("report_url")
    if report:
        body["client_url"] = report
        body["links"] = [{"href": report, "text": "Health check report"}]
    return body


def build(config: PagerDutyNotify, secret: SecretLookup) -> PagerDutyNotifier:
    return PagerDutyNotifier(secret(config.routing_key_env), config.api_url)
