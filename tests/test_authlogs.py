"""Login attempts read from log lines."""

from __future__ import annotations

from unibazzar_health.config.platform import AuthLogs
from unibazzar_health.judges.authlogs import login_activity

DEFAULTS = AuthLogs()


def read(lines: list[str]):  # type: ignore[no-untyped-def]
    return login_activity(lines, DEFAULTS.success, DEFAULTS.failure, DEFAULTS.source,
                          keep_last=2)


def test_successes_failures_and_sources_are_counted() -> None:
    bad = "WARNING auth-service login failed: bad credentials source="
    seen = read([
        "2026-11-27 02:50:31,884 INFO auth-service login ok",
        f"2026-11-27 02:50:32,001 {bad}10.0.0.7",
        f"2026-11-27 02:50:32,002 {bad}10.0.0.7",
        f"2026-11-27 02:50:32,003 {bad}10.0.0.9",
        "2026-11-27 02:50:32,004 WARNING auth-service token rejected: InvalidSignatureError",
        "2026-11-27 02:50:32,005 ERROR auth-service login failed: database unavailable: X",
    ])
    assert (seen.successes, seen.failures) == (1, 3)
    assert seen.by_source == {"10.0.0.7": 2, "10.0.0.9": 1}
    assert seen.top_source() == ("10.0.0.7", 2)
    assert seen.failed_share == 0.75
    assert [line[-9:] for line in seen.last_failures] == ["=10.0.0.7", "=10.0.0.9"]


def test_no_attempts_is_no_share() -> None:
    seen = read(["something else entirely"])
    assert (seen.successes, seen.failures, seen.failed_share, seen.top_source()) == (
        0, 0, 0.0, None)


def test_blocked_attempts_and_the_canarys_logins_are_counted_per_source() -> None:
    """A login the rate limiter refused is a failed one, counted as blocked for its source;
    the canary's successful logins are counted per source, whatever the email's case."""
    stamp = "2026-11-27 02:50:31,429"  # milliseconds 429: no rate limiter's HTTP 429
    bad = f"{stamp} WARNING auth-service login failed: bad credentials source="
    limited = f"{stamp} WARNING auth-service login blocked: rate limited source="
    ok = f"{stamp} INFO auth-service login ok"
    seen = login_activity(
        [f"{bad}10.6.6.6", f"{limited}10.6.6.6", f"{limited}10.6.6.6", f"{bad}10.0.0.9",
         ok, f"{ok} email=canary@unibazzar.test source=10.0.0.5",
         f"{ok} email=Canary@Unibazzar.test source=10.9.9.9",
         f"{ok} email=someone@unibazzar.test source=10.9.9.9",
         f"{stamp} WARNING auth-service login failed: HTTP 429 source=10.7.7.7"],
        DEFAULTS.success, DEFAULTS.failure, DEFAULTS.source, blocked=DEFAULTS.blocked,
        email=DEFAULTS.email, canary="canary@unibazzar.test")
    assert (seen.successes, seen.failures) == (4, 5)
    assert seen.by_source == {"10.6.6.6": 3, "10.0.0.9": 1, "10.7.7.7": 1}
    assert seen.blocked_by_source == {"10.6.6.6": 2, "10.7.7.7": 1}
    assert seen.canary_logins == {"10.0.0.5": 1, "10.9.9.9": 1}


def test_without_a_canary_or_a_blocked_pattern_nothing_of_them_is_counted() -> None:
    seen = read(["2026-11-27 02:50:31,884 INFO auth-service login ok email=a@b source=x",
                 "2026-11-27 02:50:31,885 WARNING auth-service login blocked: rate limited"])
    assert (seen.successes, seen.failures, seen.blocked_by_source, seen.canary_logins) == (
        1, 0, {}, {})
