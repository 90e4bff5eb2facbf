"""Run checks' observe functions concurrently, each bounded by a wall-clock limit.

Each runs as probes.deadline runs a call (a daemon thread, so one probe stuck in a client
without a timeout cannot hold the whole run hostage): a stuck observation is abandoned,
never waited on past its limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from unibazzar_health.probes.deadline import start


class ObservationTimeout(Exception):
    """The observation outlived its wall-clock limit: slow answers added up past it, or a
    probe ignored its deadline."""


class BudgetExhausted(Exception):
    """The run's budget ran out before this observation could finish."""


class Observation:
    """One check's observation: ``fn`` run once a slot is free, then waited for at most
    ``limit`` seconds from its start."""

    def __init__(self, fn: Callable[[], Any], limit: float, slots: threading.Semaphore,
                 name: str = "observe") -> None:
        self._fn, self.limit = fn, limit
        self._started = threading.Event()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._slots: threading.Semaphore | None = None
        self._slot_lock = threading.Lock()
        self._running = start(partial(self._run, slots), name)

    def _run(self, slots: threading.Semaphore) -> Any:
        slots.acquire()
        self._slots = slots
        self.started_at = time.monotonic()
        self._started.set()
        try:
            return self._fn()
        finally:
            self.finished_at = time.monotonic()
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
        if not self._running.wait(timeout):
            if budget_left is not None and budget_left < until_limit:
                raise BudgetExhausted("not run: budget exhausted while this check was running")
            if self._running.abandon():
                self._release_slot()
                raise ObservationTimeout(
                    f"the check's probes took longer than its {self.limit:g} s limit "
                    "(deadlines.check): slow answers added up, or a probe ignored its "
                    "deadline")
        return self._running.result()


class Observer:
    """At most ``concurrency`` observations run at once; the rest queue for a slot."""

    def __init__(self, concurrency: int) -> None:
        self._slots = threading.Semaphore(max(1, concurrency))

    def start(self, fn: Callable[[], Any], limit: float, name: str = "observe") -> Observation:
        return Observation(fn, limit, self._slots, name)
