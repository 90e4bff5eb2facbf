"""The one way a call runs under a deadline: on a daemon thread, waited for at most so long,
then abandoned.

Daemon threads, not a ThreadPoolExecutor: the executor joins its threads at interpreter
exit, so one call stuck in a client without a timeout would hold the whole run hostage. A
call that overruns is never waited on past its deadline; whatever it returns later goes to
``discard`` (to close a connection), whatever it raises then is dropped.

Used by the probes (``probes.bounded``), the checks' observations and ``gather``
(judges/), and posting (incidents/): plain threading, nothing else, so every layer above
may use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Running(Generic[T]):
    """``fn()`` running on a daemon thread (see ``start``)."""

    def __init__(self, fn: Callable[[], T], discard: Callable[[T], None] | None) -> None:
        self._fn, self._discard = fn, discard
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            value = self._fn()
        except BaseException as exc:  # handed to the waiting caller, whatever it is
            with self._lock:
                self._error = exc
                self._done.set()
            return
        with self._lock:
            if self._abandoned:
                if self._discard is not None:
                    self._discard(value)
                return
            self._value = value
            self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """Whether the call finished within ``timeout`` seconds (None: however long)."""
        return self._done.wait(None if timeout is None else max(0.0, timeout))

    def abandon(self) -> bool:
        """Leave the call behind if it is still running (True): a value it returns later goes
        to ``discard``. False when it has finished after all: its outcome is there to take."""
        with self._lock:
            if self._done.is_set():
                return False
            self._abandoned = True
            return True

    def outcome(self) -> T | BaseException:
        """What the finished call returned, or the exception it raised."""
        assert self._done.is_set(), "the call has not finished"
        return self._error if self._error is not None else self._value  # type: ignore[return-value]

    def result(self) -> T:
        """What the finished call returned; raises what it raised, in the caller's thread."""
        assert self._done.is_set(), "the call has not finished"
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def start(fn: Callable[[], T], name: str, *,
          discard: Callable[[T], None] | None = None) -> Running[T]:
    """``fn()`` started on a daemon thread called ``name`` (the process never waits for it
    at exit): ``wait`` for it with a deadline, ``abandon`` it past that."""
    running = Running(fn, discard)
    threading.Thread(target=running._run, name=name, daemon=True).start()
    return running


def within(fn: Callable[[], Any], limit: float, name: str) -> tuple[bool, Any]:
    """``fn()`` on a daemon thread for at most ``limit`` seconds: (True, its value or the
    exception it raised, for the caller to tell apart), or (False, None) when it overran and
    was left behind."""
    running = start(fn, name)
    if not running.wait(limit) and running.abandon():
        return False, None
    return True, running.outcome()
