"""Probes: thin layers over the real clients, one module per backend.

A probe measures and returns plain values, or raises ProbeError. It knows
nothing of pytest, severities or the runbook, and every call is bounded by the
deadline it is given: no client's default timeout is trusted, no retries hide.
Modules are imported by the checks that need them, never here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class ProbeError(Exception):
    """The backend gave no usable answer: unreachable, refused, timed out or an error."""

    def __init__(self, backend: str, target: str, problem: str, deadline: float | None = None):
        self.backend, self.target, self.problem, self.deadline = backend, target, problem, deadline
        bound = f" (deadline {deadline:g} s)" if deadline is not None else ""
        super().__init__(f"{backend} at {target}: {problem}{bound}")


class DeadlineExceeded(ProbeError):
    """The backend did not answer within the probe's deadline."""

    def __init__(self, backend: str, target: str, deadline: float, doing: str = "answer"):
        super().__init__(backend, target, f"did not {doing} within the deadline", deadline)


def bounded(fn: Callable[[], T], deadline: float, backend: str, target: str, *,
            discard: Callable[[T], None] | None = None) -> T:
    """``fn()``, waited for at most ``deadline`` seconds, for a client whose own timeouts
    cannot express the deadline (or do not cover every step).

    ``fn`` runs on a daemon thread (the process never waits for it at exit); past the
    deadline DeadlineExceeded is raised here and the thread is abandoned: a result it
    produces later goes to ``discard`` (to close a connection), an exception is dropped.
    """
    lock = threading.Lock()
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            result: Any = fn()
            failed = False
        except BaseException as exc:  # re-raised in the caller's thread
            result, failed = exc, True
        with lock:
            if outcome.get("abandoned"):
                if discard is not None and not failed:
                    discard(result)
                return
            outcome["result"], outcome["failed"] = result, failed
        done.set()

    threading.Thread(target=run, name=f"{backend}-probe", daemon=True).start()
    done.wait(deadline)
    with lock:
        if "result" not in outcome:
            outcome["abandoned"] = True
            raise DeadlineExceeded(backend, target, deadline)
    if outcome["failed"]:
        raise outcome["result"]
    return outcome["result"]  # type: ignore[no-any-return]


class Stopwatch:
    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def ms(self) -> float:
        return round((time.perf_counter() - self._start) * 1000, 2)


@contextmanager
def timed() -> Iterator[Stopwatch]:
    yield Stopwatch()


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: no interpolation, so the value was really observed."""
    import math

    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
