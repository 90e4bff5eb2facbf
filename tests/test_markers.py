"""Tags from the catalog: a marker per service, per backend a check stands on, and
canary_write for the checks that write; --read-only skips (and never observes) the writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unibazzar_health.verdict.catalog import BACKEND_MARKERS, load_catalog

IDS = ["order.saga-orchestration", "order.payment-provider-webhooks", "listing.s3-image-uploads",
       "auth.authentication-logs", "ai.vector-database-connectivity"]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    log = pytester.path / "observed.log"
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "tags"\n')
    pytester.makepyfile(test_tags=f'''
from unibazzar_health.judges.runbook import runbook_check

def observe_as(check_id):
    def observe(ctx):
        with open({str(log)!r}, "a") as out:
            out.write(check_id + "\\n")
        return {{}}
    return observe
''' + "\n".join(f'''
@runbook_check("{cid}", observe=observe_as("{cid}"))
def test_{n}(observed):
    pass
''' for n, cid in enumerate(IDS)))
    return pytester


def selected(pytester: pytest.Pytester, *args: str) -> set[str]:
    result = pytester.runpytest_subprocess("--env-file=env.toml",
                                           f"--reports-dir={pytester.path / 'r'}", *args)
    assert result.ret in (0, 1, 6), result.stdout.str()
    summary = json.loads((pytester.path / "r" / "summary.json").read_text())
    return {c["id"] for c in summary["checks"] if c["outcome"] == "passed"}


@pytest.mark.parametrize(("expression", "expected"), [
    ("order-service and postgres", {"order.saga-orchestration"}),
    ("not canary_write", {"order.saga-orchestration", "auth.authentication-logs",
                          "ai.vector-database-connectivity"}),
    ("logs", {"auth.authentication-logs"}),
    ("vector-db or s3", {"ai.vector-database-connectivity", "listing.s3-image-uploads"}),
    ("payments", {"order.payment-provider-webhooks"}),
])
def test_markers_select_by_service_backend_and_writes(suite: pytest.Pytester, expression: str,
                                                      expected: set[str]) -> None:
    assert selected(suite, "-p", "no:xdist", "-m", expression) == expected


@pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_read_only_skips_the_writers_and_never_observes_them(suite: pytest.Pytester,
                                                             mode: list[str]) -> None:
    result = suite.runpytest_subprocess("--env-file=env.toml", f"--reports-dir={suite.path / 'r'}",
                                        "--read-only", *mode)
    summary = json.loads((suite.path / "r" / "summary.json").read_text())
    skipped = {c["id"]: c["message"] for c in summary["checks"] if c["outcome"] == "skipped"}
    assert set(skipped) == {"order.payment-provider-webhooks", "listing.s3-image-uploads"}
    assert skipped["listing.s3-image-uploads"].startswith("read-only run: writes an S3 object")
    observed = set((suite.path / "observed.log").read_text().split())
    assert observed == set(IDS) - set(skipped)
    result.stdout.fnmatch_lines(["*READ-ONLY skipped the checks that write: *"])


def test_every_dependency_in_the_catalog_is_a_service_or_a_marked_backend() -> None:
    from unibazzar_health.config.names import SERVICES

    for entry in load_catalog().checks.values():
        assert set(entry.depends_on) <= set(BACKEND_MARKERS) | set(SERVICES), entry.id


def test_the_checks_run_registers_every_marker(pytester: pytest.Pytester) -> None:
    root = Path(__file__).resolve().parent.parent
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pytest", "--markers"], cwd=root,
                          capture_output=True, text=True, timeout=60)
    for marker in [*BACKEND_MARKERS.values(), "canary_write", "order-service"]:
        assert f"@pytest.mark.{marker}:" in done.stdout, marker


def test_a_related_systems_check_stands_on_what_its_service_uses() -> None:
    """The dependency map is declared once (config/names.py): each service's related-systems
    check stands on those backends, in that order, and probes each of them."""
    import importlib.util

    from unibazzar_health.config.names import SERVICE_PREFIX, SERVICES, dependencies_of

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(
        "checks_related_systems", root / "checks" / "platform" / "test_related_systems.py")
    assert spec is not None and spec.loader is not None
    related = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(related)
    for service in SERVICES:
        entry = load_catalog().check(f"{SERVICE_PREFIX[service]}.related-systems")
        assert entry.depends_on == tuple(dependencies_of(service)), service
        assert set(entry.depends_on) <= set(related.ROUND_TRIPS), service
    assert dependencies_of("listing-service") == {
        "dynamodb": None, "s3": None, "rabbitmq": None, "redis": "listing-cache"}


def test_a_related_systems_entry_that_writes_its_own_depends_on_is_a_catalog_error() -> None:
    import tomllib
    from importlib import resources

    from unibazzar_health.verdict.catalog import CatalogError, parse_catalog

    raw = tomllib.loads(resources.files("unibazzar_health.verdict").joinpath("catalog.toml")
                        .read_text("utf-8"))
    raw["checks"]["ai.related-systems"]["depends_on"] = ["vector-db"]
    with pytest.raises(CatalogError, match=r"check ai\.related-systems: no depends_on here"):
        parse_catalog(raw)


def test_each_backend_is_spelt_once_and_its_keys_derive_from_it() -> None:
    """``vector-db`` in the catalog, the markers and the probes; ``vector_db`` in the
    environment file: one declaration, the other spelling derived."""
    from unibazzar_health.config.names import BACKENDS_BY_NAME
    from unibazzar_health.config.platform import Deadlines

    vector = BACKENDS_BY_NAME["vector-db"]
    assert (vector.marker, vector.key) == ("vector-db", "vector_db")
    assert BACKEND_MARKERS["vector-db"] == "vector-db"
    assert Deadlines.model_validate({"vector_db": 1.5}).model_dump()["vector_db"] == 1.5
    own = {b.key for b in BACKENDS_BY_NAME.values() if b.own_deadline}
    assert set(Deadlines.model_fields) == own | {"default", "check", "http"}
