"""The image (Dockerfile), which no machine here can build: its shape read from the file
(hadolint runs in scripts/lint-delivery), and its entrypoint script run outside a container,
as the image runs it: from a folder that is not the repository, the package's `unibazzar-health`
on PATH, settings from environment variables, against the sandbox with a service down; the
summary appears and the exit status follows --fail-on."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.reports.gate import exit_status
from unibazzar_health.verdict.model import Summary

from conftest import ROOT, SANDBOX_TOML

DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
AI_SERVICE = "http://127.0.0.1:28004"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions, continuation lines joined, split by FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    found: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def test_the_image_is_built_in_two_stages_and_runs_as_a_user() -> None:
    build, final = stages()
    assert "slim" in (ROOT / "Dockerfile").read_text().split("PYTHON_IMAGE=", 1)[1].split()[0]
    # Wheels are made in the first stage, pinned by the lock file...
    assert any("pip wheel" in i and "requirements/checks.lock" in i for i in build)
    # ...and the final one installs only those, building nothing and fetching nothing.
    install = " ".join(i for i in final if i.startswith("RUN"))
    assert "--no-index" in install and "from=build" in install
    assert not re.search(r"apt-get|gcc|build-essential|pip wheel", install)
    user = [i for i in final if i.startswith("USER ")]
    assert user and re.fullmatch(r"USER \d+(:\d+)?", user[-1]) and not user[-1].startswith(
        "USER 0")
    assert any("UNIBAZZAR_RUN_MODE=scheduled" in i for i in final if i.startswith("ENV"))
    entry = next(i for i in final if i.startswith("ENTRYPOINT"))
    copied = next(i for i in final if i.startswith("COPY") and "entrypoint.sh" in i)
    assert json.loads(entry.split(" ", 1)[1])[0] == Path(copied.split()[-1]).name


def test_the_build_context_holds_what_the_build_reads() -> None:
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for instruction in (i for stage in stages() for i in stage if i.startswith("COPY ")):
        if "--from" in instruction:
            continue
        for source in instruction.split()[1:-1]:
            assert source in allowed, f"{source} is copied but .dockerignore leaves it out"
            assert (ROOT / source).exists()


def faulted_environment(tmp_path: Path) -> Path:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = SANDBOX_TOML.read_text()
    assert text.count(f'"{AI_SERVICE}"') == 1
    path = tmp_path / "environment.toml"
    path.write_text(text.replace(f'"{AI_SERVICE}"', f'"http://127.0.0.1:{port}"'))
    return path


def entrypoint(tmp_path: Path, *args: str, **settings: str) -> tuple[int, dict[str, Any], str]:
    workdir = tmp_path / "workdir"  # the image's WORKDIR: not the repository
    workdir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "CI") and not k.startswith("UNIBAZZAR_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    done = subprocess.run([str(ENTRYPOINT), *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    summary_path = Path(settings["UNIBAZZAR_REPORTS_DIR"]) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return done.returncode, summary, done.stdout + done.stderr


@pytest.mark.sandbox
@pytest.mark.parametrize("fail_on", ["any", "never"])
def test_the_entrypoint_runs_the_installed_checks_by_its_environment_variables(
        running_sandbox: None, tmp_path: Path, fail_on: str) -> None:
    reports = tmp_path / "reports"
    status, summary, output = entrypoint(
        tmp_path, "-m", "ai-service", "-p", "no:xdist",
        UNIBAZZAR_ENV_FILE=str(faulted_environment(tmp_path)),
        UNIBAZZAR_REPORTS_DIR=str(reports), UNIBAZZAR_FAIL_ON=fail_on,
        UNIBAZZAR_METRICS_FILE=str(tmp_path / "metrics.prom"))
    assert summary, output
    assert summary["verdict"]["status"] == "failing"
    assert status == exit_status(Summary.model_validate(summary), fail_on) == (
        1 if fail_on == "any" else 0), output
    assert "--run-mode=scheduled" in summary["arguments"]  # the image's default run mode
    assert summary["version"] == version("unibazzar-health")
    assert (reports / "incident.md").exists() and (tmp_path / "metrics.prom").exists()
    # The installed checks ran, not the repository's folder by its path relative to it.
    assert all(not c["nodeid"].startswith("checks/") for c in summary["checks"])


@pytest.mark.sandbox
def test_the_run_mode_comes_from_the_environment(running_sandbox: None, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    _, summary, output = entrypoint(
        tmp_path, "-m", "ai-service", "-p", "no:xdist",
        UNIBAZZAR_ENV_FILE=str(faulted_environment(tmp_path)),
        UNIBAZZAR_REPORTS_DIR=str(reports), UNIBAZZAR_RUN_MODE="ci")
    assert "--run-mode=ci" in summary["arguments"], output


def test_a_bad_run_mode_is_a_usage_error(tmp_path: Path) -> None:
    status, summary, output = entrypoint(tmp_path, UNIBAZZAR_RUN_MODE="nightly",
                                         UNIBAZZAR_REPORTS_DIR=str(tmp_path / "reports"))
    assert status == 4 and not summary, output
    assert "nightly" in output
