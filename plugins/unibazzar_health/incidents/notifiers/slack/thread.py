"""Slack with a bot token (``[notify.slack] token_env`` and ``channel``): one thread per
incident, through slack_sdk's WebClient.

The alert is the thread's root (``chat.postMessage``); every update, escalation,
acknowledgement and the resolution is a reply in its thread (``thread_ts``), and each reply
edits the root (``chat.update``) to show the incident as it stands: its severity, its IC
and, at the end, ✅ with the duration. Every message carries metadata naming its delivery
(``event_type`` ``unibazzar_health_delivery``), so a resend first looks for what an earlier
attempt posted (``conversations.history`` for the root, ``conversations.replies`` in the
thread): as safe to resend as the ticket, every kind ``recoverable``.

The same blocks and limits as the incoming webhook (slack.py). Answers are classified as
every notifier's (base.py): ``ratelimited`` (429, ``Retry-After``) and Slack's own failures
are retried; a refused token (``invalid_auth``, ``token_revoked``…) names ``token_env``, a
channel the bot cannot post to (``channel_not_found``, ``not_in_channel``,
``is_archived``) names ``channel``; ``msg_too_long``, ``invalid_blocks`` are refused for
good.
"""

from __future__ import annotations

import math
from typing import Any

from unibazzar_health.incidents.notifiers.base import (
    DeliveryError,
    Outgoing,
    Receipt,
    RequestBudget,
    error_text,
    retry_after,
    urllib_error,
)
from unibazzar_health.incidents.notifiers.slack.blocks import (
    _escape,
    _silent_logger,
    blocks,
    message_text,
)
from unibazzar_health.incidents.state import KINDS
from unibazzar_health.reports.messages import sev
from unibazzar_health.verdict.model import carried_summary

EVENT_TYPE = "unibazzar_health_delivery"
# Errors that name the token, then the channel (Slack's own words): refused for good.
TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked",
                          "token_expired", "no_permission", "missing_scope", "ekm_access_denied"})
CHANNEL_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived",
                            "restricted_action"})
RETRY_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                          "request_timeout"})
LOOKBACK = 200  # messages a resend reads back to find an earlier attempt


class SlackThreadNotifier:
    name = "slack"
    kinds = frozenset(KINDS)
    idempotent: frozenset[str] = frozenset()
    recoverable = frozenset(KINDS)  # a resend looks for its delivery's metadata first
    cancelled_by_resolution: frozenset[str] = frozenset()
    threaded = True  # later kinds go in the alert's thread: they wait for its receipt

    def __init__(self, token: str, channel: str, api_url: str,
                 token_setting: str = "[notify.slack] token_env") -> None:
        self._token, self._channel, self._api_url = token, channel, api_url
        self._token_setting = token_setting

    def __repr__(self) -> str:
        return f"SlackThreadNotifier(channel={self._channel!r}, token=***)"

    def hidden(self) -> list[str]:
        return []

    def _client(self, budget: RequestBudget) -> Any:
        from slack_sdk import WebClient

        # No retries of its own (posting decides), whole seconds (its type), and a logger
        # that logs nothing (its own would log request bodies at debug level).
        return WebClient(token=self._token, base_url=self._api_url,
                         timeout=max(1, math.ceil(budget.timeout())),
                         logger=_silent_logger(), retry_handlers=[])

    def _call(self, budget: RequestBudget, method: str, **arguments: Any) -> dict[str, Any]:
        """One Web API call, its answer classified: the answer's data, or DeliveryError."""
        import http.client

        from slack_sdk.errors import SlackApiError

        timeout = budget.timeout()
        client = self._client(budget)
        try:
            response = getattr(client, method)(**arguments)
        except SlackApiError as exc:
            raise self._refused(exc.response) from None
        except (http.client.HTTPException, OSError) as exc:  # URLError, timeouts among them
            raise urllib_error(exc, timeout) from None
        return dict(response.data) if isinstance(response.data, dict) else {}

    def _refused(self, response: Any) -> DeliveryError:
        data = response.data if isinstance(response.data, dict) else {}
        error = str(data.get("error") or "") or error_text(str(response.data or ""))
        status = response.status_code
        reason = f"HTTP {status}: {error}" if status != 200 else error
        if error in RETRY_ERRORS or status == 429 or status >= 500:
            return DeliveryError(reason, retryable=True,
                                 retry_after=retry_after(response.headers))
        fix = None
        if error in TOKEN_ERRORS or status in (401, 403):
            fix = f"Slack refused the bot token: check {self._token_setting}"
        elif error in CHANNEL_ERRORS:
            fix = (f"the bot cannot post to {self._channel}: check [notify.slack] channel "
                   "(a channel ID, C…) and invite the bot to it")
        return DeliveryError(reason, retryable=False, fix=fix)

    # ---- sending ----------------------------------------------------------------------------
    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        root = outgoing.root if outgoing.kind != "alert" else None
        if outgoing.kind != "alert" and not (root and root.get("ts")):
            raise DeliveryError("the incident's thread is not started yet", retryable=False)
        if outgoing.attempt:
            found = self._find(outgoing, root, budget)
            if found is not None:
                return self._receipt(found, root, outgoing, budget)
        message = {"channel": self._channel, "text": message_text(outgoing),
                   "blocks": blocks(outgoing), "unfurl_links": False, "unfurl_media": False,
                   "metadata": {"event_type": EVENT_TYPE, "event_payload": {
                       "delivery": outgoing.delivery_id, "incident": outgoing.incident["id"],
                       "kind": outgoing.kind}}}
        if root:
            message["thread_ts"] = root["ts"]
        answer = self._call(budget, "chat_postMessage", **message)
        return self._receipt(answer, root, outgoing, budget)

    def _receipt(self, answer: dict[str, Any], root: Any, outgoing: Outgoing,
                 budget: RequestBudget) -> Receipt:
        detail: dict[str, Any] = {"channel": answer.get("channel") or self._channel,
                                  "ts": answer.get("ts")}
        if root is not None:
            # The reply is in; the root's edit is a courtesy: its failure is said, not fatal.
            try:
                self._call(budget, "chat_update", channel=root.get("channel") or self._channel,
                           ts=root["ts"], text=root_text(outgoing),
                           blocks=[{"type": "section", "text": {"type": "mrkdwn",
                                                                "text": root_text(outgoing)}}])
                detail["root_updated"] = True
            except DeliveryError as exc:
                detail["root_updated"] = f"not edited: {exc.reason}"
        return Receipt(status=200, detail=detail)

    def _find(self, outgoing: Outgoing, root: Any, budget: RequestBudget
              ) -> dict[str, Any] | None:
        """The message an earlier attempt of this delivery posted, by its metadata."""
        if root:
            answer = self._call(budget, "conversations_replies", channel=self._channel,
                                ts=root["ts"], include_all_metadata=True, limit=LOOKBACK)
        else:
            answer = self._call(budget, "conversations_history", channel=self._channel,
                                include_all_metadata=True, limit=LOOKBACK)
        for message in answer.get("messages") or []:
            payload = ((message.get("metadata") or {}).get("event_payload") or {})
            if payload.get("delivery") == outgoing.delivery_id:
                return {"channel": self._channel, "ts": message.get("ts")}
        return None

    def test(self, budget: RequestBudget) -> list[str]:
        text = ("🧪 TEST — unibazzar-health notification test: no incident. This message "
                "proves the path from the health checks to this channel.")
        answer = self._call(budget, "chat_postMessage", channel=self._channel, text=text,
                            blocks=[{"type": "section",
                                     "text": {"type": "mrkdwn", "text": _escape(text)}}])
        return [f"ok: the test message is in {answer.get('channel') or self._channel} "
                f"(ts {answer.get('ts')})"]


def root_text(outgoing: Outgoing) -> str:
    """The thread's root as the incident stands: resolved with its duration, else its
    severity, IC and last word."""
    incident = outgoing.incident
    title = _escape(str(incident.get("title") or incident["key"]))
    lines = outgoing.message.lines
    if outgoing.kind == "resolved":
        duration = next((line.removeprefix("Duration: ") for line in lines
                         if line.startswith("Duration: ")), "")
        return f"✅ RESOLVED — {sev(str(incident.get('severity')))} {title} — {_escape(duration)}"
    summary = carried_summary(outgoing.summary)
    ic = summary.incident.ic if summary else None
    return (f"🚨 {sev(str(incident.get('severity')))} {title}"
            + (f" — IC {_escape(str(ic))}" if ic else "")
            + f" — latest: {_escape(lines[0])}")
