"""Reading auth-service's log lines as login attempts: plain logic, no I/O."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoginActivity:
    successes: int = 0
    failures: int = 0
    by_source: dict[str, int] = field(default_factory=dict)  # failures per source, most first
    last_failures: list[str] = field(default_factory=list)

    @property
    def failed_share(self) -> float:
        attempts = self.successes + self.failures
        return self.failures / attempts if attempts else 0.0

    def top_source(self) -> tuple[str, int] | None:
        return next(iter(self.by_source.items()), None)


def login_activity(lines: Iterable[str], success: str, failure: str, source: str,
                   keep_last: int = 20) -> LoginActivity:
    """Count successful and failed logins; group failures by the ``source`` pattern's first
    group. Lines matching neither are other traffic and do not count."""
    ok, bad, src = re.compile(success), re.compile(failure), re.compile(source)
    successes, sources, last = 0, Counter[str](), []
    failures = 0
    for line in lines:
        if bad.search(line):
            failures += 1
            found = src.search(line)
            sources[found.group(1) if found and found.groups() else "unknown"] += 1
            last.append(line.rstrip()[:300])
            if len(last) > keep_last:
                last.pop(0)
        elif ok.search(line):
            successes += 1
    return LoginActivity(successes, failures, dict(sources.most_common()), last)
