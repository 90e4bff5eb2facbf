"""The one way a call runs under a deadline (probes.deadline): a daemon thread, waited for
at most so long, then abandoned; what it returns late is discarded, what it raises in time
is raised in the caller's thread."""

from __future__ import annotations

import threading
import time

import pytest

from unibazzar_health.probes import DeadlineExceeded, bounded
from unibazzar_health.probes.deadline import start, within


def test_a_call_in_time_gives_its_value_or_raises_its_error_in_the_callers_thread() -> None:
    assert bounded(lambda: 42, 1.0, "redis", "127.0.0.1:6379") == 42
    with pytest.raises(KeyError, match="missing"):
        bounded(lambda: {}["missing"], 1.0, "redis", "127.0.0.1:6379")


def test_a_stuck_call_is_abandoned_at_its_deadline_and_its_late_value_discarded() -> None:
    release, discarded = threading.Event(), []

    def stuck() -> str:
        release.wait(5)
        return "connection"

    began = time.monotonic()
    with pytest.raises(DeadlineExceeded) as raised:
        bounded(stuck, 0.1, "postgresql", "db:5432/auth", discard=discarded.append)
    assert time.monotonic() - began < 1
    assert str(raised.value) == ("postgresql at db:5432/auth: did not answer within the "
                                 "deadline (deadline 0.1 s)")
    release.set()
    for _ in range(100):
        if discarded:
            break
        time.sleep(0.01)
    assert discarded == ["connection"]


def test_its_threads_are_daemons_the_process_never_waits_for() -> None:
    release = threading.Event()
    running = start(lambda: release.wait(5), "stuck-probe")
    stuck = [t for t in threading.enumerate() if t.name == "stuck-probe"]
    assert stuck and all(t.daemon for t in stuck)
    assert not running.wait(0.01) and running.abandon()
    release.set()


def test_within_tells_a_finished_call_from_one_left_behind() -> None:
    assert within(lambda: "sent", 1.0, "post") == (True, "sent")
    finished, error = within(lambda: 1 / 0, 1.0, "post")
    assert finished and isinstance(error, ZeroDivisionError)
    assert within(lambda: time.sleep(2), 0.05, "post") == (False, None)
