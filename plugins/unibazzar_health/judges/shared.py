"""Measurements shared by the checks of one run: made once, read by every check that judges
them, so two checks never disagree because each sampled at its own moment (connection usage
read at 44/50 by one check and 46/50 by the next).

Per process: under xdist the checks of one service run in one worker (distribution.py), and
the checks that share a measurement belong to one service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class _Cell:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SharedObservations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cells: dict[Hashable, _Cell] = {}

    def get(self, key: Hashable, measure: Callable[[], T]) -> T:
        """``measure()``'s value, measured by the first check to ask; the others wait for it.
        Their wait needs no bound of its own: it runs on an observation thread, which the
        observer abandons at the check's limit, and ``measure`` is bounded by its probes'."""
        with self._lock:
            cell = self._cells.get(key)
            first = cell is None
            if cell is None:
                cell = self._cells[key] = _Cell()
        if first:
            try:
                cell.value = measure()
            except BaseException as exc:  # every check that shares it sees the same failure
                cell.error = exc
            finally:
                cell.done.set()
        else:
            cell.done.wait()
        if cell.error is not None:
            raise cell.error
        return cell.value  # type: ignore[no-any-return]

    def peek(self, key: Hashable, timeout: float) -> tuple[bool, Any]:
        """(True, the value or the exception it raised) if some check measured ``key`` this
        run (waiting at most ``timeout`` for it to finish: the caller may be pytest's own
        thread, which must never hang on a stuck probe), else (False, None): never measures."""
        with self._lock:
            cell = self._cells.get(key)
        if cell is None:
            return False, None
        if not cell.done.wait(timeout):
            return True, TimeoutError(f"still being read after {timeout:g} s")
        return True, (cell.error if cell.error is not None else cell.value)
