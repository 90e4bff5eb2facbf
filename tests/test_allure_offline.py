"""The Allure report a ticket links to: built from a real run's results by `python -m
unibazzar_health report`, it names no script or stylesheet on another host (Allure 3 embeds
Google Analytics) and renders in headless Chromium with the network off, asking no host for
anything; and each check's Allure duration is its own time, as in summary.json (its probes
ran ahead of its test, so pytest's call saw only the judging: a failed check read 1ms)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT

MODES = pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]],
                                ids=["serial", "xdist"])
PROBING_S = 0.4

# The passing check first: serially, its test waits out the probing of both (they start
# together), and the failing one's test then finds its observation done and only judges.
CHECKS = f'''
import time
from unibazzar_health.judges.runbook import runbook_check

def observe(ctx):
    time.sleep({PROBING_S})
    return {{"served": "999", "stored": "1999"}}

@runbook_check("auth.postgresql-connectivity", observe=observe)
def test_fine(observed):
    pass

@runbook_check("listing.cache-freshness", observe=observe)
def test_stale(observed):
    assert observed["served"] == observed["stored"], "stale data: served 999, stored 1999"
'''
STALE_TITLE = "listing-service · the API serves the canary listing exactly as DynamoDB holds it"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "offline"\n')
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def run(suite: pytest.Pytester, *args: str) -> tuple[Path, dict[str, Any]]:
    """The checks run with --alluredir: the results folder and summary.json."""
    results = suite.path / "allure-results"
    result = suite.runpytest_subprocess("--env-file=env.toml",
                                        f"--reports-dir={suite.path / 'reports'}",
                                        f"--alluredir={results}", *args)
    assert result.ret == 1, result.stdout.str()  # the stale check fails (SEV3, --fail-on any)
    return results, json.loads((suite.path / "reports" / "summary.json").read_text())


@MODES
def test_a_checks_allure_duration_is_its_own_time(suite: pytest.Pytester,
                                                  mode: list[str]) -> None:
    results, summary = run(suite, *mode)
    durations = {c["nodeid"].rsplit("::", 1)[-1]: c["duration_s"] for c in summary["checks"]}
    allure = {}
    for path in results.glob("*-result.json"):
        data = json.loads(path.read_text())
        allure[data["fullName"].rsplit("#", 1)[-1]] = data
    assert set(allure) == set(durations) == {"test_fine", "test_stale"}
    assert allure["test_stale"]["status"] == "failed"
    for name, data in allure.items():
        shown_ms = data["stop"] - data["start"]
        assert abs(shown_ms - durations[name] * 1000) <= 1, (name, shown_ms, durations[name])
        # Its probing counts, wherever its test waited for it.
        assert shown_ms >= PROBING_S * 1000, (name, shown_ms)


def build_report(suite: pytest.Pytester, results: Path) -> str:
    output = suite.path / "allure-report"
    built = subprocess.run(
        [sys.executable, "-m", "unibazzar_health", "report", f"--root={ROOT}",
         f"--results={results}", f"--output={output}",
         f"--history={suite.path / 'allure-history.jsonl'}"],
        capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stderr
    return (output / "index.html").read_text(encoding="utf-8")


_TAG = re.compile(r"<(script|link)\b([^>]*)>", re.IGNORECASE)
_URL = re.compile(r"""\b(src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]*)""", re.IGNORECASE)


def remote_resources(html: str) -> list[str]:
    """Every script or <link> (stylesheet, preload, icon...) the page would load from a host."""
    return [f"<{tag.group(1)}> {url.group(2)}" for tag in _TAG.finditer(html)
            for url in _URL.finditer(tag.group(2))]


def test_the_report_loads_nothing_from_other_hosts(suite: pytest.Pytester,
                                                   tmp_path: Path) -> None:
    results, _ = run(suite, "-p", "no:xdist")
    html = build_report(suite, results)
    assert remote_resources(html) == []
    for analytics in ("googletagmanager", "dataLayer", "gtag("):
        assert analytics not in html, analytics
    # The checks are in it as data only: seeing one's title below means the report rendered.
    assert STALE_TITLE not in html
    page = suite.path / "allure-report" / "index.html"
    png, dom, requested = render(page, tmp_path)
    assert requested == [], requested
    assert STALE_TITLE in dom, dom[-2000:]
    assert distinct_colours(png) > 1


def test_a_render_sees_what_a_page_asks_of_another_host(tmp_path: Path) -> None:
    """The control: the render below does see a page's request for a script on another host
    (the one Allure 3 embeds), so an empty list above means none was made."""
    page = tmp_path / "analytics.html"
    page.write_text('<html><body><p>gtag</p><script async '
                    'src="https://www.googletagmanager.com/gtag/js?id=G-X"></script>'
                    "</body></html>")
    assert remote_resources(page.read_text()) == [
        "<script> https://www.googletagmanager.com/gtag/js?id=G-X"]
    _, _, requested = render(page, tmp_path)
    assert requested == ["https://www.googletagmanager.com/gtag/js?id=G-X"]


def render(page: Path, tmp_path: Path) -> tuple[bytes, str, list[str]]:
    """``page`` from file:// in headless Chromium with the network off: its screenshot (PNG),
    its DOM once its scripts ran, and the http(s) URLs it asked for (from Chromium's net log:
    the browser's own update and account requests carry no page as their initiator)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/bootstrap installs it)")
    screenshot, netlog = tmp_path / "report.png", tmp_path / "netlog.json"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         # Network off: no name resolves, and what needs none goes to a closed proxy port.
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", f"--log-net-log={netlog}",
         "--virtual-time-budget=5000", "--window-size=1280,900",
         f"--screenshot={screenshot}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and screenshot.exists(), done.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [params["url"] for event in log["events"] if event["type"] == start
                 and "url" in (params := event.get("params") or {})
                 and params.get("initiator") != "not an origin"
                 and params["url"].startswith(("http:", "https:", "ws:", "wss:"))]
    return screenshot.read_bytes(), done.stdout, requested


def distinct_colours(png: bytes) -> int:
    """How many colours an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) has:
    one means a blank page."""
    width, height, depth, kind, _, _, interlace = struct.unpack(">IIBBBBB", png[16:29])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and depth == 8 and kind in (2, 6) and not interlace
    chunks, position = [], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position:position + 4])
        if png[position + 4:position + 8] == b"IDAT":
            chunks.append(png[position + 8:position + 8 + length])
        position += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    step = 3 if kind == 2 else 4
    stride = width * step
    previous, colours = bytearray(stride), set()
    for y in range(height):
        kind_of_filter = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # PNG's five filters, undone byte by byte
            left = row[i - step] if i >= step else 0
            up = previous[i]
            if kind_of_filter == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind_of_filter == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind_of_filter == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind_of_filter == 4:
                corner = previous[i - step] if i >= step else 0
                guess = left + up - corner
                best = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                           (abs(guess - corner), 2, corner))[2]
                row[i] = (row[i] + best) & 0xFF
        colours.update(bytes(row[i:i + step]) for i in range(0, stride, step))
        previous = row
    return len(colours)
