"""Incident posting, measured against the sandbox (see docs/performance.md).

    .venv/bin/python bench/bench_posting.py [--runs 3] [--interval 10] [--alert-after N]
    .venv/bin/python bench/bench_posting.py --only j

(h) fault-to-page latency of a scheduled probe: the whole catalog runs every --interval
    seconds (``--run-mode scheduled``: alert after 2 failing runs unless --alert-after says
    otherwise) with incident state and a PagerDuty receiver on loopback; at a random moment
    Redis becomes unreachable for the checks (their environment file points it at a closed
    port: the shared sandbox itself is untouched); measured from that moment to the trigger
    arriving at the receiver, and, within it, from the start of the alerting run to the page.
(i) the state store's cost per run: Poster.post (lock, decide, save the run, nothing to
    send) in process over a real summary of the catalog, SQLite and Redis (a redis-server
    of its own), healthy and with an incident open; the bytes a run adds to the SQLite file;
    and a healthy catalog run end to end with and without [incident_state].
(j) a dead platform's incident (every check of the catalog failing, with 8 MB of evidence
    in all) posted to the four notifiers, each a strict loopback receiver enforcing the real
    service's limits (tests/receivers.py): the largest payload each one got, and the posting
    time when all answer at once, when Slack rate-limits with Retry-After: 1 (waited for
    within the budget) and with Retry-After: 120 (left for a later run, budget untouched).
Runs the catalog with --read-only (no canary writes into the shared sandbox).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SANDBOX_TOML = ROOT / "environments" / "sandbox.toml"
sys.path.insert(0, str(ROOT / "plugins"))


class Pager:
    """A PagerDuty Events API stand-in: the monotonic time each trigger arrived."""

    def __init__(self) -> None:
        self.triggers: list[float] = []
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body.get("event_action") == "trigger":
                    pager.triggers.append(time.monotonic())
                answer = b'{"status":"success"}'
                self.send_response(202)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v2/enqueue"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(directory: Path, *, redis_down: bool, state: str, notify: str = "",
                alerting: str = "") -> Path:
    text = SANDBOX_TOML.read_text()
    if redis_down:
        port = closed_port()
        text = re.sub(r'(?m)^url = "redis://127\.0\.0\.1:\d+/', f'url = "redis://127.0.0.1:{port}/',
                      text)
    path = directory / ("down.toml" if redis_down else "healthy.toml")
    path.write_text(f"{text}\n{state}\n{notify}\n{alerting}\n")
    return path


def run(env_file: Path, reports: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([PYTHON, "-m", "pytest", f"--env-file={env_file}", f"--reports-dir={reports}",
                    "-q", "--read-only", "-p", "no:xdist", *args], cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, check=False)
    return time.perf_counter() - started


def fault_to_page(tmp: Path, interval: float, alert_after: int | None,
                  pager: Pager) -> tuple[float, float]:
    """One scheduled probe from a healthy start: (fault → page, alerting run start → page)."""
    reports = tmp / f"reports-{random.getrandbits(32):x}"
    state = f'[incident_state]\npath = "{reports / "state.sqlite3"}"\n'
    notify = (f'[notify]\nbudget = 10\n[notify.pagerduty]\nrouting_key_env = "BENCH_ROUTING_KEY"\n'
              f'api_url = "{pager.url}"\n')
    alerting = f"[alerting]\nalert_after = {alert_after}\n" if alert_after else ""
    healthy = environment(tmp, redis_down=False, state=state, notify=notify, alerting=alerting)
    down = environment(tmp, redis_down=True, state=state, notify=notify, alerting=alerting)
    current = tmp / "probe.toml"
    shutil.copy(healthy, current)
    pager.triggers.clear()
    start = time.monotonic()
    offset = random.uniform(0.1, interval - 0.1)
    fault_at: list[float] = []

    def inject() -> None:
        shutil.copy(down, current.with_suffix(".tmp"))
        os.replace(current.with_suffix(".tmp"), current)  # a run reads one file or the other
        fault_at.append(time.monotonic())

    threading.Timer(offset, inject).start()
    tick = 0
    run_started = 0.0
    while not pager.triggers:
        tick_at = start + tick * interval
        time.sleep(max(0.0, tick_at - time.monotonic()))
        run_started = time.monotonic()
        run(current, reports, "--run-mode=scheduled")
        tick += 1
        if tick > 20:
            raise SystemExit("no page after 20 runs")
    return pager.triggers[0] - fault_at[0], pager.triggers[0] - run_started


def store_cost(tmp: Path, summaries: dict[str, dict[str, Any]], repeat: int,
               redis_url: str | None) -> dict[str, tuple[float, int]]:
    """Median seconds of Poster.post with no notifier, per backend and summary; and the
    SQLite file's bytes per run."""
    os.environ.setdefault("BENCH_ROUTING_KEY", "B" * 32)
    from unibazzar_health.incidents.config import load_environment
    from unibazzar_health.incidents.posting import Poster

    results: dict[str, tuple[float, int]] = {}
    backends = {"sqlite": '[incident_state]\nbackend = "sqlite"\n'}
    if redis_url:
        backends["redis"] = (f'[incident_state]\nbackend = "redis"\nurl = "{redis_url}"\n'
                             f'key_prefix = "bench-{random.getrandbits(32):x}"\n')
    for backend, section in backends.items():
        for name, summary in summaries.items():
            reports = tmp / f"store-{backend}-{name}"
            env_file = environment(tmp, redis_down=False, state=section)
            env = load_environment(env_file)
            times = []
            for _ in range(repeat):
                poster = Poster(env, "scheduled", reports, env.redactor(), notifiers=[])
                started = time.perf_counter()
                report = poster.post(summary)
                times.append(time.perf_counter() - started)
                if report.error:
                    raise SystemExit(report.error)
            size = sum(p.stat().st_size for p in (reports / "state").glob("*")) \
                if backend == "sqlite" else 0
            results[f"{backend} {name}"] = (statistics.median(times), size // repeat)
    return results


@contextmanager
def redis_server(directory: Path) -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = closed_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                                str(directory), "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/7"
    finally:
        process.terminate()
        process.wait(10)


def dead_platform(tmp: Path) -> list[tuple[str, dict[str, int], float, str]]:
    """(j): [(case, largest payload bytes per notifier, posting seconds, Slack's status)]."""
    from contextlib import ExitStack
    from datetime import UTC, datetime, timedelta

    sys.path.insert(0, str(ROOT / "tests"))
    from receivers import (
        GitHubReceiver,
        PagerDutyReceiver,
        SlackReceiver,
        WebhookReceiver,
        serving,
    )

    from unibazzar_health.incidents.config import load_environment
    from unibazzar_health.incidents.posting import Poster
    from unibazzar_health.verdict.catalog import load_catalog
    from unibazzar_health.verdict.results import CheckResult, Outcome
    from unibazzar_health.verdict.severity import severity_of
    from unibazzar_health.verdict.summary import Response, RunInfo, build_summary

    catalog = load_catalog()
    results = []
    for entry in catalog.checks.values():
        results.append(CheckResult(
            id=entry.id, service=entry.service, step=entry.step, title=entry.title,
            nodeid=entry.id, outcome=Outcome.FAILED, impact=entry.impact,
            severity=severity_of(entry.impact).level, fixes=list(entry.fixes),
            message=f"{entry.id}: " + "connection refused; " * 10_000,  # 200 kB each
            impact_statement=entry.impact_statement))
    token = "ghp_" + "b" * 36
    cases = []
    for case, answers in (("all answer", []),
                          ("Slack 429 Retry-After: 1", [(429, {"Retry-After": "1"}, "")]),
                          ("Slack 429 Retry-After: 120", [(429, {"Retry-After": "120"}, "")])):
        with ExitStack() as stack:
            slack = stack.enter_context(serving(SlackReceiver("slack", answers=list(answers))))
            pd = stack.enter_context(serving(PagerDutyReceiver("pagerduty")))
            gh = stack.enter_context(serving(GitHubReceiver("github", token=token)))
            hook = stack.enter_context(serving(WebhookReceiver("webhook",
                                                               max_bytes=256 * 1024)))
            directory = tmp / f"dead-{len(cases)}"
            directory.mkdir()
            env_file = directory / "production.toml"
            env_file.write_text(f"""[environment]\nname = "production"\n
[report]\nurl = "https://reports.example/prod/index.html"\n
[notify]\nbudget = 20\n
[notify.slack]\nwebhook_url_env = "B_SLACK"\n
[notify.pagerduty]\nrouting_key_env = "BENCH_ROUTING_KEY"\napi_url = "{pd.base}/v2/enqueue"\n
[notify.ticket]\napi_url = "{gh.base}"\nrepository = "unibazzar/incidents"\ntoken_env = "B_GH"\n
[notify.webhook]\nurl = "{hook.base}/hook"\n""")
            env = load_environment(env_file, {**os.environ, "B_GH": token,
                                              "B_SLACK": slack.base + "/services/T0/B0/bench"})
            started = datetime.now(UTC)
            summary = build_summary(results, catalog, RunInfo(
                "production", str(env_file), started, started + timedelta(seconds=3), []),
                Response(ic="@oncall", report_url="https://reports.example/prod/index.html"))
            poster = Poster(env, "oncall", directory, env.redactor())
            t0 = time.perf_counter()
            report = poster.post(summary)
            seconds = time.perf_counter() - t0
            sizes = {name: max((len(r.raw) for r in receiver.received), default=0)
                     for name, receiver in (("slack", slack), ("pagerduty", pd),
                                            ("ticket", gh), ("webhook", hook))}
            slack_status = next(r.status for r in report.results if r.notifier == "slack")
            cases.append((case, sizes, seconds, slack_status))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fault-to-page repetitions")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="seconds between the scheduled probe's runs (a cron interval)")
    parser.add_argument("--alert-after", type=int, default=None,
                        help="[alerting] alert_after (default: the scheduled mode's, 2)")
    parser.add_argument("--store-runs", type=int, default=50)
    parser.add_argument("--only", choices=("j",), help="j: only the dead platform's payloads "
                                                       "(no sandbox needed)")
    args = parser.parse_args()
    if args.only == "j":
        os.environ["BENCH_ROUTING_KEY"] = "B" * 32
        for case, sizes, seconds, slack_status in dead_platform(
                Path(tempfile.mkdtemp(prefix="unibazzar-bench-posting-"))):
            largest = ", ".join(f"{name} {size / 1024:.1f} kB" for name, size in sizes.items())
            print(f"(j) {case:<28} posting {seconds:5.2f} s (Slack {slack_status}); largest "
                  f"payload: {largest}")
        return 0
    up = subprocess.run([str(ROOT / ".venv-sandbox" / "bin" / "python"), "-m",
                         "unibazzar_sandbox", "up"], capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stdout + up.stderr, file=sys.stderr)
        return 1
    os.environ["BENCH_ROUTING_KEY"] = "B" * 32
    tmp = Path(tempfile.mkdtemp(prefix="unibazzar-bench-posting-"))

    pager = Pager()
    latencies, run_to_page = [], []
    for _ in range(args.runs):
        total, tail = fault_to_page(tmp, args.interval, args.alert_after, pager)
        latencies.append(total)
        run_to_page.append(tail)
    pager.server.shutdown()

    summaries = {}
    for name, down in (("healthy", False), ("incident open", True)):
        reports = tmp / f"summary-{name.replace(' ', '-')}"
        run(environment(tmp, redis_down=down, state=""), reports)
        summaries[name] = json.loads((reports / "summary.json").read_text())
    with redis_server(tmp) as redis_url:
        costs = store_cost(tmp, summaries, args.store_runs, redis_url)

    plain = environment(tmp, redis_down=False, state="")
    stateful = environment(tmp, redis_down=False,
                           state=f'[incident_state]\npath = "{tmp / "e2e.sqlite3"}"\n')
    shutil.copy(stateful, tmp / "stateful.toml")
    off, on = [], []
    for _ in range(5):
        off.append(run(plain, tmp / "e2e-off"))
        on.append(run(tmp / "stateful.toml", tmp / "e2e-on"))

    dead = dead_platform(tmp)

    alert_after = args.alert_after or 2
    print(f"(h) fault-to-page, scheduled probe every {args.interval:g} s, alert_after "
          f"{alert_after}, {args.runs} runs:")
    print(f"    median {statistics.median(latencies):6.2f} s  (min {min(latencies):.2f}, "
          f"max {max(latencies):.2f}); expected ≈ interval × {alert_after - 0.5:g} + one run")
    print(f"    alerting run start → page: median {statistics.median(run_to_page):.2f} s")
    print(f"(i) state store per run (Poster.post, no notifier, median of {args.store_runs}):")
    for name, (seconds, size) in costs.items():
        extra = f", +{size / 1024:.0f} kB/run" if size else ""
        print(f"    {name:<22} {seconds * 1000:7.1f} ms{extra}")
    print(f"    catalog run end to end: without state {statistics.median(off):.2f} s, with "
          f"SQLite state {statistics.median(on):.2f} s (medians of 5; Δ "
          f"{statistics.median(on) - statistics.median(off):+.2f} s)")
    print("(j) a dead platform's incident (every check failing, 8 MB of evidence) to four "
          "strict receivers:")
    for case, sizes, seconds, slack_status in dead:
        largest = ", ".join(f"{name} {size / 1024:.1f} kB" for name, size in sizes.items())
        print(f"    {case:<28} posting {seconds:5.2f} s (Slack {slack_status}); largest "
              f"payload: {largest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
