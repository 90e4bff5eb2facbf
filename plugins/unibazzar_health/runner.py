"""``unibazzar-health run [pytest options]``: the checks shipped in this package, run by pytest
from any folder, as the repository runs its checks/ folder. The image's entrypoint calls it.

The working directory plays the repository's part: ``--env NAME`` reads
``environments/NAME.toml`` there and reports go to ``reports/`` there unless ``--reports-dir``
says otherwise. Select checks with ``-m`` or ``-k``; the whole shipped catalog is collected.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

CHECKS_PACKAGE = "unibazzar_health_checks"
PLUGIN = "unibazzar_health.plugin"
INI_FILE = Path(__file__).with_name("checks.ini")


class RunnerError(Exception):
    pass


def checks_dir() -> Path:
    """Where the installed checks are (the repository's checks/ in an editable install)."""
    spec = importlib.util.find_spec(CHECKS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RunnerError(f"the checks package {CHECKS_PACKAGE} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def pytest_command(args: Sequence[str], cwd: Path, python: str = sys.executable) -> list[str]:
    """The pytest command line for ``args``: our ini file (never one found by walking up from
    site-packages), the working directory as rootdir, the plugin named even where plugin
    autoloading is off (a no-op where its entry point loaded it), the shipped checks."""
    return [python, "-m", "pytest", "-c", str(INI_FILE), f"--rootdir={cwd}", "-p", PLUGIN,
            *args, str(checks_dir())]


def main(args: Sequence[str]) -> int:
    try:
        command = pytest_command(args, Path.cwd())
    except RunnerError as exc:
        print(f"unibazzar-health run: {exc}", file=sys.stderr)
        return 4  # pytest's usage error
    sys.stdout.flush()
    # exec, not a child: signals (a CronJob's deadline, Ctrl-C) reach pytest itself, and the
    # summary records pytest's own arguments.
    os.execv(command[0], command)
    return 0  # not reached
