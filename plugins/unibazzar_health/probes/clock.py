"""Two clocks for one round trip: ours, and this host's network stack's.

A round trip timed on our clock ends when our thread has the answer. On a busy probe host
(other processes on every core, a CI runner shared with a build, several runs at once) that
thread waits for a core or for the interpreter long after the answer arrived: a healthy
loopback Redis read PING p95 60-117 ms that way, while it answered in 0.2 ms. The kernel
sees the answer arrive whatever our thread is doing, so what the backend (and the path to
it) took is read from it, and the rest is our host's stall:

- where we read the socket ourselves (Redis's PING and GET), the kernel's timestamps of the
  request leaving and the answer arriving (SO_TIMESTAMPING), to the microsecond; over TLS,
  whose records OpenSSL reads, TCP_INFO's last data sent and received, in kernel ticks;
- where a client reads it (requests), TCP_INFO once the answer is in: how long ago the
  connection's last data arrived, in the kernel's ticks (1-10 ms), taken off our clock.

A control measured beside the round trip (a sleep, a loopback echo) does not do this: a
stall strikes one wait and not the next, so under load the control and the round trip are
independent draws (a 93 ms PING beside a 10 ms control; docs/performance.md).

Where the kernel cannot say (not Linux, no socket to ask), ``answered_ms`` is None and the
time judged is our clock's, as the evidence says.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from unibazzar_health.probes import percentile

# Linux's values; Python's socket module names neither.
SO_TIMESTAMPING = 37
# SOF_TIMESTAMPING_: TX_SOFTWARE (leaving the driver), TX_SCHED (entering the queue, where a
# driver stamps nothing), RX_SOFTWARE, SOFTWARE (report them), OPT_TSONLY (no payload back).
_STAMPS = (1 << 1) | (1 << 8) | (1 << 3) | (1 << 4) | (1 << 11)
_ANCILLARY = 512  # room for struct scm_timestamping (three timespecs) and the error's header
# struct tcp_info: tcpi_last_data_sent and tcpi_last_data_recv, milliseconds ago.
_LAST_DATA_SENT, _LAST_DATA_RECV = 44, 52


@dataclass(frozen=True)
class Timing:
    """One round trip on both clocks."""

    ms: float  # ours: from sending until our thread had the whole answer
    # Until the answer reached this host's network stack: what the backend and the path to it
    # took. None: the kernel could not say, and ``ms`` is all we know.
    answered_ms: float | None = None

    @property
    def judged_ms(self) -> float:
        return self.ms if self.answered_ms is None else self.answered_ms

    @property
    def stalled_ms(self) -> float:
        """Our host's share: the answer waited this long for our thread."""
        return 0.0 if self.answered_ms is None else round(self.ms - self.answered_ms, 3)


def _timing(ours_ns: int, answered_ns: int | None) -> Timing:
    """A round trip of ``ours_ns`` on our clock, ``answered_ns`` on the kernel's."""
    ours = round(ours_ns / 1e6, 3)
    if answered_ns is None:
        return Timing(ours)
    # Clamped: the clocks are read microseconds apart, and TCP_INFO counts in ticks.
    return Timing(ours, round(min(ours, max(0.0, answered_ns / 1e6)), 3))


@dataclass(frozen=True)
class Latency:
    """Round trips summarised on both clocks (nearest-rank percentiles)."""

    samples: int
    p50_ms: float  # as answered (our clock where the kernel could not say)
    p95_ms: float
    max_ms: float
    ours_p95_ms: float  # on our clock, as it was judged before
    stalled_max_ms: float  # our host's longest stall among them
    kernel_timed: bool  # every sample's arrival was read from the kernel

    @classmethod
    def of(cls, timings: Sequence[Timing]) -> Latency:
        judged = [t.judged_ms for t in timings]
        return cls(samples=len(timings), p50_ms=percentile(judged, 50),
                   p95_ms=percentile(judged, 95), max_ms=max(judged),
                   ours_p95_ms=percentile([t.ms for t in timings], 95),
                   stalled_max_ms=max(t.stalled_ms for t in timings),
                   kernel_timed=all(t.answered_ms is not None for t in timings))

    def said(self, who: str) -> str:
        """Which it was, in words for the evidence."""
        if not self.kernel_timed:
            return (f"{who} answered in {ms(self.p95_ms)} ms (p95) on our own clock only: "
                    "this host's kernel did not time the answers, so a stall of ours counts as "
                    f"{who}'s")
        return (f"{who} answered in {ms(self.p95_ms)} ms (p95, as this host's network stack "
                f"received it); our host stalled up to {ms(self.stalled_max_ms)} ms more "
                f"(our clock read p95 {ms(self.ours_p95_ms)} ms)")


def ms(value: float) -> str:
    """Milliseconds for a reader: tenths from 1 ms up, two significant digits below."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


# A stall shorter than this is not worth a word beside a budget (TCP_INFO counts in ticks).
NOTABLE_STALL_MS = 10.0


def stall_note(judged_ms: float, ours_ms: float | None) -> str:
    """For a finding on a time the kernel read: what our own clock said, where our host's
    stall was large enough to matter. Empty otherwise."""
    if ours_ms is None or ours_ms - judged_ms < NOTABLE_STALL_MS:
        return ""
    return f" as this host received it (our clock read {ours_ms:.0f} ms; our own stall left out)"


# ---- sockets we read ourselves: the kernel's timestamps ----------------------------------------
def stamp(sock: Any) -> bool:
    """Ask the kernel to timestamp what this socket sends and receives; False where it will
    not (not Linux, a TLS socket, whose records OpenSSL reads: TCP_INFO serves there)."""
    import ssl

    if sys.platform != "linux" or isinstance(sock, ssl.SSLSocket):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _STAMPS)
    except OSError:
        return False
    return True


def stop_stamping(sock: Any) -> None:
    """Timestamps off, and none left queued: a pending one would wake every later read of
    the socket's owner with nothing to read."""
    with suppress(OSError):  # a socket closed meanwhile has nothing left to clear
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            _sent_stamps(sock)
        finally:
            sock.settimeout(timeout)


def exchange(sock: Any, request: bytes, complete: Callable[[bytes], bool],
             stamped: bool) -> tuple[bytes, Timing]:
    """Send ``request`` and read until ``complete(answer)``, on both clocks; the socket's
    timeout bounds the wait (TimeoutError past it). ``stamped``: ``stamp(sock)`` said yes."""
    if stamped:
        return _stamped_exchange(sock, request, complete)
    started = time.perf_counter_ns()
    sock.sendall(request)
    answer = b""
    while not complete(answer):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        answer += data
    ours_ns = time.perf_counter_ns() - started
    ago = _tcp_ago(sock)
    # Sent and answered as the kernel saw them, in its ticks: stalls of ours on either side
    # of the round trip left out.
    return answer, _timing(ours_ns, None if ago is None else ago[0] - ago[1])


def _stamped_exchange(sock: Any, request: bytes,
                      complete: Callable[[bytes], bool]) -> tuple[bytes, Timing]:
    """The round trip from the kernel's send timestamp to its receive timestamp. The socket
    waits through our own poll, not Python's: Python polls before it sends (a stall of ours
    there would count as the backend's), and would spin on the error queue where the send
    timestamps come back."""
    import select

    timeout = sock.gettimeout()
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    sock.setblocking(False)
    try:
        started = time.perf_counter_ns()
        sent_at = time.time_ns()  # the kernel's timestamps are on the wall clock
        sock.sendall(request)  # a few bytes: into the send buffer at once
        answer, arrived, sent = b"", None, _sent_stamps(sock)
        while not complete(answer):
            wait = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            if not poller.poll(wait):
                raise TimeoutError("no answer within the socket's timeout")
            sent += _sent_stamps(sock)  # a send timestamp wakes the poll too
            try:
                data, ancillary, _, _ = sock.recvmsg(65536, _ANCILLARY)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError("the server closed the connection")
            arrived = _stamp_of(ancillary) or arrived
            answer += data
        ours_ns = time.perf_counter_ns() - started
        sent += _sent_stamps(sock)
    finally:
        sock.settimeout(timeout)
    # Our request's first transmission (a stamp from before it is an earlier send's); where
    # the kernel gave none, when we handed it over.
    left = min((s for s in sent if s >= sent_at), default=sent_at)
    return answer, _timing(ours_ns, None if arrived is None else arrived - left)


def _sent_stamps(sock: Any) -> list[int]:
    """The send timestamps waiting on the socket's error queue, taken off it."""
    stamps: list[int] = []
    while True:
        try:
            _, ancillary, _, _ = sock.recvmsg(0, _ANCILLARY, socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return stamps
        stamped = _stamp_of(ancillary)
        if stamped is not None:
            stamps.append(stamped)


def _stamp_of(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The software timestamp of struct scm_timestamping (its first timespec), in ns."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            return seconds * 1_000_000_000 + nanoseconds if seconds else None
    return None


def _tcp_ago(sock: Any) -> tuple[int, int] | None:
    """How long ago the connection last sent data and last received it, in ns (TCP_INFO,
    counted in kernel ticks)."""
    if sys.platform != "linux":
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < _LAST_DATA_RECV + 4:
        return None
    sent, received = (struct.unpack_from("I", info, at)[0]
                      for at in (_LAST_DATA_SENT, _LAST_DATA_RECV))
    return int(sent) * 1_000_000, int(received) * 1_000_000


# ---- sockets a client reads (requests) -------------------------------------------------------
class AnswerWatch:
    """Keeps hold of the connection a requests answer came on, to ask its kernel afterwards
    when the answer arrived: pass ``hooks=watch.hooks``, time the request, then call
    ``timing(ns)``. The connection is duplicated, not borrowed: requests may close its own
    as soon as the body is read."""

    def __init__(self) -> None:
        self._fd: int | None = None

    @property
    def hooks(self) -> dict[str, Callable[..., None]]:
        return {"response": self._answered}

    def _answered(self, response: Any, *args: Any, **kwargs: Any) -> None:
        # Headers are in, the body not yet read: the raw answer still reads from the socket
        # (http.client hands it over when the server closes after answering).
        raw = getattr(response, "raw", None)
        if raw is not None and self._fd is None and sys.platform == "linux":
            with suppress(OSError, ValueError, AttributeError):
                self._fd = os.dup(raw.fileno())

    def timing(self, ours_ns: int) -> Timing:
        """The request of ``ours_ns`` on our clock, less the time its answer waited for us
        once it was in. Connecting, and any stall of ours before the request left, still
        count: a slow handshake may be the service's."""
        if self._fd is None:
            return _timing(ours_ns, None)
        with socket.socket(fileno=self._fd) as sock:
            self._fd = None
            ago = _tcp_ago(sock)
        return _timing(ours_ns, None if ago is None else ours_ns - ago[1])

    def close(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = None
