"""The rate limits a service states in its answers' headers, in the three spellings in use."""

from __future__ import annotations

import pytest

from unibazzar_health.judges.ratelimits import RateLimitPolicy, StatedLimits, stated_limits


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"ratelimit-policy": '"per-source";q=1000;w=10, "per-account";q=20;w=10',
                  "ratelimit": '"per-account";r=17;t=10'},
                 StatedLimits((RateLimitPolicy("per-source", 1000, 10.0),
                               RateLimitPolicy("per-account", 20, 10.0)), 17), id="ietf-08"),
    pytest.param({"ratelimit-limit": "10", "ratelimit-remaining": "7", "ratelimit-reset": "50",
                  "ratelimit-policy": "10;w=60, 1000;w=3600"},
                 StatedLimits((RateLimitPolicy("", 10, 60.0), RateLimitPolicy("", 1000, 3600.0)),
                              7), id="ietf-early-drafts"),
    pytest.param({"ratelimit-limit": "10", "ratelimit-remaining": "0"},
                 StatedLimits((RateLimitPolicy("", 10, None),), 0), id="ietf-limit-only"),
    pytest.param({"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59"},
                 StatedLimits((RateLimitPolicy("", 60, None),), 59), id="x-ratelimit"),
    pytest.param({}, None, id="none"),
    pytest.param({"retry-after": "10"}, None, id="retry-after-alone"),
    pytest.param({"x-ratelimit-limit": "unlimited"}, None, id="not-a-number"),
])
def test_stated_limits(headers: dict[str, str], expected: StatedLimits | None) -> None:
    assert stated_limits(headers) == expected


def test_the_tightest_policy_and_how_it_reads() -> None:
    stated = stated_limits({"ratelimit-policy": '"per-source";q=1000;w=10, "login";q=2;w=10'})
    assert stated is not None and stated.tightest == RateLimitPolicy("login", 2, 10.0)
    assert stated.tightest.describe() == "login: 2 per 10 s"
    assert RateLimitPolicy("", 60, None).describe() == "60"
