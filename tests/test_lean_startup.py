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


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dead_environment(tmp_path: Path) -> Path:
    port = closed_port()
    text = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", SANDBOX_TOML.read_text())
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


def imported_top_level(tmp_path: Path, *args: str) -> set[str]:
    """Every module (and its top-level package) a checks run had imported when it ended."""
    (tmp_path / "modules_dump.py").write_text(MODULES_DUMP)
    dump = tmp_path / "modules.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(MODULES_DUMP=str(dump),
               PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "modules_dump",
         f"--env-file={dead_environment(tmp_path)}", f"--reports-dir={tmp_path / 'reports'}",
         "-q", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert (tmp_path / "reports" / "summary.json").exists(), result.stdout + result.stderr
    names = dump.read_text().split()
    plugins = set(Path(f"{dump}.plugins").read_text().split())
    assert not (TEST_PLUGINS & plugins), f"test-only plugins registered: {TEST_PLUGINS & plugins}"
    return set(names) | {name.split(".")[0] for name in names}


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
