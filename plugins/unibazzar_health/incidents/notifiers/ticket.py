"""The runbook's "Create incident tracking ticket", on GitHub Issues (REST): created once per
incident with the incident's Markdown (its Initial Notification and details, the report
link) as the body, commented on with each update and escalation, commented and closed on
resolution.

Posting records the created issue's number before any comment is sent (the create is the
incident's first ticket delivery; comments wait for it). A create retried after an answer
that never came first looks for the issue it may have made (the body carries a marker), so
an incident gets one ticket.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from unibazzar_health.incidents.notifiers.base import (
    DeliveryError,
    Outgoing,
    Receipt,
    SecretLookup,
    new_session,
    post_json,
)
from unibazzar_health.messages import sev
from unibazzar_health.settings import TicketNotify

API_VERSION = "2022-11-28"


class GitHubTicketNotifier:
    name = "ticket"
    kinds = frozenset({"alert", "update", "escalation", "resolved"})
    idempotent = False

    def __init__(self, api_url: str, repository: str, token: str, labels: list[str],
                 session: Any = None) -> None:
        self._api = api_url.rstrip("/") + "/repos/" + quote(repository, safe="/")
        self._token, self._labels, self._session = token, list(labels), session

    def __repr__(self) -> str:
        return f"GitHubTicketNotifier(api={self._api!r}, token=***)"

    def hidden(self) -> list[str]:
        return []

    def _request(self, method: str, path: str, body: Any, timeout: float) -> Any:
        if self._session is None:
            self._session = new_session()
        headers = {"Authorization": f"Bearer {self._token}",
                   "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "unibazzar-health"}
        return post_json(self._session, method, self._api + path, body, timeout, headers)

    def send(self, outgoing: Outgoing, timeout: float) -> Receipt:
        if outgoing.kind == "alert":
            return self._create(outgoing, timeout)
        if not outgoing.ticket or "number" not in outgoing.ticket:
            raise DeliveryError("the incident's ticket is not created yet", retryable=False)
        number = int(outgoing.ticket["number"])
        if outgoing.kind == "resolved":
            if outgoing.attempt and self._closed(number, timeout):
                return Receipt(status=200, detail={"number": number, "closed": True})
            comment = self._request("POST", f"/issues/{number}/comments",
                                    {"body": outgoing.message.markdown()}, timeout)
            self._request("PATCH", f"/issues/{number}",
                          {"state": "closed", "state_reason": "completed"}, timeout)
            return Receipt(status=comment.status_code, detail={"number": number,
                                                               "closed": True})
        comment = self._request("POST", f"/issues/{number}/comments",
                                {"body": outgoing.message.markdown()}, timeout)
        return Receipt(status=comment.status_code,
                       detail={"number": number, "comment_url": _field(comment, "html_url")})

    def _create(self, outgoing: Outgoing, timeout: float) -> Receipt:
        marker = f"<!-- unibazzar-health incident={outgoing.incident['id']} -->"
        if outgoing.attempt:
            found = self._find(marker, timeout)
            if found is not None:
                return Receipt(status=200, detail=found)
        response = self._request("POST", "/issues", {
            "title": title(outgoing), "body": body(outgoing) + "\n" + marker + "\n",
            "labels": self._labels}, timeout)
        number = _field(response, "number")
        if not isinstance(number, int):
            raise DeliveryError("the issue was created but its answer has no number",
                                retryable=False, maybe_delivered=True)
        return Receipt(status=response.status_code,
                       detail={"number": number, "url": _field(response, "html_url")})

    def _find(self, marker: str, timeout: float) -> dict[str, Any] | None:
        """The issue an earlier attempt may have created (newest first, one page)."""
        labels = f"&labels={quote(self._labels[0])}" if self._labels else ""
        response = self._request("GET", f"/issues?state=all&per_page=50&sort=created"
                                        f"&direction=desc{labels}", None, timeout)
        issues = response.json()
        for issue in issues if isinstance(issues, list) else []:
            if isinstance(issue, dict) and marker in str(issue.get("body") or ""):
                return {"number": issue.get("number"), "url": issue.get("html_url")}
        return None

    def _closed(self, number: int, timeout: float) -> bool:
        response = self._request("GET", f"/issues/{number}", None, timeout)
        return bool(_field(response, "state") == "closed")


def _field(response: Any, name: str) -> Any:
    try:
        data = response.json()
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def title(outgoing: Outgoing) -> str:
    incident = outgoing.incident
    return f"[{outgoing.environment}] {sev(str(incident['severity']))}: {incident['title']}"


def body(outgoing: Outgoing) -> str:
    """incident.md for this incident: the heading, then the Initial Notification with its
    details (evidence, fixes, commands, escalation, the report link)."""
    verdict = outgoing.summary.get("verdict") or {}
    head = (f"# Incident: {outgoing.environment} — {sev(verdict.get('severity'))} "
            f"{verdict.get('title') or ''}").rstrip()
    text = head + "\n\n" + outgoing.message.markdown()
    report = outgoing.incident.get("report_url")
    if report and f"Report: {report}" not in text:
        text += f"\nReport: {report}\n"
    return text


def build(config: TicketNotify, secret: SecretLookup) -> GitHubTicketNotifier:
    return GitHubTicketNotifier(config.api_url, config.repository, secret(config.token_env),
                                config.labels)
