"""PagerDuty Events API v2: the alert triggers, the resolution resolves, both under one
``dedup_key`` per occurrence of an incident (its id), the same from every runner, so a
trigger sent twice (two runners, a resend after a crash) is one PagerDuty alert, and the
next occurrence of the same cause is a new one (an acknowledged leftover never swallows
it). An update whose severity changed triggers again under the same key with the new
severity; other updates and escalations stay in the chat and the ticket: PagerDuty runs its
own escalation policy once paged. A trigger still unsent when its occurrence resolves is
superseded (``cancelled_by_resolution``): sent after the resolve, it would open an alert
that nothing closes.

Limits (the Events API's): ``routing_key`` 32 characters, ``payload.summary`` ≤ 1,024,
the whole event ≤ 512 KB.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from unibazzar_health.config.fields import EnvVar, HttpUrl, _Section
from unibazzar_health.incidents.notifiers.base import (
    ConfigError,
    DeliveryError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    http_status_error,
    new_session,
    post_json,
)
from unibazzar_health.incidents.state import ACKNOWLEDGED, SEVERITY_CHANGE
from unibazzar_health.verdict.severity import SEVERITY_TABLE

SUMMARY_LIMIT = 1024  # characters of payload.summary (the Events API's limit)
EVENT_LIMIT = 512 * 1024  # bytes of a whole event
ROUTING_KEY = re.compile(r"[A-Za-z0-9]{32}")  # an integration's routing key
# PagerDuty's 429 carries no Retry-After; its limits are per minute.
RATE_LIMIT_WAIT_S = 30.0


class PagerDutyNotifier:
    name = "pagerduty"
    kinds = frozenset({"alert", SEVERITY_CHANGE, "resolved", ACKNOWLEDGED})
    # Deduplicated by dedup_key.
    idempotent = frozenset({"alert", "update", "resolved", ACKNOWLEDGED})
    recoverable: frozenset[str] = frozenset()
    cancelled_by_resolution = frozenset({"alert", "update", ACKNOWLEDGED})
    threaded = False

    def __init__(self, routing_key: str, api_url: str, session: Any = None,
                 setting: str = "[notify.pagerduty] routing_key_env") -> None:
        self._routing_key, self._api_url = routing_key, api_url
        self._session, self._setting = session, setting

    def __repr__(self) -> str:
        return f"PagerDutyNotifier(api_url={self._api_url!r}, routing_key=***)"

    def hidden(self) -> list[str]:
        return []

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        return self._enqueue(event(outgoing, self._routing_key), budget)

    def test(self, budget: RequestBudget) -> list[str]:
        """A test alert (severity info, marked TEST), resolved at once."""
        key = f"unibazzar-health-test-{uuid.uuid4().hex[:12]}"
        trigger = {"routing_key": self._routing_key, "event_action": "trigger",
                   "dedup_key": key, "client": "UniBazzar health checks",
                   "payload": {"summary": "TEST — unibazzar-health notification test: no "
                                          "incident (resolved at once)",
                               "source": "unibazzar-health/notify-test", "severity": "info"}}
        first = self._enqueue(trigger, budget)
        second = self._enqueue({"routing_key": self._routing_key, "event_action": "resolve",
                                "dedup_key": key}, budget)
        return [f"trigger: HTTP {first.status} (dedup_key {key})",
                f"resolve: HTTP {second.status}"]

    def _enqueue(self, body: dict[str, Any], budget: RequestBudget) -> Receipt:
        if self._session is None:
            self._session = new_session()
        response = post_json(self._session, "POST", self._api_url, body, budget.timeout(),
                             classify=self._refused)
        try:
            answer = response.json()
        except ValueError:  # a 2xx is accepted, whatever its body
            answer = None
        dedup = answer.get("dedup_key") if isinstance(answer, dict) else None
        return Receipt(status=response.status_code,
                       detail={"dedup_key": dedup or body.get("dedup_key")})

    def _refused(self, response: Any) -> DeliveryError:
        """400 is an invalid event, never accepted as sent; one that names the routing key
        is our setting's fault."""
        error = http_status_error(response.status_code, response.text, response.headers,
                                  credentials=self._setting)
        if response.status_code == 429 and error.retry_after is None:
            error.retry_after = RATE_LIMIT_WAIT_S
        if response.status_code == 400 and "routing" in error.reason.lower():
            error.fix = f"PagerDuty refused the routing key: check {self._setting}"
        return error


def event(outgoing: Outgoing, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body: trigger for the alert and for an update whose severity
    changed (the same dedup_key: the same PagerDuty incident, its severity now the new one),
    resolve for the resolution."""
    if outgoing.kind in ("resolved", ACKNOWLEDGED):
        # A person acknowledged it (``incident ack``): PagerDuty stops escalating too.
        action = "resolve" if outgoing.kind == "resolved" else "acknowledge"
        return {"routing_key": routing_key, "event_action": action,
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
            "severity": pagerduty_severity(incident.get("severity")),
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
    if len(json.dumps(body, ensure_ascii=False).encode()) > EVENT_LIMIT:
        # The template's lines are short; what can grow is the check list: keep its head.
        details = body["payload"]["custom_details"]
        details["checks"] = details["checks"][:50]
        details["message"] = [line[:1000] for line in details["message"][:50]]
        details["truncated"] = "cut to fit PagerDuty's 512 KB: see the report"
    return body


def pagerduty_severity(level: Any) -> str:
    """The Events API's severity for ours (severity.SEVERITY_TABLE); ``error`` for one we
    do not know."""
    known = SEVERITY_TABLE.get(str(level))
    return known.pagerduty if known else "error"


class PagerDutyNotify(_Section):
    """[notify.pagerduty]: an Events API v2 integration."""

    routing_key_env: EnvVar
    api_url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"


SETTINGS = PagerDutyNotify


def build(config: PagerDutyNotify, secret: SecretLookup) -> PagerDutyNotifier:
    key = secret(config.routing_key_env)
    if not ROUTING_KEY.fullmatch(key):
        raise ConfigError("routing_key_env", config.routing_key_env,
                          f"the value of {config.routing_key_env} is not a PagerDuty routing "
                          f"key: it has {len(key)} characters where an Events API v2 "
                          "integration key has 32 letters and digits")
    return PagerDutyNotifier(key, config.api_url,
                             setting=f"[notify.pagerduty] routing_key_env "
                                     f"({config.routing_key_env})")


# What a notifier of this module takes, without building one (a command that only
# enqueues needs no secret).
NOTIFIER = PagerDutyNotifier
