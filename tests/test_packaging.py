"""The suite as an installed pytest plugin: a pytest11 entry point that is inert in any run
without runbook checks (this very self-test run among them), harmless when named again by
conftest.py or -p, still stopping a checks run on a bad environment file before any probe
(serially and under xdist); one wheel with the plugin, its catalog and the checks; and the
`unibazzar-health run` command that runs those checks from any folder."""

from __future__ import annotations

import configparser
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from conftest import ROOT

MODES = pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]],
                                ids=["serial", "xdist"])

PLAIN_TESTS = '''
import gc

from unibazzar_health.run_state import RUN_KEY


def test_plain(request):
    # Nothing of the plugin happened: no settings resolved, the collector left alone.
    assert RUN_KEY not in request.config.stash
    assert gc.get_threshold()[0] != 50_000
'''

ENV = '[environment]\nname = "packaging"\n\n[deadlines]\ndefault = 1.0\ncheck = 2.0\n'

CHECK = '''
from pathlib import Path

from unibazzar_health.judges.runbook import runbook_check


def observe(ctx):
    Path("probed").write_text("a probe ran")
    return 1


@runbook_check("auth.postgresql-connectivity", observe=observe)
def test_check(observed):
    assert observed == 1


def test_plugin_registered_once(request):
    modules = [p for p in request.config.pluginmanager.get_plugins()
               if getattr(p, "__name__", "") == "unibazzar_health.plugin"]
    assert len(modules) == 1
'''


def test_the_plugin_is_a_pytest11_entry_point_named_as_its_module() -> None:
    """Named as the module: conftest.py's pytest_plugins or -p naming it again finds it
    registered under that name and does nothing."""
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("unibazzar_health.plugin") == "unibazzar_health.plugin"
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("unibazzar-health") == "unibazzar_health.__main__:main"


@MODES
def test_a_run_without_checks_is_untouched_even_with_a_bad_environment(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: list[str]) -> None:
    """The plugin is loaded (entry point) but reads no environment file, writes no report and
    changes nothing in the process: a bad UNIBAZZAR_ENV_FILE does not matter to such a run."""
    monkeypatch.setenv("UNIBAZZAR_ENV_FILE", str(pytester.path / "no-such-environment.toml"))
    pytester.makepyfile(test_plain=PLAIN_TESTS)
    result = pytester.runpytest_subprocess(*mode)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["plugins:*unibazzar-health-*"])
    result.stdout.no_fnmatch_line("*UniBazzar incident verdict*")
    assert not (pytester.path / "reports").exists()


@MODES
def test_registered_by_entry_point_conftest_and_p_at_once_it_runs_once(
        pytester: pytest.Pytester, mode: list[str]) -> None:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env=ENV)
    pytester.makepyfile(test_checks=CHECK)
    result = pytester.runpytest_subprocess(
        *mode, "-p", "unibazzar_health.plugin", "--env-file=env.toml",
        f"--reports-dir={pytester.path / 'reports'}")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)
    assert (pytester.path / "reports" / "summary.json").exists()
    result.stdout.fnmatch_lines(["VERDICT HEALTHY*"])


@MODES
def test_a_bad_environment_still_stops_a_checks_run_before_any_probe(
        pytester: pytest.Pytester, mode: list[str]) -> None:
    """Resolved at the end of collection now, not at configure: the same one line naming
    file, key and value, exit 4, and no probe run. Under xdist the workers' collection is
    where the checks are seen; the controller raises the error once."""
    pytester.makefile(".toml", env=ENV + "\n[deadlines.typo]\nx = 1\n")
    pytester.makepyfile(test_checks=CHECK)
    result = pytester.runpytest_subprocess(*mode, "--env-file=env.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["ERROR: env.toml: key 'deadlines.typo': *"])
    assert not (pytester.path / "probed").exists(), "a probe ran before the error"
    assert not (pytester.path / "reports").exists()


def test_the_checks_ini_carries_the_repository_pytest_settings() -> None:
    """The installed run's ini (a wheel has no pyproject.toml) says what the repository's
    [tool.pytest.ini_options] says."""
    ini = configparser.ConfigParser()
    ini.read(ROOT / "plugins" / "unibazzar_health" / "checks.ini")
    repo = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert ini["pytest"]["addopts"].split() == repo["addopts"].split()
    assert ini["pytest"]["filterwarnings"].split("\n")[1:] == repo["filterwarnings"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--disable-pip-version-check", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("unibazzar_health-*.whl")
    return built


def test_the_wheel_ships_the_plugin_its_catalog_and_the_checks(wheel: Path) -> None:
    """Every package under plugins/ (a new one needs no listing: setup.py finds it), the data
    files, every check module, the entry point and the console script."""
    names = set(zipfile.ZipFile(wheel).namelist())
    plugins = ROOT / "plugins"
    for init in plugins.rglob("__init__.py"):
        assert str(init.relative_to(plugins)) in names, f"{init} is not in the wheel"
    for data in ("verdict/catalog.toml", "reports/coverage.toml", "reports/runbook.md",
                 "checks.ini", "py.typed"):
        assert f"unibazzar_health/{data}" in names
    checks = sorted(str(p.relative_to(ROOT / "checks")) for p in (ROOT / "checks").rglob("*.py"))
    assert checks and all(f"unibazzar_health_checks/{c}" in names for c in checks)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"[pytest11]\nunibazzar_health.plugin = unibazzar_health.plugin" in meta
    assert b"unibazzar-health = unibazzar_health.__main__:main" in meta


def test_the_wheel_installed_elsewhere_runs_its_own_checks(wheel: Path, tmp_path: Path) -> None:
    """Not the editable install: the wheel in a venv of its own (its dependencies borrowed
    from this one's site-packages), its `unibazzar-health run` collecting the checks it
    carries, from a folder that is neither the repository nor the venv."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    # A plain path line: the dependencies, without this venv's editable finder (.pth files
    # of a folder named so are not run).
    Path(site.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "env.toml").write_text(ENV)
    where = subprocess.run([str(python), "-c", "import unibazzar_health, unibazzar_health_checks;"
                            "print(unibazzar_health.__file__, unibazzar_health_checks.__file__)"],
                           capture_output=True, text=True, check=True, cwd=workdir).stdout
    assert all(path.startswith(str(venv)) for path in where.split()), where
    result = subprocess.run([str(venv / "bin" / "unibazzar-health"), "run", "--co", "-q",
                             "-m", "order-service", "--env-file=env.toml"],
                            capture_output=True, text=True, cwd=workdir, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "order_service/test_order_service.py::" in result.stdout


def test_the_runner_collects_the_installed_checks_from_any_folder(tmp_path: Path) -> None:
    """`python -m unibazzar_health run` from a folder that is not the repository: its own
    ini, that folder as rootdir, the shipped checks (here the editable install's)."""
    (tmp_path / "env.toml").write_text(ENV)
    result = subprocess.run(
        [sys.executable, "-m", "unibazzar_health", "run", "--co", "-q", "-m", "auth-service",
         "--env-file=env.toml"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "auth_service/test_auth_service.py::" in result.stdout
    assert "listing_service/" not in result.stdout


def test_the_runner_command_line() -> None:
    from unibazzar_health.runner import INI_FILE, pytest_command

    command = pytest_command(["-m", "order-service"], Path("/srv/probe"), python="python3")
    assert command[:3] == ["python3", "-m", "pytest"]
    assert command[3:6] == ["-c", str(INI_FILE), "--rootdir=/srv/probe"]
    assert command[-3:-1] == ["-m", "order-service"]
    assert Path(command[-1]).name == "checks"  # the editable install maps the package there


def test_installed_node_ids_keep_their_service_for_xdist_shares() -> None:
    from unibazzar_health.distribution import group_of

    assert group_of("auth_service/test_auth_service.py::test_x") == "auth-service"
    assert group_of("checks/auth_service/test_auth_service.py::test_x") == "auth-service"
