"""Login attempts read from log lines."""

from __future__ import annotations

from unibazzar_health.authlogs import login_activity
from unibazzar_health.settings import AuthLogs

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
