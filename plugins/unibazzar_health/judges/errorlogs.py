"""Reading a service's pod logs (or its log file) as error rates and error signatures:
plain logic, no I/O.

A line's time is the kubelet's stamp (``kubectl logs --timestamps``: RFC 3339 and a space),
else the line's own leading timestamp, else the previous line's (a traceback's lines
follow the line that started it). Two windows of equal length end at ``until`` (the run's
start): the one judged, and the one before it to compare with.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from unibazzar_health.config.redaction import mask_credentials

# The kubelet's stamp: 2026-11-27T13:39:35.983000000Z (nanoseconds, Z or an offset).
_KUBELET_STAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2}) ")
# A line's own leading time, as loggers write it: ISO 8601, or Python's "2026-11-27 13:39:35,983".
_LINE_STAMP = re.compile(
    r"^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?\s*")
EXAMPLE_CHARS = 300
SIGNATURE_CHARS = 200


def _seconds(text: str) -> float | None:
    text = text.replace(",", ".").replace(" ", "T").replace("Z", "+00:00")
    whole, dot, fraction = text.partition(".")
    if dot:  # fromisoformat takes at most microseconds
        digits = re.match(r"\d*", fraction)
        kept = digits.group(0) if digits else ""
        text = f"{whole}.{kept[:6].ljust(6, '0')}{fraction[len(kept):]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # A naive stamp is the logging host's local time (Python's default formatter).
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def split_time(line: str) -> tuple[float | None, str]:
    """The line's time (Unix seconds, None if it carries none) and the line without the
    kubelet's stamp."""
    stamp = _KUBELET_STAMP.match(line)
    if stamp:
        whole, fraction, zone = stamp.groups()
        return _seconds(f"{whole}.{fraction or '0'}{zone}"), line[stamp.end():]
    own = _LINE_STAMP.match(line)
    return (_seconds(own.group(1)) if own else None), line


# What varies between occurrences of one error, each with its stand-in; in this order, so
# a time is not read as numbers, nor an id's digits as a number.
_NORMALISE = (
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"),
     "<time>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
     "<uuid>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    # A hex run of 6+ with a digit and a letter in it (ids, hashes, pod suffixes).
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b"), "<hex>"),
    # An opaque token: 20+ characters of letters and digits mixed.
    (re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}\b"), "<id>"),
    (re.compile(r"(?<![A-Za-z])\d+(?:\.\d+)?"), "<n>"),
)


def signature(message: str) -> str:
    """An error line as the kind of error it is: its own timestamp dropped; times, ids,
    uuids, hex, addresses and numbers replaced by stand-ins (``<n>``, ``<hex>``, ...)."""
    own = _LINE_STAMP.match(message)
    text = message[own.end():] if own else message
    text = mask_credentials(text)
    for pattern, stand_in in _NORMALISE:
        text = pattern.sub(stand_in, text)
    return " ".join(text.split())[:SIGNATURE_CHARS]


@dataclass(frozen=True)
class ErrorSignature:
    signature: str
    count: int
    example: str  # one line as the service logged it, credentials masked, shortened


@dataclass(frozen=True)
class ErrorActivity:
    source: str  # what was read: "pods of deployment/X", or a log file's path
    window_minutes: float
    until: str  # ISO 8601, UTC: the end of the window judged (the run's start)
    errors: int = 0  # error lines in the window
    previous_errors: int = 0  # in the window of the same length before it
    lines: int = 0  # every line in the window
    signatures: list[ErrorSignature] = field(default_factory=list)  # the most frequent first
    pods: int = 0
    # Read from a cut-off tail that starts inside the window before (a file's last bytes):
    # that window's count is short, so a rise against it is not known to be a spike.
    before_partial: bool = False

    @property
    def rate(self) -> float:
        """Error lines per minute in the window."""
        return self.errors / self.window_minutes

    @property
    def previous_rate(self) -> float:
        return self.previous_errors / self.window_minutes


def error_activity(lines: Iterable[str], pattern: str, until: float, window_minutes: float,
                   top: int = 5, pods: int = 0, source: str = "", cut: bool = False,
                   ) -> ErrorActivity:
    """Error lines (``pattern``) per window and their ``top`` signatures, from log lines in
    order (one pod's after another's is fine: each line carries its time). ``cut``: the
    lines are a log's tail, its earlier lines not read."""
    from datetime import UTC

    error = re.compile(pattern)
    window_s = window_minutes * 60
    start, before = until - window_s, until - 2 * window_s
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    errors = previous = total = 0
    last: float | None = None
    first: float | None = None
    for raw in lines:
        moment, line = split_time(raw.rstrip("\n"))
        if moment is None:
            moment = last  # a continuation line: the time of the line it continues
        else:
            last = moment
            first = moment if first is None else first
        if moment is None or moment >= until or moment < before:
            continue
        is_error = bool(error.search(line))
        if moment < start:
            previous += is_error
            continue
        total += 1
        if is_error:
            errors += 1
            kind = signature(line)
            counts[kind] += 1
            examples.setdefault(kind, mask_credentials(line.strip())[:EXAMPLE_CHARS])
    return ErrorActivity(
        source=source, window_minutes=window_minutes,
        until=datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"),
        errors=errors, previous_errors=previous, lines=total,
        signatures=[ErrorSignature(kind, n, examples[kind]) for kind, n in counts.most_common(top)],
        pods=pods, before_partial=cut and (first is None or first > before))
