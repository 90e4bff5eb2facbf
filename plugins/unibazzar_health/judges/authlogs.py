"""Reading auth-service's log lines as login attempts: plain logic, no I/O."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoginActivity:
    successes: int = 0
    failures: int = 0  # blocked attempts included: a login the limiter refused failed too
    by_source: dict[str, int] = field(default_factory=dict)  # failures per source, most first
    last_failures: list[str] = field(default_factory=list)
    # Of by_source's failures, those the rate limiter refused (sources with none left out).
    blocked_by_source: dict[str, int] = field(default_factory=dict)
    # The canary account's successful logins per source (only where the lines carry the
    # account: the ``email`` pattern).
    canary_logins: dict[str, int] = field(default_factory=dict)

    @property
    def failed_share(self) -> float:
        attempts = self.successes + self.failures
        return self.failures / attempts if attempts else 0.0

    def top_source(self) -> tuple[str, int] | None:
        return next(iter(self.by_source.items()), None)


def _group(pattern: re.Pattern[str], line: str, default: str) -> str:
    found = pattern.search(line)
    return found.group(1) if found and found.groups() else default


def login_activity(lines: Iterable[str], success: str, failure: str, source: str,
                   keep_last: int = 20, *, blocked: str | None = None,
                   email: str | None = None, canary: str | None = None,
                   ignore: str | None = None) -> LoginActivity:
    """Count successful and failed logins; group failures by the ``source`` pattern's first
    group. A line matching ``blocked`` is a failed attempt the rate limiter refused. With
    ``canary``, its successful logins are counted per source (the ``email`` pattern's first
    group names the account). Lines of the account ``ignore`` (our own rate-limit probe's:
    its burst is no attack) and lines matching none do not count."""
    ok, bad, src = re.compile(success), re.compile(failure), re.compile(source)
    limited = re.compile(blocked) if blocked else None
    account = re.compile(email) if email and canary else None
    ours = re.compile(email) if email and ignore else None
    successes, sources, last = 0, Counter[str](), []
    refused, canary_sources = Counter[str](), Counter[str]()
    failures = 0
    for line in lines:
        if ours and ignore and _group(ours, line, "").lower() == ignore.lower():
            continue
        was_blocked = bool(limited and limited.search(line))
        if was_blocked or bad.search(line):
            failures += 1
            who = _group(src, line, "unknown")
            sources[who] += 1
            if was_blocked:
                refused[who] += 1
            last.append(line.rstrip()[:300])
            if len(last) > keep_last:
                last.pop(0)
        elif ok.search(line):
            successes += 1
            if account and canary and _group(account, line, "").lower() == canary.lower():
                canary_sources[_group(src, line, "unknown")] += 1
    return LoginActivity(successes, failures, dict(sources.most_common()), last,
                         dict(refused.most_common()), dict(canary_sources.most_common()))
