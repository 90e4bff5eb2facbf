"""Cron on a plain host (deploy/cron/): the crontab line, run as written with its paths moved
under a temporary folder, probes the sandbox in scheduled mode; while another run holds its
lock it exits at once and probes nothing (flock -n), so two runs never overlap. The systemd
service and timer say the same and pass systemd-analyze verify where it exists."""

from __future__ import annotations

import configparser
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, SANDBOX_TOML

CRON = ROOT / "deploy" / "cron"


def cron_entry() -> tuple[dict[str, str], str, str]:
    """(variables, schedule, command) of the cron.d file's one job line (user field dropped)."""
    variables: dict[str, str] = {}
    jobs = []
    for line in (CRON / "unibazzar-health.cron").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if re.fullmatch(r"[A-Z_]+=.*", line):
            name, _, value = line.partition("=")
            variables[name] = value
        else:
            jobs.append(line)
    (job,) = jobs
    fields = job.split(None, 6)
    return variables, " ".join(fields[:5]), fields[6]


def test_the_crontab_line_runs_the_scheduled_mode_under_flock() -> None:
    _, schedule, command = cron_entry()
    assert re.fullmatch(r"\*/\d+ \* \* \* \*", schedule)
    assert command.startswith("flock -n ")
    assert "unibazzar-health run --run-mode=scheduled" in command


def on_this_machine(text: str, tmp_path: Path) -> str:
    """The host's paths moved under tmp_path, the package's bin to this checkout's venv."""
    moves = {"/opt/unibazzar-health/bin": str(ROOT / ".venv" / "bin"),
             "/etc/unibazzar-health/environment.toml": str(SANDBOX_TOML),
             "/etc/unibazzar-health/secrets.env": str(tmp_path / "secrets.env"),
             "/run/lock/unibazzar-health.lock": str(tmp_path / "probe.lock"),
             "/var/lib/unibazzar-health": str(tmp_path / "state"),
             "/var/lib/node_exporter/textfile_collector": str(tmp_path / "textfile"),
             "/var/log/unibazzar-health": str(tmp_path / "log")}
    for host, here in moves.items():
        text = text.replace(host, here)
    return text


def run_cron_job(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    variables, _, command = cron_entry()
    for folder in ("state", "textfile", "log"):
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "secrets.env").write_text("# the sandbox's secrets come from its own file\n")
    env = {"HOME": str(tmp_path), "LANG": "C.UTF-8",
           # One service keeps the self-test short; cron would run the whole catalog.
           "PYTEST_ADDOPTS": "-m ai-service -p no:xdist"}
    env.update({k: on_this_machine(v, tmp_path) for k, v in variables.items()})
    env["PATH"] = f"{env['PATH']}:/usr/local/bin:/usr/bin:/bin"
    started = time.monotonic()
    done = subprocess.run([env.get("SHELL", "/bin/sh"), "-c", on_this_machine(command, tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - started


@pytest.mark.sandbox
def test_the_cron_job_probes_and_a_second_one_never_overlaps_it(running_sandbox: None,
                                                                 tmp_path: Path) -> None:
    summary = tmp_path / "state" / "reports" / "summary.json"
    with open(tmp_path / "probe.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a run in progress
        done, elapsed = run_cron_job(tmp_path)
        assert done.returncode == 1 and elapsed < 5, (done.returncode, elapsed)
        assert not summary.exists(), "a second run probed while the first held the lock"
    done, _ = run_cron_job(tmp_path)
    log = (tmp_path / "log" / "probe.log").read_text()
    assert summary.exists(), log
    assert "--run-mode=scheduled" in json.loads(summary.read_text())["arguments"]
    assert (tmp_path / "textfile" / "unibazzar_health.prom").exists()


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CRON / name)
    return parser


def test_the_systemd_units_run_the_scheduled_probe_under_flock() -> None:
    service, timer = unit("unibazzar-health.service"), unit("unibazzar-health.timer")
    exec_start = service["Service"]["ExecStart"]
    assert exec_start.startswith("/usr/bin/flock -n ")
    assert "unibazzar-health run --run-mode=scheduled" in exec_start
    assert service["Service"]["Type"] == "oneshot"
    assert int(service["Service"]["TimeoutStartSec"]) > 50  # the scheduled budget
    assert service["Service"]["User"] != "root"
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    _, _, command = cron_entry()
    assert exec_start.split("run ", 1)[1].split()[:3] == command.split("run ", 1)[1].split()[:3]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for name in ("unibazzar-health.service", "unibazzar-health.timer"):
        shutil.copy(CRON / name, tmp_path / name)
    done = subprocess.run(["systemd-analyze", "verify", "unibazzar-health.timer",
                           "unibazzar-health.service"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if "unibazzar-health" in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def test_the_documented_crontab_line_is_the_shipped_one() -> None:
    line = next(line for line in (CRON / "unibazzar-health.cron").read_text().splitlines()
                if line.startswith("*/"))
    for doc in (ROOT / "README.md", ROOT / "docs" / "delivery.md"):
        assert line in doc.read_text(), f"{doc.name} shows another crontab line"
