"""Prometheus metrics of a run: the textfile (--metrics-file) and the Pushgateway
(--pushgateway) carry the verdict of a faulted run, read back with prometheus_client's own
parser; the last success survives failing runs; a Pushgateway that is down or never answers
costs a bounded wait and a line, never the verdict or the exit status."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import URI_DEFAULT
from receivers import LoopbackServer
from werkzeug import Request, Response

from unibazzar_health.reports.metrics import PUSH_DEADLINE_S, previous_last_success, severity_number

MODES = pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]],
                                ids=["serial", "xdist"])

ENV = """
[environment]
name = "pytester"

[deadlines]
default = 1.0
check = 2.0
"""

CHECKS = '''
from unibazzar_health.judges.runbook import runbook_check


@runbook_check("auth.postgresql-connectivity", observe=lambda ctx: 1)
def test_passes(observed):
    assert observed == 1


@runbook_check("listing.s3-image-uploads", observe=lambda ctx: 3)
def test_fails(observed):
    assert observed == 4, "canary object read back from the bucket differs"


@runbook_check("order.saga-orchestration", observe=lambda ctx: {}["missing"])
def test_broken(observed):
    pass
'''

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in found.items()
               if n == name and labels.items() <= dict(ls).items()]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".toml", env=ENV)
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = pytester.runpytest_subprocess(
        "--env-file=env.toml", f"--reports-dir={pytester.path / 'reports'}", "--fail-on=any",
        *args)
    summary_file = pytester.path / "reports" / "summary.json"
    return result, json.loads(summary_file.read_text()) if summary_file.exists() else {}


@MODES
def test_the_textfile_carries_the_verdict_of_a_faulted_run(suite: pytest.Pytester,
                                                           mode: list[str]) -> None:
    metrics = suite.path / "textfile" / "unibazzar_health.prom"
    result, summary = run(suite, *mode, f"--metrics-file={metrics}")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([f"metrics: {metrics}"])
    found = samples(metrics.read_text())
    verdict = summary["verdict"]
    assert verdict["status"] == "failing" and verdict["severity"]
    assert value(found, "unibazzar_health_verdict_severity", environment="pytester") == \
        severity_number(verdict["severity"]) > 0
    assert value(found, "unibazzar_health_verdict_status", status="failing") == 1
    assert value(found, "unibazzar_health_verdict_status", status="healthy") == 0
    for outcome, count in (("passed", 1), ("failed", 1), ("broken", 1), ("skipped", 0)):
        assert value(found, "unibazzar_health_checks", outcome=outcome) == count
    assert value(found, "unibazzar_health_check_up", check="auth.postgresql-connectivity") == 1
    assert value(found, "unibazzar_health_check_up", check="listing.s3-image-uploads") == 0
    assert not [k for k in found if k[0] == "unibazzar_health_check_up"
                and ("check", "order.saga-orchestration") in k[1]], "a broken check has no up"
    assert value(found, "unibazzar_health_check_outcome", check="order.saga-orchestration",
                 outcome="broken") == 1
    failed = next(c for c in summary["checks"] if c["id"] == "listing.s3-image-uploads")
    assert value(found, "unibazzar_health_check_severity", check="listing.s3-image-uploads",
                 service="listing-service", step=failed["step"]) == \
        severity_number(failed["severity"])
    assert value(found, "unibazzar_health_check_severity",
                 check="auth.postgresql-connectivity") == 0
    assert value(found, "unibazzar_health_check_duration_seconds",
                 check="auth.postgresql-connectivity") >= 0
    assert value(found, "unibazzar_health_run_duration_seconds") == summary["duration_s"]
    assert value(found, "unibazzar_health_build_info", version=summary["version"]) == 1
    # No run has succeeded yet: the last success is not made up.
    assert not [k for k in found if k[0] == "unibazzar_health_last_success_timestamp_seconds"]
    # Written beside itself and renamed: nothing else is left in the collector's folder.
    assert [p.name for p in metrics.parent.iterdir()] == [metrics.name]


def test_the_last_success_outlives_failing_runs(suite: pytest.Pytester) -> None:
    metrics = suite.path / "unibazzar_health.prom"
    result, healthy = run(suite, "-p", "no:xdist", "-k", "passes", f"--metrics-file={metrics}")
    assert result.ret == 0 and healthy["verdict"]["status"] == "healthy"
    succeeded_at = value(samples(metrics.read_text()), "unibazzar_health_run_timestamp_seconds")
    time.sleep(1.1)  # the next run finishes a second later at least (ISO timestamps)
    result, failing = run(suite, "-p", "no:xdist", f"--metrics-file={metrics}")
    assert failing["verdict"]["status"] == "failing"
    found = samples(metrics.read_text())
    assert value(found, "unibazzar_health_last_success_timestamp_seconds") == succeeded_at
    assert value(found, "unibazzar_health_run_timestamp_seconds") > succeeded_at


class Pushgateway:
    """A loopback stand-in: records every request and answers like a Pushgateway."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.delay = delay
        self.server = LoopbackServer()
        for method in ("POST", "PUT"):
            self.server.expect_request(URI_DEFAULT, method=method).respond_with_handler(
                self._record)

    @property
    def url(self) -> str:
        return self.server.base

    def _record(self, request: Request) -> Response:
        self.requests.append((request.method, request.environ["RAW_URI"],
                              request.get_data(as_text=True)))
        time.sleep(self.delay)
        return Response(status=200)

    def __enter__(self) -> Pushgateway:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def pushgateway() -> Iterator[Pushgateway]:
    with Pushgateway() as gateway:
        yield gateway


@MODES
def test_the_pushgateway_receives_the_verdict_of_a_faulted_run(
        suite: pytest.Pytester, pushgateway: Pushgateway, mode: list[str]) -> None:
    result, summary = run(suite, *mode, f"--pushgateway={pushgateway.url}")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([f"metrics: pushed to {pushgateway.url}"])
    ((method, path, body),) = pushgateway.requests
    # POST: replaces only the names sent, so the gateway keeps the last success it holds.
    assert (method, path) == ("POST", "/metrics/job/unibazzar_health/environment/pytester")
    found = samples(body)
    assert value(found, "unibazzar_health_verdict_severity") == \
        severity_number(summary["verdict"]["severity"]) > 0
    assert value(found, "unibazzar_health_checks", outcome="failed") == 1


def test_a_pushgateway_that_is_down_is_reported_not_fatal(suite: pytest.Pytester) -> None:
    metrics = suite.path / "m.prom"
    url = f"http://127.0.0.1:{closed_port()}"
    result, summary = run(suite, "-p", "no:xdist", f"--pushgateway={url}",
                          f"--metrics-file={metrics}")
    assert result.ret == 1, "the exit status is the verdict's, not the push's"
    result.stdout.fnmatch_lines([f"metrics: push to {url} failed: *refused*"])
    assert summary["verdict"]["status"] == "failing" and metrics.exists()


def test_a_pushgateway_that_never_answers_costs_at_most_its_deadline(
        suite: pytest.Pytester, hang_listener: tuple[str, int]) -> None:
    host, port = hang_listener
    started = time.monotonic()
    result, summary = run(suite, "-p", "no:xdist", f"--pushgateway=http://{host}:{port}")
    elapsed = time.monotonic() - started
    assert result.ret == 1
    result.stdout.fnmatch_lines(["metrics: push to * failed: *"])
    assert summary["verdict"]["status"] == "failing"
    assert elapsed < PUSH_DEADLINE_S + 10, f"the run took {elapsed:.1f} s"


def test_a_bad_pushgateway_url_is_a_usage_error(suite: pytest.Pytester) -> None:
    result, _ = run(suite, "--pushgateway=pushgateway:9091")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*expected an http(s) URL, got 'pushgateway:9091'*"])


@pytest.mark.parametrize(("url", "shown", "why"), [
    ("https://metrics:pushgateway-s3cr3t@pushgateway.example:9091",
     "https://metrics:***@pushgateway.example:9091", "the URL carries a password"),
    ("https://pushgateway.example:9091/?token=pushgateway-s3cr3t",
     "https://pushgateway.example:9091/?token=***", "the URL carries a secret in its query"),
    ("https://pushgateway.example:9091/?job=x&api_key=pushgateway-s3cr3t",
     "https://pushgateway.example:9091/?job=x&api_key=***",
     "the URL carries a secret in its query"),
])
def test_a_pushgateway_url_carrying_a_secret_is_refused_unshown(
        suite: pytest.Pytester, url: str, shown: str, why: str) -> None:
    """It would be printed in summary.json's arguments and in "metrics: pushed to ...":
    refused before any check runs, the option named, the secret never shown."""
    result, summary = run(suite, f"--pushgateway={url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert summary == {}
    result.stderr.fnmatch_lines([f"*--pushgateway: {why} ('{shown}')*"])
    assert "pushgateway-s3cr3t" not in result.stdout.str() + result.stderr.str()


def test_the_last_success_is_read_for_its_environment_only(tmp_path: Path) -> None:
    metrics = tmp_path / "m.prom"
    metrics.write_text('unibazzar_health_last_success_timestamp_seconds{environment="a"} 5.0\n'
                       'unibazzar_health_last_success_timestamp_seconds{environment="b"} 7.0\n')
    assert previous_last_success(metrics, "b") == 7.0
    assert previous_last_success(metrics, "c") is None
    metrics.write_text("this is { not a metrics file")
    assert previous_last_success(metrics, "a") is None
    assert previous_last_success(tmp_path / "absent.prom", "a") is None


@pytest.mark.parametrize(("severity", "number"), [("SEV1", 1), ("SEV4", 4), (None, 0)])
def test_severity_numbers(severity: str | None, number: int) -> None:
    assert severity_number(severity) == number
