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

The marker is looked for without the labels (GitHub drops them silently when the token
cannot push, and an issue found by its label alone would then never be found), in the
newest issues, then through the search API. A create whose labels were dropped says so.

Limits (GitHub's): a title ≤ 256 characters, a body or comment ≤ 65,536 (422 beyond): the
evidence is cut first, the marker always kept. Rate limits: a 403 or 429 with
``x-ratelimit-remaining: 0`` waits for ``x-ratelimit-reset``; a secondary limit for its
``retry-after`` (a minute when it gives none).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AfterValidator, Field

from unibazzar_health.config.fields import EnvVar, HttpUrl, _Section
from unibazzar_health.incidents.notifiers.base import (
    ConfigError,
    DeliveryError,
    Outgoing,
    Receipt,
    RequestBudget,
    SecretLookup,
    fit_markdown,
    http_status_error,
    new_session,
    post_json,
)
from unibazzar_health.incidents.state import KINDS
from unibazzar_health.reports.messages import sev
from unibazzar_health.verdict.model import carried_summary

API_VERSION = "2022-11-28"
PER_PAGE = 100  # comments per page when a resend looks for its own
MAX_PAGES = 10  # …and at most this many pages (an incident of a thousand comments)
TITLE_LIMIT = 256  # characters of an issue's title
BODY_LIMIT = 65_536  # characters of an issue's body or a comment
SECONDARY_WAIT_S = 60.0  # GitHub: after a secondary limit without retry-after, wait a minute


class GitHubTicketNotifier:
    name = "ticket"
    kinds = frozenset(KINDS)
    idempotent: frozenset[str] = frozenset()
    recoverable = frozenset(KINDS)  # a resend looks for its marker first
    cancelled_by_resolution: frozenset[str] = frozenset()
    threaded = True

    def __init__(self, api_url: str, repository: str, token: str, labels: list[str],
                 session: Any = None, token_setting: str = "[notify.ticket] token_env"
                 ) -> None:
        self._root = api_url.rstrip("/")
        self._repository = repository
        self._api = self._root + "/repos/" + quote(repository, safe="/")
        self._token, self._labels, self._session = token, list(labels), session
        self._token_setting = token_setting

    def __repr__(self) -> str:
        return f"GitHubTicketNotifier(api={self._api!r}, token=***)"

    def hidden(self) -> list[str]:
        return []

    def _request(self, method: str, path: str, body: Any, budget: RequestBudget, *,
                 root: bool = False) -> Any:
        if self._session is None:
            self._session = new_session()
        headers = {"Authorization": f"Bearer {self._token}",
                   "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "unibazzar-health"}
        return post_json(self._session, method, (self._root if root else self._api) + path,
                         body, budget.timeout(), headers, classify=self._refused)

    def _refused(self, response: Any) -> DeliveryError:
        """GitHub's answers: a rate limit (403 or 429, primary or secondary) waits; 401 and
        any other 403 are the token's; 404 is a repository the token cannot see; 422 (a
        body too long, a bad label) is refused for good."""
        status, headers = response.status_code, response.headers
        text = response.text or ""
        reset = headers.get("x-ratelimit-reset")
        if status in (403, 429) and (headers.get("x-ratelimit-remaining") == "0" or
                                     headers.get("retry-after") is not None or
                                     "rate limit" in text.lower()):
            error = http_status_error(429, text, headers)
            error.reason = f"HTTP {status}: " + error.reason.partition(": ")[2]
            if error.retry_after is None and headers.get("x-ratelimit-remaining") == "0" \
                    and reset and reset.isdigit():
                error.retry_after = max(0.0, int(reset) - time.time())
            if error.retry_after is None:
                error.retry_after = SECONDARY_WAIT_S
            return error
        if status == 404:
            error = http_status_error(status, text, headers)
            error.fix = (f"the repository {self._repository} is not there for this token: "
                         f"check [notify.ticket] repository and {self._token_setting}")
            return error
        return http_status_error(status, text, headers, credentials=self._token_setting)

    def test(self, budget: RequestBudget) -> list[str]:
        """A test issue, marked TEST, closed at once."""
        marker = f"<!-- unibazzar-health test={uuid.uuid4().hex[:12]} -->"
        created = self._request("POST", "/issues", {
            "title": "[TEST] unibazzar-health notification test (no incident)",
            "body": "A test of the path from the health checks to this repository's issues: "
                    "no incident. Closed at once.\n" + marker + "\n",
            "labels": self._labels}, budget)
        number = _field(created, "number")
        lines = [f"create: HTTP {created.status_code}, issue #{number} "
                 f"({_field(created, 'html_url')})"]
        dropped = _dropped_labels(created, self._labels)
        if dropped:
            lines.append(f"labels dropped by GitHub: {', '.join(dropped)} (the token cannot "
                         "push to the repository: give it triage or write access)")
        closed = self._request("PATCH", f"/issues/{number}",
                               {"state": "closed", "state_reason": "not_planned"}, budget)
        lines.append(f"close: HTTP {closed.status_code}")
        return lines

    def send(self, outgoing: Outgoing, budget: RequestBudget) -> Receipt:
        if outgoing.kind == "alert":
            return self._create(outgoing, budget)
        if not outgoing.root or "number" not in outgoing.root:
            raise DeliveryError("the incident's ticket is not created yet", retryable=False)
        number = int(outgoing.root["number"])
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
            "title": title(outgoing), "body": body(outgoing, "\n" + marker + "\n"),
            "labels": self._labels}, budget)
        number = _field(response, "number")
        if not isinstance(number, int):
            raise DeliveryError("the issue was created but its answer has no number",
                                retryable=False, maybe_delivered=True)
        detail: dict[str, Any] = {"number": number, "url": _field(response, "html_url")}
        dropped = _dropped_labels(response, self._labels)
        if dropped:
            detail["labels_dropped"] = dropped
        return Receipt(status=response.status_code, detail=detail)

    def _find(self, marker: str, budget: RequestBudget) -> dict[str, Any] | None:
        """The issue an earlier attempt may have created: among the newest issues (no label
        filter: GitHub drops labels a token may not set), else by the search API."""
        response = self._request("GET", "/issues?state=all&per_page=50&sort=created"
                                        "&direction=desc", None, budget)
        found = _with_marker(_json(response), marker)
        if found is not None:
            return found
        incident = marker.split("incident=")[-1].split()[0]
        query = quote(f'"{incident}" in:body repo:{self._repository} is:issue')
        try:
            response = self._request("GET", f"/search/issues?q={query}&per_page=20", None,
                                     budget, root=True)
        except DeliveryError as exc:
            if not exc.permanent:
                raise  # a rate limit or an outage: look again next time
            # Search refused (an Enterprise server without it): the newest issues were
            # looked through, and one ticket more beats none.
            return None
        data = _json(response)
        return _with_marker(data.get("items") if isinstance(data, dict) else None, marker)

    def _comment(self, number: int, outgoing: Outgoing, budget: RequestBudget
                 ) -> tuple[int | None, Any]:
        """(HTTP status, the comment's URL): posted, or found where an earlier attempt of
        this delivery posted it."""
        marker = f"<!-- unibazzar-health delivery={outgoing.delivery_id} -->"
        if outgoing.attempt:
            found = self._find_comment(number, marker, budget)
            if found is not None:
                return 200, found.get("html_url")
        message = outgoing.message
        text = fit_markdown(message.lines, message.details, BODY_LIMIT, "\n" + marker + "\n")
        response = self._request("POST", f"/issues/{number}/comments", {"body": text}, budget)
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


def _with_marker(issues: Any, marker: str) -> dict[str, Any] | None:
    for issue in issues if isinstance(issues, list) else []:
        if isinstance(issue, dict) and marker in str(issue.get("body") or ""):
            return {"number": issue.get("number"), "url": issue.get("html_url")}
    return None


def _dropped_labels(response: Any, asked: list[str]) -> list[str]:
    """The labels asked for that the created issue does not carry."""
    labels = _field(response, "labels")
    if not isinstance(labels, list):
        return []
    kept = {label.get("name") if isinstance(label, dict) else label for label in labels}
    return [label for label in asked if label not in kept]


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
    text = f"[{outgoing.environment}] {sev(str(incident['severity']))}: {incident['title']}"
    return text if len(text) <= TITLE_LIMIT else text[:TITLE_LIMIT - 1] + "…"


def body(outgoing: Outgoing, marker: str = "") -> str:
    """incident.md for this incident: the heading, then the Initial Notification with its
    details (evidence, fixes, commands, escalation, the report link), within GitHub's
    limit with ``marker`` whole at its end."""
    summary = carried_summary(outgoing.summary)
    verdict = summary.verdict if summary else None
    head = (f"# Incident: {outgoing.environment} — {sev(verdict.severity if verdict else None)} "
            f"{(verdict.title if verdict else None) or ''}").rstrip()[:1000]
    report = outgoing.incident.get("report_url")
    details = list(outgoing.message.details)
    if report and f"Report: {report}" not in details:
        details += ["", f"Report: {report}"]
    return head + "\n\n" + fit_markdown(outgoing.message.lines, details,
                                         BODY_LIMIT - len(head) - 2, marker)


def _repository(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", value):
        raise ValueError("expected a GitHub repository as owner/name")
    return value


class TicketNotify(_Section):
    """[notify.ticket]: a GitHub issue per incident."""

    kind: Literal["github"] = "github"
    api_url: HttpUrl = "https://api.github.com"
    repository: Annotated[str, AfterValidator(_repository)]
    token_env: EnvVar
    labels: list[str] = Field(default=["incident"])


SETTINGS = TicketNotify


def build(config: TicketNotify, secret: SecretLookup) -> GitHubTicketNotifier:
    token = secret(config.token_env)
    if not token.strip() or any(c.isspace() for c in token):
        raise ConfigError("token_env", config.token_env,
                          f"the value of {config.token_env} is not a GitHub token (it is "
                          "empty or holds whitespace)")
    return GitHubTicketNotifier(config.api_url, config.repository, token, config.labels,
                                token_setting=f"[notify.ticket] token_env "
                                              f"({config.token_env})")


# What a notifier of this module takes, without building one (a command that only
# enqueues needs no secret).
NOTIFIER = GitHubTicketNotifier
