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
import math
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import model_validator

from unibazzar_health.config.fields import EnvVar, HttpUrl, _Section
from unibazzar_health.incidents.notifiers.base import (
    ConfigError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    http_status_error,
    urllib_error,
)
from unibazzar_health.incidents.notifiers.slack.blocks import (
    _escape,
    _silent_logger,
    blocks,
    message_text,
)
from unibazzar_health.incidents.notifiers.slack.thread import SlackThreadNotifier
from unibazzar_health.incidents.state import KINDS

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


class SlackNotify(_Section):
    """[notify.slack], one of two modes: an incoming webhook (each message in the channel),
    or a bot token and a channel (one thread per incident, its root edited as it goes)."""

    # The whole incoming-webhook URL is the secret (its path is the token).
    webhook_url_env: EnvVar | None = None
    token_env: EnvVar | None = None  # a bot token (xoxb-…) with chat:write, channels:history
    channel: str | None = None  # the channel's ID (C…), the bot invited to it
    api_url: HttpUrl = "https://slack.com/api/"

    @model_validator(mode="after")
    def _one_mode(self) -> SlackNotify:
        if (self.webhook_url_env is None) == (self.token_env is None):
            raise ValueError("set webhook_url_env (an incoming webhook) or token_env and "
                             "channel (a bot's thread per incident), not both or neither")
        if self.token_env is not None and not self.channel:
            raise ValueError("channel is required with token_env (the channel's ID, C…)")
        return self


SETTINGS = SlackNotify


def build(config: SlackNotify, secret: SecretLookup) -> Any:
    if config.token_env is not None:
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


NOTIFIER = SlackNotifier
