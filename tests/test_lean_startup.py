"""Lean start-up: a checks run imports only the clients its selected checks need, and never
an emulator or a test-only plugin. A one-hook plugin writes down sys.modules when the run ends,
against an environment whose backends are all closed ports (the checks fail fast; what matters
is what they imported on the way)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SANDBOX_TOML

# Imported by nothing a checks run needs: the sandbox's emulators and servers, the self-tests'
# plugins.
NEVER = {"moto", "localstripe", "kmock", "flask", "chromadb", "werkzeug", "unibazzar_sandbox"}
# (pytest itself imports _pytest.pytester for its type exports; what must not happen is the
# plugin being registered.)
TEST_PLUGINS = {"pytester", "kmock", "anyio"}
CLIENTS = {"psycopg", "redis", "pika", "boto3", "botocore", "kubernetes", "requests"}
# Imported only by a run that asks for metrics (--metrics-file, --pushgateway).
METRICS = "prometheus_client"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dead_environment(tmp_path: Path) -> Path:
    port = closed_port()
    text = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", SANDBOX_TOML.read_text())
    # Without [impact]: its CloudWatch source needs boto3 in every service's run (each
    # scope-and-impact reads its share), which would hide what the other checks import.
    text = re.sub(r"(?ms)^\[impact(\.[^\]]+)?\]\n.*?(?=^\[|\Z)", "", text)
    # Its own secrets: this must run on a machine where the sandbox never came up.
    names = sorted(set(re.findall(r'_env = "([A-Z0-9_]+)"', text)))
    (tmp_path / "secrets.env").write_text("".join(f"{n}=placeholder-{n.lower()}\n" for n in names))
    text = re.sub(r'(?m)^secrets_file = .*$', 'secrets_file = "secrets.env"', text)
    path = tmp_path / "closed.toml"
    path.write_text(text)
    return path


MODULES_DUMP = """
import os, sys

def pytest_unconfigure(config):
    with open(os.environ["MODULES_DUMP"], "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
    with open(os.environ["MODULES_DUMP"] + ".plugins", "w") as out:
        out.write("\\n".join(sorted(name for name, _ in
                                     config.pluginmanager.list_name_plugin())))
"""


def run_dumping_modules(tmp_path: Path, cwd: Path, *args: str,
                        **environ: str) -> tuple[subprocess.CompletedProcess[str], set[str],
                                                 set[str]]:
    """A pytest run in ``cwd``: its result, every module (and its top-level package) it had
    imported when it ended, and the names of the plugins registered."""
    (tmp_path / "modules_dump.py").write_text(MODULES_DUMP)
    dump = tmp_path / "modules.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(MODULES_DUMP=str(dump),
               PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
               **environ)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "modules_dump", "-q", *args],
                            capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    names = dump.read_text().split()
    plugins = set(Path(f"{dump}.plugins").read_text().split())
    return result, set(names) | {name.split(".")[0] for name in names}, plugins


def imported_top_level(tmp_path: Path, *args: str) -> set[str]:
    """Every module (and its top-level package) a checks run had imported when it ended."""
    result, modules, plugins = run_dumping_modules(
        tmp_path, ROOT, f"--env-file={dead_environment(tmp_path)}",
        f"--reports-dir={tmp_path / 'reports'}", *args)
    assert (tmp_path / "reports" / "summary.json").exists(), result.stdout + result.stderr
    assert not (TEST_PLUGINS & plugins), f"test-only plugins registered: {TEST_PLUGINS & plugins}"
    return modules


@pytest.mark.parametrize(("marker", "needed", "not_needed"), [
    ("auth-service", {"psycopg", "requests", "kubernetes"}, {"boto3", "botocore", "pika", "redis"}),
    ("ai-service", {"redis", "requests"}, {"boto3", "botocore", "pika", "psycopg"}),
    ("order-service", {"psycopg", "requests", "pika"}, {"boto3", "botocore", "redis"}),
])
def test_a_service_run_imports_only_the_clients_its_checks_need(
        tmp_path: Path, marker: str, needed: set[str], not_needed: set[str]) -> None:
    modules = imported_top_level(tmp_path, "-m", marker)
    assert needed <= modules, f"-m {marker} did not import {sorted(needed - modules)}"
    assert not (not_needed & modules), f"-m {marker} imported {sorted(not_needed & modules)}"
    assert not (NEVER & modules), f"-m {marker} loaded {sorted(NEVER & modules)}"


def test_the_whole_catalog_loads_no_emulator_or_test_plugin(tmp_path: Path) -> None:
    modules = imported_top_level(tmp_path)
    assert modules >= CLIENTS, f"the whole catalog never imported {sorted(CLIENTS - modules)}"
    assert not (NEVER & modules), f"a checks run loaded {sorted(NEVER & modules)}"
    assert METRICS not in modules, "a run without --metrics-file imported prometheus_client"


def test_only_a_run_asking_for_metrics_imports_their_library(tmp_path: Path) -> None:
    modules = imported_top_level(tmp_path, "-m", "ai-service",
                                 f"--metrics-file={tmp_path / 'metrics.prom'}")
    assert METRICS in modules
    assert (tmp_path / "metrics.prom").exists()


def test_a_run_without_checks_loads_the_plugin_and_nothing_it_would_use(tmp_path: Path) -> None:
    """The pytest11 entry point loads the plugin into every pytest run where the package is
    installed; one that collects no runbook check reads no environment file (the one named
    here does not exist), imports no client and no metrics library, writes no report."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_plain.py").write_text("def test_plain():\n    pass\n")
    result, modules, plugins = run_dumping_modules(
        tmp_path, project, UNIBAZZAR_ENV_FILE=str(tmp_path / "no-such-environment.toml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unibazzar_health.plugin" in plugins, "the entry point did not load the plugin"
    assert not (CLIENTS & modules), f"a run without checks imported {sorted(CLIENTS & modules)}"
    assert METRICS not in modules
    # Nor the environment's settings: pydantic costs ~0.08 s to every pytest run in the venv.
    assert "pydantic" not in modules
    assert not (project / "reports").exists()
