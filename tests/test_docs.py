"""The documentation says what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from unibazzar_health.verdict.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent


def test_docs_checks_lists_every_catalog_check_with_its_step_and_class() -> None:
    text = (ROOT / "docs" / "checks.md").read_text()
    catalog = load_catalog()
    listed = set(re.findall(r"\| `([a-z]+\.[a-z0-9-]+)` \|", text))
    assert listed == set(catalog.checks)
    for entry in catalog.checks.values():
        row = next(line for line in text.splitlines() if f"| `{entry.id}` |" in line)
        assert row.startswith(f"| {entry.step} | "), row
        if not entry.id.endswith(".related-systems"):
            severity = catalog.severity_of(entry.impact).level
            assert f"| {entry.impact} ({severity}) |" in row, row


def test_docs_checks_lists_every_fix_by_failure_kind_in_the_catalogs_words() -> None:
    text = (ROOT / "docs" / "checks.md").read_text()
    catalog = load_catalog()
    rows = re.findall(r"^\| `([a-z0-9*-]+)` \| `([a-z_*]+)` \| ([^|]+) \|", text, re.MULTILINE)
    assert {(dependency, kind) for dependency, kind, _ in rows} == set(catalog.failure_fixes)
    for dependency, kind, fix in rows:
        assert fix == " ".join(catalog.failure_fixes[(dependency, kind)].fixes), (dependency, kind)


def test_docs_checks_lists_every_failure_mode_of_the_catalog() -> None:
    """The "Fixes by failure mode" table names each check's modes (`*.<step>`: every
    service's), and only those."""
    text = (ROOT / "docs" / "checks.md").read_text()
    section = text.split("## Fixes by failure mode", 1)[1].split("\n## ", 1)[0]
    catalog = load_catalog()
    listed = set()
    for check, mode in re.findall(r"^\| `([a-z*]+\.[a-z0-9-]+)` \| `([a-z-]+)` \|", section,
                                  re.MULTILINE):
        step = check.removeprefix("*.")
        listed |= {(c.id, mode) for c in catalog.checks.values()
                   if c.id == check or (check.startswith("*.") and c.id.endswith("." + step))}
    assert listed == {(c.id, m) for c in catalog.checks.values() for m in c.modes}


def test_docs_checks_lists_every_impact_class_under_its_severity() -> None:
    text = (ROOT / "docs" / "checks.md").read_text()
    section = text.split("## Impact classes", 1)[1].split("\n## ", 1)[0]
    listed = {level: re.findall(r"`([a-z-]+)`", classes)
              for level, classes in re.findall(r"^\| (SEV\d) \| (.+) \|$", section, re.MULTILINE)}
    assert listed == {level: list(s.impacts) for level, s in load_catalog().severities.items()}


def test_docs_environments_lists_every_section_and_every_key_of_the_small_ones() -> None:
    """Every section of an environment file has its row in docs/environments.md; for the
    sections read by the messages and the escalation, every key is named in it."""
    from pydantic import BaseModel

    from unibazzar_health.config.environment import EnvironmentFile

    text = (ROOT / "docs" / "environments.md").read_text()
    rows = {name: line for line in text.splitlines()
            for name in re.findall(r"^\| `\[\[?([a-z_]+)", line)}
    assert set(EnvironmentFile.model_fields) <= set(rows), \
        sorted(set(EnvironmentFile.model_fields) - set(rows))
    for section in ("report", "contacts", "escalation", "calendar", "oncall"):
        model = EnvironmentFile.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        missing = [key for key in model.model_fields if f"`{key}`" not in rows[section]]
        assert not missing, (section, missing)


def test_docs_architecture_names_every_package_and_only_paths_that_exist() -> None:
    """Every subpackage of the plugin has its paragraph, every layer of the import-linter
    contract is drawn, and every file the page points to (`config/names.py`,
    `verdict/catalog.toml`, `tests/receivers.py`, …) is there."""
    import tomllib

    text = (ROOT / "docs" / "architecture.md").read_text()
    plugin = ROOT / "plugins" / "unibazzar_health"
    packages = sorted(p.parent.name for p in plugin.glob("*/__init__.py"))
    assert packages, plugin
    for package in packages:
        assert f"**`{package}/`**" in text, f"docs/architecture.md has no paragraph on {package}/"
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in contracts["contracts"] if c["type"] == "layers")["layers"]
    drawn = text.split("## The layers", 1)[1].split("\n## ", 1)[0]
    for layer in layers:
        for module in re.split(r"\s*[:|]\s*", layer):
            assert module in drawn, f"layer {module} is not drawn in docs/architecture.md"
    files = {p.name for p in plugin.rglob("*") if p.is_file()}
    for path in set(re.findall(r"`([\w./-]+\.(?:py|toml|md|json))(?:::\w+)?`", text)):
        if "/" not in path:  # a file of the package the paragraph is about, or an output
            known = path in files or (ROOT / path).exists() or path.endswith((".json", ".md"))
            assert known, f"docs/architecture.md names {path}, which is not there"
            continue
        here = [base / path for base in (ROOT, plugin, plugin / "incidents")]
        assert any(p.exists() for p in here) or path.startswith("../"), \
            f"docs/architecture.md names {path}, which is not there"
