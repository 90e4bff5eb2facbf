"""A service's log file on this host ([error_logs] files): its tail read within the deadline,
whole lines only, and what a cut tail means for the window before."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from unibazzar_health.config.platform import ErrorLogs
from unibazzar_health.judges.errorlogs import error_activity
from unibazzar_health.probes import DeadlineExceeded, FailureKind, ProbeError, logfiles

PATTERN = ErrorLogs().pattern
UNTIL = datetime(2026, 11, 27, 14, 0, tzinfo=UTC).timestamp()


def stamped(minutes_before: float, text: str) -> str:
    moment = datetime.fromtimestamp(UNTIL - minutes_before * 60, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ ") + text + "\n"


def test_the_whole_file_when_it_fits(tmp_path: Path) -> None:
    log = tmp_path / "order-service.log"
    log.write_text("first\nsecond\n")
    read = logfiles.tail(str(log), 4096, 1.0)
    assert (read.text, read.size, read.truncated) == ("first\nsecond\n", 13, False)


def test_only_the_last_bytes_and_only_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "order-service.log"
    log.write_text("".join(f"line {n:04d}\n" for n in range(1000)))  # 10 bytes a line
    read = logfiles.tail(str(log), 35, 1.0)
    # The 35 bytes start mid-line: that partial line is dropped.
    assert read.text == "line 0997\nline 0998\nline 0999\n" and read.truncated


@pytest.mark.parametrize(("make", "kind", "words"), [
    (lambda p: None, FailureKind.MISSING_OBJECT, "no such file"),
    (lambda p: p.mkdir(), FailureKind.UNEXPECTED_ANSWER, "is a directory"),
])
def test_a_file_that_cannot_be_read_is_a_probe_error(tmp_path: Path, make, kind, words) -> None:
    path = tmp_path / "ai-service.log"
    make(path)
    with pytest.raises(ProbeError) as raised:
        logfiles.tail(str(path), 4096, 1.0)
    assert raised.value.kind == kind and words in str(raised.value)
    assert raised.value.backend == "logs" and raised.value.target == str(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "auth-service.log"
    path.write_text("x\n")
    path.chmod(0)
    with pytest.raises(ProbeError) as raised:
        logfiles.tail(str(path), 4096, 1.0)
    assert raised.value.kind == FailureKind.AUTH_REJECTED


def test_a_read_that_hangs_is_abandoned_at_the_deadline(tmp_path: Path) -> None:
    """A FIFO with no writer blocks open() for ever, as a hung NFS log volume would."""
    fifo = tmp_path / "listing-service.log"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        logfiles.tail(str(fifo), 4096, 0.5)
    assert time.monotonic() - started < 1.5
    # Let the abandoned reader go.
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_cut_tail_that_starts_inside_the_window_before_is_partial() -> None:
    lines = [stamped(7, "ERROR a"), stamped(2, "ERROR b")]
    assert not error_activity(lines, PATTERN, UNTIL, 5).before_partial  # not cut
    assert error_activity(lines, PATTERN, UNTIL, 5, cut=True).before_partial  # starts at -7
    older = [stamped(11, "INFO before both windows"), *lines]
    assert not error_activity(older, PATTERN, UNTIL, 5, cut=True).before_partial
