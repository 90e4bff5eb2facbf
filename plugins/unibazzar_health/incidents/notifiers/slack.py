"""Slack, through an incoming webhook (slack_sdk's WebhookClient): the runbook's message as
its first block, word for word, the details (evidence, fixes, commands, escalation) in the
sections after it, the environment, incident and report link as context — every block
within Slack's limits (≤ 50 blocks, a section ≤ 3,000 characters, ``text`` ≤ 40,000), the
whole incident one link away.

The webhook URL is the secret (its path is the token): it comes from ``webhook_url_env``
and never shows in an error (the errors here are written without it, and its path is
handed to the run's redactor).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from typing import Any
from urllib.parse import urlsplit

from unibazzar_health.incidents.notifiers.base import (
    ConfigError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    fit_lines,
    fit_text,
    http_status_error,
    urllib_error,
)
from unibazzar_health.incidents.state import KINDS
from unibazzar_health.settings import SlackNotify

# Slack's documented limits (FACTS.md, Block Kit).
SECTION_LIMIT = 3000  # characters of one section block's text
BLOCK_LIMIT = 50  # blocks in one message
TEXT_LIMIT = 40_000  # characters of the message's top-level text
CONTEXT_LIMIT = 2000  # characters of a context element's text
# The details take at most this many sections: a message is read in the channel, the rest
# is in the report it links to.
DETAIL_SECTIONS = 4
# An incoming webhook's path: /services/T…/B…/secret (a workflow or app URL is not one).
WEBHOOK_PATH = re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+")


class SlackNotifier:
    name = "slack"
    kinds = frozenset(KINDS)
    # A second post is a second message in the channel, and nothing can look for the first.
    idempotent: frozenset[str] = frozenset()
    recoverable: frozenset[str] = frozenset()
    cancelled_by_resolution: frozenset[str] = frozenset()
    threaded = False

    def __init__(self, webhook_url: str, setting: str = "[notify.slack] webhook_url_env"
                 ) -> None:
        self._url, self._setting = webhook_url, setting

    def __repr__(self) -> str:
        return "SlackNotifier(webhook_url=***)"

    def hidden(self) -> list[str]:
        parts = urlsplit(self._url)
        return [p for p in (parts.path, parts.query) if len(p) >= 8]

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        return self._post(message_text(outgoing), blocks(outgoing), budget)

    def test(self, budget: RequestBudget) -> list[str]:
        text = ("🧪 TEST — unibazzar-health notification test: no incident. This message "
                "proves the path from the health checks to this channel.")
        receipt = self._post(text, [{"type": "section",
                                     "text": {"type": "mrkdwn", "text": _escape(text)}}],
                             budget)
        return [f"HTTP {receipt.status} ok: the test message is in the channel"]

    def _post(self, text: str, message_blocks: list[dict[str, Any]], budget: RequestBudget
              ) -> Receipt:
        import http.client

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
            response = client.send(text=text, blocks=message_blocks, unfurl_links=False,
                                   unfurl_media=False)
        except (http.client.HTTPException, OSError) as exc:  # URLError, timeouts among them
            raise urllib_error(exc, timeout) from None
        if response.status_code != 200:
            # 403/404/410: the webhook was revoked or its channel deleted.
            raise http_status_error(response.status_code, str(response.body or ""),
                                    response.headers, credentials=self._setting,
                                    revoked=(404, 410))
        return Receipt(status=response.status_code)


def build(config: SlackNotify, secret: SecretLookup) -> Any:
    if config.token_env is not None:
        from unibazzar_health.incidents.notifiers.slack_thread import SlackThreadNotifier

        token = secret(config.token_env)
        if not token.startswith(("xoxb-", "xoxp-")) or any(c.isspace() for c in token):
            raise ConfigError("token_env", config.token_env,
                              f"the value of {config.token_env} is not a Slack bot token "
                              "(xoxb-…, from the app's OAuth & Permissions page)")
        assert config.channel is not None  # the section's validator
        return SlackThreadNotifier(token, config.channel, config.api_url,
                                   f"[notify.slack] token_env ({config.token_env})")
    key = "webhook_url_env"
    assert config.webhook_url_env is not None  # the section's validator
    url = secret(config.webhook_url_env)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(key, config.webhook_url_env,
                          f"the value of {config.webhook_url_env} is not a webhook URL "
                          "(https://hooks.slack.com/services/…)")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError(key, config.webhook_url_env,
                          f"the value of {config.webhook_url_env} is not https: Slack's "
                          "webhooks are https://hooks.slack.com/services/…")
    if not WEBHOOK_PATH.fullmatch(parts.path):
        raise ConfigError(key, config.webhook_url_env,
                          f"the value of {config.webhook_url_env} is not an incoming webhook "
                          "(its path must be /services/T…/B…/…, as Slack's 'Incoming "
                          "Webhooks' page gives it; a workflow or app URL is not one)")
    return SlackNotifier(url, f"[notify.slack] webhook_url_env ({config.webhook_url_env})")


def _loopback(host: str) -> bool:
    """A receiver on this machine (a relay or a test double): plain http is fine there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _silent_logger() -> logging.Logger:
    logger = logging.getLogger("unibazzar_health.notify.slack")
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def message_text(outgoing: Outgoing) -> str:
    """The top-level text (notifications, screen readers): the template, within its limit."""
    return fit_text(_escape(outgoing.message.text), TEXT_LIMIT)


def blocks(outgoing: Outgoing) -> list[dict[str, Any]]:
    """The message's blocks, each within Slack's limits: the template (one section), the
    details (up to DETAIL_SECTIONS sections, cut at a line with "… N more lines — see the
    report"), the context."""
    message = outgoing.message
    out: list[dict[str, Any]] = [_section(fit_text(_escape(message.text), SECTION_LIMIT))]
    if message.details:
        lines = fit_lines(mrkdwn_lines(message.details), DETAIL_SECTIONS * SECTION_LIMIT
                          - DETAIL_SECTIONS)
        out.extend(_section(chunk) for chunk in _chunks(lines, SECTION_LIMIT))
    context = [f"{_escape(outgoing.environment)} · `{_escape(outgoing.incident['key'])}`"]
    report = outgoing.incident.get("report_url")
    if report:
        context.append(f"<{_escape(str(report))}|report>")
    out.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": fit_text(" · ".join(context), CONTEXT_LIMIT)}]})
    return out[:BLOCK_LIMIT]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _chunks(lines: list[str], limit: int) -> list[str]:
    """Lines joined into texts of at most ``limit`` characters, cut only between lines (a
    longer line on its own is cut)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = line if len(line) <= limit else line[:limit - 1] + "…"
        if current and size + 1 + len(line) > limit:
            chunks.append("\n".join(current))
            current, size = [], 0
        size += len(line) + (1 if current else 0)
        current.append(line)
    text = "\n".join(current).strip()
    if text:
        chunks.append(text)
    return [c for c in chunks if c.strip()]


# Mentions as Slack writes them, kept as they are so they notify: a user (<@U…>), a user
# group (<!subteam^S…>), <!here>/<!channel>, a channel (<#C…>). [contacts] holds them.
MENTION = re.compile(r"<(?:@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+|!here|!channel|#C[A-Z0-9]+)>")


def _escape(text: str) -> str:
    """Slack's three control characters, escaped everywhere but in a mention."""
    def plain(part: str) -> str:
        return part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    out, last = [], 0
    for match in MENTION.finditer(text):
        out += [plain(text[last:match.start()]), match.group()]
        last = match.end()
    return "".join([*out, plain(text[last:])])


def mrkdwn_lines(markdown_lines: list[str]) -> list[str]:
    """messages.py's Markdown details in Slack's mrkdwn, escaped: bold is *x*, lists are
    bullets."""
    lines = []
    for line in markdown_lines:
        line = re.sub(r"\*\*(.+?)\*\*", r"*\1*", _escape(line))
        if line.startswith("  - "):
            line = "      ◦ " + line[4:]
        elif line.startswith("- "):
            line = "• " + line[2:]
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def mrkdwn(markdown_lines: list[str]) -> str:
    return "\n".join(mrkdwn_lines(markdown_lines)).strip()


# What a notifier of this module takes, without building one (a command that only
# enqueues needs no secret).
NOTIFIER = SlackNotifier
