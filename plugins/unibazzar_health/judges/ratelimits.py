"""The rate limits a service states in its answers' headers: plain logic, no I/O.

Three spellings are in use: IETF's structured ``RateLimit-Policy: "login";q=10;w=60`` with
``RateLimit: "login";r=7;t=50`` (draft-ietf-httpapi-ratelimit-headers, -08 on), its earlier
drafts' ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` (a policy then
read ``10;w=60``), and the de-facto ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_INTEGER = re.compile(r"\s*(\d+)")


@dataclass(frozen=True)
class RateLimitPolicy:
    name: str  # the policy's name, "" where the header names none
    quota: int  # requests allowed...
    window_s: float | None  # ...per this many seconds (None: the header does not say)

    def describe(self) -> str:
        named = f"{self.name}: " if self.name else ""
        per = f" per {self.window_s:g} s" if self.window_s is not None else ""
        return f"{named}{self.quota}{per}"


@dataclass(frozen=True)
class StatedLimits:
    policies: tuple[RateLimitPolicy, ...]
    remaining: int | None  # what is left of the tightest quota, where stated

    @property
    def tightest(self) -> RateLimitPolicy | None:
        return min(self.policies, key=lambda p: p.quota, default=None)


def _items(value: str) -> list[tuple[str, dict[str, str]]]:
    """A structured-field list, loosely: items split on commas, parameters on semicolons;
    each item's first member and its parameters."""
    items = []
    for item in value.split(","):
        first, *params = (part.strip() for part in item.split(";"))
        if not first and not params:
            continue
        values = {}
        for param in params:
            key, _, raw = param.partition("=")
            values[key.strip().lower()] = raw.strip().strip('"')
        items.append((first.strip('"'), values))
    return items


def _integer(text: str | None) -> int | None:
    found = _INTEGER.match(text or "")
    return int(found.group(1)) if found else None


def _seconds(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def stated_limits(headers: Mapping[str, str]) -> StatedLimits | None:
    """The limits the headers state (names in lower case); None where they state none."""
    policies: list[RateLimitPolicy] = []
    for first, params in _items(headers.get("ratelimit-policy", "")):
        quota = _integer(params.get("q")) if "q" in params else _integer(first)
        if quota is not None:
            name = "" if first.isdigit() else first
            policies.append(RateLimitPolicy(name, quota, _seconds(params.get("w"))))
    if not policies:
        for name in ("ratelimit-limit", "x-ratelimit-limit"):
            quota = _integer(headers.get(name))
            if quota is not None:
                policies.append(RateLimitPolicy("", quota, None))
                break
    if not policies:
        return None
    remaining = None
    current = _items(headers.get("ratelimit", ""))
    if current:
        remaining = _integer(current[0][1].get("r"))
    for name in ("ratelimit-remaining", "x-ratelimit-remaining"):
        if remaining is None:
            remaining = _integer(headers.get(name))
    return StatedLimits(tuple(policies), remaining)
