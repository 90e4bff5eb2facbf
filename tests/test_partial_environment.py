"""An environment without a section: the checks that need it are skipped ("not configured"),
never broken, and the verdict is judged on the checks that could run (docs/environments.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unibazzar_health.verdict.catalog import load_catalog

from conftest import SANDBOX_TOML, run_checks

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]

# They read a service's health endpoint besides its Deployment, or its log file besides its
# pods' logs: without [kubernetes] they may judge the other alone, so passing is as right as
# being skipped.
HEALTH_AND_DEPLOYMENT = re.compile(r"\.(scope-and-impact|error-patterns)$")


def without_section(tmp_path: Path, section: str) -> Path:
    """A copy of the sandbox environment with ``[section]`` and its keys removed."""
    text, found = re.subn(rf"(?ms)^\[{re.escape(section)}\]\n.*?(?=^\[|\Z)", "",
                          SANDBOX_TOML.read_text())
    assert found == 1, f"[{section}] is not a section of {SANDBOX_TOML}"
    path = tmp_path / f"no-{section}.toml"
    path.write_text(text)
    return path


def test_without_kubernetes_its_checks_are_skipped_not_broken(tmp_path: Path) -> None:
    result, summary = run_checks(tmp_path, env_file=without_section(tmp_path, "kubernetes"))
    assert summary, result.stdout + result.stderr
    outcomes = {check["id"]: check for check in summary["checks"]}
    needing = [entry.id for entry in load_catalog().checks.values()
               if "kubernetes" in entry.depends_on]
    assert needing and set(needing) <= set(outcomes), sorted(set(needing) - set(outcomes))
    for check_id in needing:
        check = outcomes[check_id]
        allowed = {"skipped", "passed"} if HEALTH_AND_DEPLOYMENT.search(check_id) else {"skipped"}
        assert check["outcome"] in allowed, (check_id, check["outcome"], check["message"])
        if check["outcome"] == "skipped":
            assert "kubernetes" in check["message"], (check_id, check["message"])
    verdict = summary["verdict"]
    assert not set(needing) & set(verdict["broken_checks"]), verdict
    # The sandbox is healthy: what could run passed, and what could not is no reason to
    # call the verdict incomplete.
    assert verdict["status"] == "healthy", (verdict, result.stdout[-3000:])
    assert "ConfigException" not in result.stdout + result.stderr
