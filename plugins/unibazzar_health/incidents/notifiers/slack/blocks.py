"""Slack's message, as Block Kit: the runbook's message as the first block, the details in
sections after it, the environment and report link as context, every block within Slack's
documented limits. Shared by the webhook (slack/__init__) and the thread mode (slack/thread).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from unibazzar_health.incidents.notifiers.base import Outgoing, fit_lines, fit_text

# Slack's documented limits (FACTS.md, Block Kit).
SECTION_LIMIT = 3000  # characters of one section block's text
BLOCK_LIMIT = 50  # blocks in one message
TEXT_LIMIT = 40_000  # characters of the message's top-level text
CONTEXT_LIMIT = 2000  # characters of a context element's text
# The details take at most this many sections: a message is read in the channel, the rest
# is in the report it links to.
DETAIL_SECTIONS = 4

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
