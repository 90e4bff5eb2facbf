"""Run checks' observe functions concurrently, each bounded by a wall-clock limit.

Daemon threads, not a ThreadPoolExecutor: the executor joins its threads at
interpreter exit, so one probe stuck in a client without a timeout would hold
the whole run hostage. A stuck observation is abandoned, never waited on past
its limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class ObservationTimeout(Exception):
    """The observation outlived its wall-clock limit: slow answers added up past it, or a
    probe ignored its deadline."""


class BudgetExhausted(Exception):
    """The run's budget ran out before this observation could finish."""


class Observation:
    def __init__(self, fn: Callable[[], Any], limit: float) -> None:
        self._fn, self.limit = fn, limit
        self._started = threading.Event()
        self._done = threading.Event()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._slots: threading.Semaphore | None = None
        self._slot_lock = threading.Lock()

    def _run(self, slots: threading.Semaphore) -> None:
        slots.acquire()
        self._slots = slots
        self.started_at = time.monotonic()
        self._started.set()
        try:
            self._result = self._fn()
        except BaseException as exc:  # handed to the waiting test, whatever it is
            self._error = exc
        finally:
            self.finished_at = time.monotonic()
            self._done.set()
            self._release_slot()

    def _release_slot(self) -> None:
        """Once: when the observation ends, or when it is abandoned (a stuck probe must not
        hold a slot the checks behind it wait for)."""
        with self._slot_lock:
            slots, self._slots = self._slots, None
        if slots is not None:
            slots.release()

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.monotonic()) - self.started_at

    def wait(self, budget_deadline: float | None) -> Any:
        """The observed value; re-raises the observation's error. ``budget_deadline`` is a
        time.monotonic() instant past which nothing more is waited for."""

        def left() -> float | None:
            return None if budget_deadline is None else max(0.0, budget_deadline - time.monotonic())

        if not self._started.wait(left()):
            raise BudgetExhausted("not run: budget exhausted before this check could start")
        assert self.started_at is not None
        until_limit = max(0.0, self.started_at + self.limit - time.monotonic())
        budget_left = left()
        timeout = until_limit if budget_left is None else min(until_limit, budget_left)
        if not self._done.wait(timeout):
            if budget_left is not None and budget_left < until_limit:
                raise BudgetExhausted("not run: budget exhausted while this check was running")
            self._release_slot()
            raise ObservationTimeout(
                f"the check's probes took longer than its {self.limit:g} s limit "
                "(deadlines.check): slow answers added up, or a probe ignored its deadline")
        if self._error is not None:
            raise self._error
        return self._result


class Observer:
    """At most ``concurrency`` observations run at once; the rest queue for a slot."""

    def __init__(self, concurrency: int) -> None:
        self._slots = threading.Semaphore(max(1, concurrency))

    def start(self, fn: Callable[[], Any], limit: float, name: str = "observe") -> Observation:
        observation = Observation(fn, limit)
        threading.Thread(target=observation._run, args=(self._slots,), name=name,
                         daemon=True).start()
        return observation
