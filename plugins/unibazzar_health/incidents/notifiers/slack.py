"""Slack, through an incoming webhook (slack_sdk's WebhookClient): the runbook's message as
its first block, word for word, the details (evidence, fixes, commands, escalation) in a
second, the environment, incident and report link as context.

The webhook URL is the secret (its path is the token): it comes from ``webhook_url_env``
and never shows in an error (the errors here are written without it, and its path is
handed to the run's redactor).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any
from urllib.parse import urlsplit

from unibazzar_health.incidents.notifiers.base import (
    ConfigError,
    DeliveryError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    http_status_error,
)
from unibazzar_health.settings import SlackNotify

SECTION_LIMIT = 3000  # characters of one section block's text (Slack's limit)


class SlackNotifier:
    name = "slack"
    kinds = frozenset({"alert", "update", "escalation", "resolved"})
    # A second post is a second message in the channel, and nothing can look for the first.
    idempotent: frozenset[str] = frozenset()
    recoverable: frozenset[str] = frozenset()

    def __init__(self, webhook_url: str) -> None:
        self._url = webhook_url

    def __repr__(self) -> str:
        return "SlackNotifier(webhook_url=***)"

    def hidden(self) -> list[str]:
        parts = urlsplit(self._url)
        return [p for p in (parts.path, parts.query) if len(p) >= 8]

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        import http.client
        import urllib.error

        from slack_sdk.webhook import WebhookClient

        timeout = budget.timeout()
        client = WebhookClient(
            self._url,
            # Whole seconds (its type); posting bounds the whole send by its own clock too.
            timeout=max(1, math.ceil(timeout)),
            # Its own logger logs the URL at debug level: ours logs nothing.
            logger=_silent_logger(),
            # No retries of its own: a retried post after a dropped answer is a duplicate.
            retry_handlers=[],
        )
        try:
            response = client.send(text=outgoing.message.text, blocks=blocks(outgoing),
                                   unfurl_links=False, unfurl_media=False)
        except urllib.error.URLError as exc:
            # urlopen wraps what happens before the request is sent (connect, DNS, TLS).
            refused = isinstance(exc.reason, ConnectionRefusedError)
            timed_out = isinstance(exc.reason, TimeoutError)
            raise DeliveryError("connection refused" if refused else
                                f"no connection within {timeout:g} s" if timed_out else
                                "cannot connect", retryable=True) from None
        except TimeoutError:
            raise DeliveryError(f"no answer within {timeout:g} s (may have been delivered)",
                                retryable=True, maybe_delivered=True) from None
        except (http.client.HTTPException, ConnectionError, OSError):
            raise DeliveryError("connection dropped before an answer (may have been "
                                "delivered)", retryable=True, maybe_delivered=True) from None
        if response.status_code != 200:
            raise http_status_error(response.status_code, str(response.body or ""))
        return Receipt(status=response.status_code)


def build(config: SlackNotify, secret: SecretLookup) -> SlackNotifier:
    url = secret(config.webhook_url_env)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("webhook_url_env", config.webhook_url_env,
                          f"the value of {config.webhook_url_env} is not a webhook URL "
                          "(https://hooks.slack.com/services/…)")
    return SlackNotifier(url)


def _silent_logger() -> logging.Logger:
    logger = logging.getLogger("unibazzar_health.notify.slack")
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def blocks(outgoing: Outgoing) -> list[dict[str, Any]]:
    message = outgoing.message
    out: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(message.text)}}]
    if message.details:
        details = mrkdwn(message.details)
        if len(details) > SECTION_LIMIT:
            details = details[:SECTION_LIMIT - 30].rsplit("\n", 1)[0] + "\n… (more in the report)"
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": details}})
    context = [f"{_escape(outgoing.environment)} · `{_escape(outgoing.incident['key'])}`"]
    report = outgoing.incident.get("report_url")
    if report:
        context.append(f"<{report}|report>")
    out.append({"type": "context",
                "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return out


def _escape(text: str) -> str:
    """Slack's three control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(markdown_lines: list[str]) -> str:
    """messages.py's Markdown details in Slack's mrkdwn: bold is *x*, lists are bullets."""
    lines = []
    for line in markdown_lines:
        line = re.sub(r"\*\*(.+?)\*\*", r"*\1*", _escape(line))
        if line.startswith("  - "):
            line = "      ◦ " + line[4:]
        elif line.startswith("- "):
            line = "• " + line[2:]
        lines.append(line)
    return "\n".join(lines).strip()
