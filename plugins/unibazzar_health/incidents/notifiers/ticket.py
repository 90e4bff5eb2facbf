"""The runbook's "Create incident tracking ticket", on GitHub Issues (REST): created once per
incident with the incident's Markdown (its Initial Notification and details, the report
link) as the body, commented on with each update and escalation, commented and closed on
resolution.

Posting records the created issue's number before any comment is sent (the create is the
incident's first ticket delivery; comments wait for it). Every resend is harmless, so every
kind is ``recoverable``: the issue's body and each comment carry a hidden marker (the
incident, the delivery), and a resend — after an answer that never came, or a runner that
died mid-send — first looks for what the earlier attempt made: an incident gets one ticket,
an update one comment, and a resolution whose close failed after its comment went out
closes it without commenting twice (closing a closed issue changes nothing). Each request
has its own timeout from the posting budget.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from unibazzar_health.incidents.notifiers.base import (
    DeliveryError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    new_session,
    post_json,
)
from unibazzar_health.incidents.state import KINDS
from unibazzar_health.messages import sev
from unibazzar_health.settings import TicketNotify

API_VERSION = "2022-11-28"
PER_PAGE = 100  # comments per page when a resend looks for its own
MAX_PAGES = 10  # …and at most this many pages (an incident of a thousand comments)


class GitHubTicketNotifier:
    name = "ticket"
    kinds = frozenset(KINDS)
    idempotent: frozenset[str] = frozenset()
    recoverable = frozenset(KINDS)  # a resend looks for its marker first

    def __init__(self, api_url: str, repository: str, token: str, labels: list[str],
                 session: Any = None) -> None:
        self._api = api_url.rstrip("/") + "/repos/" + quote(repository, safe="/")
        self._token, self._labels, self._session = token, list(labels), session

    def __repr__(self) -> str:
        return f"GitHubTicketNotifier(api={self._api!r}, token=***)"

    def hidden(self) -> list[str]:
        return []

    def _request(self, method: str, path: str, body: Any, budget: RequestBudget) -> Any:
        if self._session is None:
            self._session = new_session()
        headers = {"Authorization": f"Bearer {self._token}",
                   "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "unibazzar-health"}
        return post_json(self._session, method, self._api + path, body, budget.timeout(),
                         headers)

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        if outgoing.kind == "alert":
            return self._create(outgoing, budget)
        if not outgoing.ticket or "number" not in outgoing.ticket:
            raise DeliveryError("the incident's ticket is not created yet", retryable=False)
        number = int(outgoing.ticket["number"])
        status, url = self._comment(number, outgoing, budget)
        if outgoing.kind == "resolved":
            closed = self._request("PATCH", f"/issues/{number}",
                                   {"state": "closed", "state_reason": "completed"}, budget)
            return Receipt(status=closed.status_code, detail={"number": number,
                                                              "closed": True})
        return Receipt(status=status, detail={"number": number, "comment_url": url})

    def _create(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        marker = f"<!-- unibazzar-health incident={outgoing.incident['id']} -->"
        if outgoing.attempt:
            found = self._find(marker, budget)
            if found is not None:
                return Receipt(status=200, detail=found)
        response = self._request("POST", "/issues", {
            "title": title(outgoing), "body": body(outgoing) + "\n" + marker + "\n",
            "labels": self._labels}, budget)
        number = _field(response, "number")
        if not isinstance(number, int):
            raise DeliveryError("the issue was created but its answer has no number",
                                retryable=False, maybe_delivered=True)
        return Receipt(status=response.status_code,
                       detail={"number": number, "url": _field(response, "html_url")})

    def _find(self, marker: str, budget: RequestBudget) -> dict[str, Any] | None:
        """The issue an earlier attempt may have created (newest first, one page)."""
        labels = f"&labels={quote(self._labels[0])}" if self._labels else ""
        response = self._request("GET", f"/issues?state=all&per_page=50&sort=created"
                                        f"&direction=desc{labels}", None, budget)
        issues = _json(response)
        for issue in issues if isinstance(issues, list) else []:
            if isinstance(issue, dict) and marker in str(issue.get("body") or ""):
                return {"number": issue.get("number"), "url": issue.get("html_url")}
        return None

    def _comment(self, number: int, outgoing: Outgoing, budget: RequestBudget
                 ) -> tuple[int | None, Any]:
        """(HTTP status, the comment's URL): posted, or found where an earlier attempt of
        this delivery posted it."""
        marker = f"<!-- unibazzar-health delivery={outgoing.delivery_id} -->"
        if outgoing.attempt:
            found = self._find_comment(number, marker, budget)
            if found is not None:
                return 200, found.get("html_url")
        response = self._request("POST", f"/issues/{number}/comments",
                                 {"body": outgoing.message.markdown() + "\n" + marker + "\n"},
                                 budget)
        return response.status_code, _field(response, "html_url")

    def _find_comment(self, number: int, marker: str, budget: RequestBudget
                      ) -> dict[str, Any] | None:
        for page in range(1, MAX_PAGES + 1):
            response = self._request(
                "GET", f"/issues/{number}/comments?per_page={PER_PAGE}&page={page}", None,
                budget)
            comments = _json(response)
            if not isinstance(comments, list):
                return None
            for comment in comments:
                if isinstance(comment, dict) and marker in str(comment.get("body") or ""):
                    return comment
            if len(comments) < PER_PAGE:
                return None
        return None


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _field(response: Any, name: str) -> Any:
    data = _json(response)
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
