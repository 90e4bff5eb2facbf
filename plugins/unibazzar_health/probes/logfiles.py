"""A service's log file on this host (the runbook's /var/log/unibazzar/{service}.log): its
last bytes, read within the deadline (a log volume on NFS can hang a read for ever)."""

from __future__ import annotations

from dataclasses import dataclass

from unibazzar_health.probes import FailureKind, ProbeError, bounded


@dataclass(frozen=True)
class LogTail:
    path: str
    text: str  # whole lines only
    size: int  # the file's size in bytes when read
    truncated: bool  # only the last max_bytes were read


def tail(path: str, max_bytes: int, deadline: float) -> LogTail:
    """The file's last ``max_bytes`` (from the first whole line in them)."""

    def read() -> LogTail:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            start = max(0, size - max_bytes)
            file.seek(start)
            data = file.read(size - start)
        if start:  # the first line was cut: a partial line is not a line
            data = data[data.find(b"\n") + 1:] if b"\n" in data else b""
        return LogTail(path, data.decode("utf-8", errors="replace"), size, bool(start))

    try:
        return bounded(read, deadline, "logs", path)
    except FileNotFoundError:
        raise ProbeError("logs", path, "no such file", deadline,
                         kind=FailureKind.MISSING_OBJECT) from None
    except PermissionError:
        raise ProbeError("logs", path, "permission denied (the checks' user cannot read it)",
                         deadline, kind=FailureKind.AUTH_REJECTED) from None
    except IsADirectoryError:
        raise ProbeError("logs", path, "is a directory, not a log file", deadline,
                         kind=FailureKind.UNEXPECTED_ANSWER) from None
    except OSError as exc:
        raise ProbeError("logs", path, f"cannot be read: {exc.strerror or exc}", deadline,
                         kind=FailureKind.UNEXPECTED_ANSWER) from None
