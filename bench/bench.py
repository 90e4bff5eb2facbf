"""Time to verdict, measured against the sandbox (see docs/performance.md).

    .venv/bin/python bench/bench.py [--runs 5] [--busy-runs 20] [--busy-at-once 3]
                                    [--busy-only]

(a) the floor: bare pytest start-up + importing the clients the checks need + the
    slowest single probe; (b) the whole catalog, healthy; (c) `-m auth-service`, healthy;
(d) the whole catalog with every backend replaced by a loopback listener that accepts and
    never answers; (e) the same, one check at a time (--concurrency 1); (f) and (g): (b) and
    (d) spread over two processes (-n 2, pytest-xdist); peak memory; (k) the whole catalog,
    healthy, --busy-at-once runs at a time with the probe-host-busy game day on (every core
    spinning), --busy-runs in all: the false alarms among them (target 0).
Prints medians and the ratios (b)/(a), (d)/deadline, (e)/(d) and (g) - (f). Brings the sandbox up if
it is not running. Works on whatever checks exist: nothing here names a check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SANDBOX_TOML = ROOT / "environments" / "sandbox.toml"
CLIENTS = "import psycopg, redis, pika, boto3, kubernetes.client, requests"


def timed(command: list[str], cwd: Path = ROOT) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in MB of the child, exit code."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    return elapsed, usage.ru_maxrss // 1024, os.waitstatus_to_exitcode(status)


def checks_run(env_file: Path, reports: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "pytest", f"--env-file={env_file}", f"--reports-dir={reports}",
            "-q", "--run-mode=ci", *args]


@contextmanager
def hang_listeners(count: int) -> Iterator[list[int]]:
    """Listeners that accept every connection and never answer."""
    servers, held = [], []
    for _ in range(count):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(128)
        server.settimeout(0.1)
        servers.append(server)
    stop = threading.Event()

    def accept(server: socket.socket) -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield [s.getsockname()[1] for s in servers]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for conn in held + servers:
            conn.close()


def dead_environment(directory: Path, ports: list[int], deadline: float) -> Path:
    """The sandbox's environment with every backend address moved to a hang listener."""
    text = SANDBOX_TOML.read_text()
    originals = sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text)))
    mapping = dict(zip(originals, ports, strict=False))
    text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{mapping[m.group(1)]}", text)
    text = re.sub(r"(?m)^default = .*$", f"default = {deadline}", text)
    path = directory / "dead.toml"
    path.write_text(text)
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)


def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv-sandbox" / "bin" / "python"), "-m",
                           "unibazzar_sandbox", *args], capture_output=True, text=True)


def busy_runs(count: int, at_once: int, tmp: Path) -> tuple[list[str], list[float]]:
    """(k) ``count`` runs of the whole catalog against the healthy sandbox, ``at_once`` at a
    time, each batch with the probe-host-busy game day on (every core spinning): one line
    per false alarm (a run not healthy, with the checks that were not passed) and the
    runs' wall times. The game day is switched on per batch and always off after it."""
    alarms: list[str] = []
    seconds: list[float] = []
    for first in range(0, count, at_once):
        batch = range(first, min(count, first + at_once))
        switched = sandbox("fault", "probe-host-busy", "on")
        if switched.returncode != 0:
            raise RuntimeError(f"probe-host-busy on: {switched.stdout}{switched.stderr}")
        try:
            started = time.perf_counter()
            running = [(n, subprocess.Popen(
                checks_run(SANDBOX_TOML, tmp / f"busy{n}"), cwd=ROOT, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}))
                for n in batch]
            for n, process in running:
                code = process.wait()
                seconds.append(time.perf_counter() - started)
                summary_file = tmp / f"busy{n}" / "summary.json"
                summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
                unhealthy = [f"{c['id']} {c['outcome']}: {c.get('message')}"
                             for c in summary.get("checks", []) if c["outcome"] != "passed"]
                status = summary.get("verdict", {}).get("status")
                if code != 0 or status != "healthy" or unhealthy:
                    alarms.append(f"run {n + 1}: exit {code}, {status}; "
                                  + ("; ".join(unhealthy) or "no summary"))
        finally:
            sandbox("fault", "probe-host-busy", "off")
    return alarms, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=None,
                        help="probe deadline of the dead runs (default: the sandbox "
                             "environment's own, [deadlines] default)")
    parser.add_argument("--busy-runs", type=int, default=20,
                        help="(k) healthy runs with every core busy, counted for false "
                             "alarms (default 20; 0 leaves (k) out)")
    parser.add_argument("--busy-at-once", type=int, default=3,
                        help="(k) runs at once on top of the busy cores (default 3)")
    parser.add_argument("--busy-only", action="store_true",
                        help="measure (k) alone, none of the timings")
    args = parser.parse_args()
    deadline = args.deadline or float(
        tomllib.loads(SANDBOX_TOML.read_text())["deadlines"]["default"])
    up = subprocess.run([str(ROOT / ".venv-sandbox" / "bin" / "python"), "-m",
                         "unibazzar_sandbox", "up"], capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stdout + up.stderr, file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="unibazzar-bench-"))
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "pytest.ini").write_text("[pytest]\n")
    reports = tmp / "reports"
    if args.busy_only:
        report_busy(*busy_runs(args.busy_runs, args.busy_at_once, tmp), args.busy_at_once)
        return 0

    bare, imports, healthy, auth, probe, dead, serial, rss = [], [], [], [], [], [], [], []
    healthy_n2: list[float] = []
    dead_n2: list[float] = []
    for _ in range(args.runs):
        bare.append(timed([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"], empty)[0])
        with_clients = timed([PYTHON, "-c", CLIENTS])[0]
        imports.append(max(0.0, with_clients - timed([PYTHON, "-c", "pass"])[0]))
        seconds, peak, code = timed(checks_run(SANDBOX_TOML, reports))
        if code != 0:
            failing = json.loads((reports / "summary.json").read_text())["verdict"]
            print(f"the healthy sandbox did not pass every check: {failing}", file=sys.stderr)
            return 1
        healthy.append(seconds)
        rss.append(peak)
        summary = json.loads((reports / "summary.json").read_text())
        # The slowest probe on its own: one check at a time, so none waits for another.
        timed(checks_run(SANDBOX_TOML, reports, "--concurrency", "1"))
        alone = json.loads((reports / "summary.json").read_text())
        probe.append(max(c["duration_s"] for c in alone["checks"]))
        auth.append(timed(checks_run(SANDBOX_TOML, reports, "-m", "auth-service"))[0])
        seconds, peak, code = timed(checks_run(SANDBOX_TOML, reports, "-n", "2"))
        if code != 0:
            print("the healthy sandbox did not pass every check under -n 2", file=sys.stderr)
            return 1
        healthy_n2.append(seconds)
        rss.append(peak)
    checks = len(summary["checks"])

    with hang_listeners(16) as ports:
        dead_env = dead_environment(tmp, ports, deadline)
        for _ in range(max(1, args.runs // 2)):
            seconds, peak, _ = timed(checks_run(dead_env, reports))
            dead.append(seconds)
            rss.append(peak)
        dead_summary = json.loads((reports / "summary.json").read_text())
        for _ in range(max(1, args.runs // 2)):
            seconds, peak, _ = timed(checks_run(dead_env, reports, "-n", "2"))
            dead_n2.append(seconds)
            rss.append(peak)
        serial.append(timed(checks_run(dead_env, reports, "--concurrency", "1"))[0])
    busy = busy_runs(args.busy_runs, args.busy_at_once, tmp) if args.busy_runs > 0 else None

    floor = median(bare) + median(imports) + median(probe)
    b, c, d, e = median(healthy), median(auth), median(dead), median(serial)
    f, g = median(healthy_n2), median(dead_n2)
    dead_failed = dead_summary["counts"]["failed"]
    print(f"UniBazzar health checks: {checks} checks, medians of {args.runs} runs "
          f"((d) of {len(dead)}, (e) of {len(serial)})")
    print(f"(a) floor                 {floor:6.2f} s  = pytest {median(bare):.2f} + client "
          f"imports {median(imports):.2f} + slowest probe {median(probe):.2f}")
    print(f"(b) whole catalog healthy {b:6.2f} s")
    print(f"(c) -m auth-service       {c:6.2f} s")
    print(f"(d) whole catalog dead    {d:6.2f} s  ({dead_failed} of {checks} failed, "
          f"deadline {deadline:g} s)")
    print(f"(e) dead, one at a time   {e:6.2f} s")
    print(f"(f) healthy, -n 2         {f:6.2f} s")
    print(f"(g) dead, -n 2            {g:6.2f} s")
    print(f"peak memory               {max(rss):6d} MB")
    print(f"(b)/(a) = {b / floor:.2f}  (target <= 1.5)")
    print(f"(c) < (b): {c < b}")
    print(f"(d) - (b) = {d - b:.2f} s  (target <= one deadline, {deadline:g} s)")
    print(f"(d)/deadline = {d / deadline:.2f}")
    print(f"(e)/(d) = {e / d:.2f}  (target >= {checks / 2:g}, half the checks)")
    print(f"(g) - (f) = {g - f:.2f} s  (target <= one deadline, {deadline:g} s)")
    print(f"peak memory {max(rss)} MB (target <= 200)")
    if busy is not None:
        report_busy(*busy, args.busy_at_once)
    return 0


def report_busy(alarms: list[str], seconds: list[float], at_once: int) -> None:
    print(f"(k) healthy, busy host    {median(seconds):6.2f} s  (median of {len(seconds)} "
          f"runs, {at_once} at once, every core busy: probe-host-busy)")
    print(f"(k) false alarms = {len(alarms)} of {len(seconds)} healthy runs under load "
          "(target 0)")
    for alarm in alarms:
        print(f"    {alarm}")


if __name__ == "__main__":
    raise SystemExit(main())
