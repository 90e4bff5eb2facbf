"""Error lines read from pod logs: their times, windows, signatures and masked examples;
credentials masked in any log excerpt."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from unibazzar_health.config.platform import ErrorLogs
from unibazzar_health.config.redaction import mask_credentials
from unibazzar_health.judges.errorlogs import error_activity, signature, split_time

PATTERN = ErrorLogs().pattern
UNTIL = datetime(2026, 11, 27, 14, 0, tzinfo=UTC).timestamp()


def at(minutes_before: float, line: str) -> str:
    """A line as `kubectl logs --timestamps` gives it, that many minutes before UNTIL."""
    moment = datetime.fromtimestamp(UNTIL - minutes_before * 60, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z " + line


def test_a_line_is_timed_by_the_kubelet_else_by_its_own_stamp() -> None:
    moment, line = split_time("2026-11-27T13:39:35.983000000Z 2026-11-27 13:39:35,983 ERROR x")
    assert moment == datetime(2026, 11, 27, 13, 39, 35, 983000, tzinfo=UTC).timestamp()
    assert line == "2026-11-27 13:39:35,983 ERROR x"
    moment, line = split_time('2026-11-27T13:39:35+00:00 {"level": "error"}')
    assert moment == datetime(2026, 11, 27, 13, 39, 35, tzinfo=UTC).timestamp()
    assert split_time("2026-11-27T13:39:35Z level=error msg=x")[0] is not None
    assert split_time("  File \"app.py\", line 3")[0] is None


@pytest.mark.parametrize(("line", "expected"), [
    ("2026-11-27 13:39:35,983 ERROR listing-service listing read failed: ClientError",
     "ERROR listing-service listing read failed: ClientError"),
    ("ERROR saga saga-8f3a9c2e1b stuck for 912 s since 2026-11-27T13:00:00Z (order 4711)",
     "ERROR saga saga-<hex> stuck for <n> s since <time> (order <n>)"),
    ("ERROR request 6f1c0a7e-1b2d-4c3e-9f00-123456789abc from 10.0.4.17:53412 for a@b.example",
     "ERROR request <uuid> from <ip> for <email>"),
    ("ERROR bad header token=eyJhbGciOi.eyJzdWIi.c2ln at 0x7f3a",
     "ERROR bad header token=*** at <hex>"),
])
def test_a_signature_is_the_kind_of_error_whatever_varies(line: str, expected: str) -> None:
    assert signature(line) == expected


def test_errors_are_counted_per_window_ending_at_the_runs_start() -> None:
    lines = [
        at(12, "ERROR too old: outside both windows"),
        at(8, "ERROR listing read failed for listing-0a1b2c3d"),  # the window before
        at(4, "INFO listing created"),
        at(4, "ERROR listing read failed for listing-9f8e7d6c"),
        "Traceback (most recent call last):",  # untimed: follows the line before
        at(3, "ERROR listing read failed for listing-11aa22bb password=hunter2"),
        at(1, '{"level": "error", "msg": "cache write failed"}'),
        at(-1, "ERROR logged after the run started: the next run's"),
    ]
    seen = error_activity(lines, PATTERN, until=UNTIL, window_minutes=5, top=5, pods=2)
    assert (seen.errors, seen.previous_errors, seen.lines, seen.pods) == (3, 1, 5, 2)
    assert seen.rate == 0.6 and seen.previous_rate == 0.2
    assert seen.until == "2026-11-27T14:00:00+00:00"
    assert [(s.signature, s.count) for s in seen.signatures] == [
        ("ERROR listing read failed for listing-<hex>", 1),
        ("ERROR listing read failed for listing-<hex> password=***", 1),
        ('{"level": "error", "msg": "cache write failed"}', 1)]
    assert seen.signatures[1].example == ("ERROR listing read failed for listing-11aa22bb "
                                          "password=***")


def test_the_top_signatures_only_most_frequent_first() -> None:
    lines = [at(1, f"ERROR kind {kind} failed") for kind in "aabbbc"]
    seen = error_activity(lines, PATTERN, until=UNTIL, window_minutes=5, top=2)
    assert [(s.signature, s.count) for s in seen.signatures] == [
        ("ERROR kind b failed", 3), ("ERROR kind a failed", 2)]
    assert seen.errors == 6


@pytest.mark.parametrize(("text", "masked"), [
    ("login failed password=hunter2 user=x", "login failed password=*** user=x"),
    ('{"token": "abc123", "x": 1}', '{"token": "***", "x": 1}'),
    ("(payment token=tok_1secret) retried", "(payment token=***) retried"),
    ("password=a]b)c", "password=***"),
    ("Authorization: Bearer abcdefghijkl", "Authorization: Bearer ***"),
    ("jwt eyJhbGciOi.eyJzdWIi.sig ok", "jwt *** ok"),
    ("charging with sk_live_4eC39HqLyjWDarjtT1zdp7dc", "charging with ***"),
    ("reading s3 as AKIAIOSFODNN7EXAMPLE", "reading s3 as ***"),
    ("connecting to postgres://app:pw@db:5432/orders", "connecting to postgres://app:***@db:5432/orders"),
    ("token rejected: InvalidSignatureError", "token rejected: InvalidSignatureError"),
])
def test_credentials_in_a_log_line_are_masked(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked
