"""Probes: thin layers over the real clients, one module per backend.

A probe measures and returns plain values, or raises ProbeError. It knows
nothing of pytest, severities or the runbook, and every call is bounded by the
deadline it is given: no client's default timeout is trusted, no retries hide.
Modules are imported by the checks that need them, never here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


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
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]
