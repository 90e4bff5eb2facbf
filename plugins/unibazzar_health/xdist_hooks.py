"""xdist's side of a checks run: hooks registered (plugin.py's pytest_configure) only where
xdist is installed. Workers receive only serialised data: the environment to_wire, or the
controller's error with it; their share of the checks comes from distribution.py."""

from __future__ import annotations

from typing import Any

import pytest

from unibazzar_health.activation import activate
from unibazzar_health.distribution import SHARE_KEY, make_scheduler
from unibazzar_health.options import wants_environment
from unibazzar_health.run_state import RUN_KEY, WIRE_ERROR_KEY, WIRE_KEY


def _shares_up_front(config: pytest.Config) -> bool:
    """Our scheduler replaces xdist's default one (``--dist load``, what ``-n`` implies);
    another ``--dist`` the user chose is left alone."""
    return bool(config.getoption("dist", None) == "load")


class XdistHooks:
    """Registered only where xdist is installed: hand workers the settings resolved once,
    and every worker its whole share of checks at once (see distribution.py)."""

    def __init__(self) -> None:
        self.error: str | None = None

    def pytest_configure_node(self, node: Any) -> None:
        # Workers start probing as soon as their collection ends, which the controller never
        # sees: it resolves the settings when it hands them to its first worker. An error is
        # kept until a worker reports that it collected checks (pytest_testnodedown): a
        # distributed run without checks stays unaffected.
        config = node.config
        state = config.stash.get(RUN_KEY, None)
        if state is None and self.error is None and wants_environment(config):
            try:
                state = activate(config)
            except pytest.UsageError as exc:
                self.error = str(exc)
        if state is not None and state.env is not None:
            node.workerinput[WIRE_KEY] = state.env.to_wire()
        elif self.error is not None:
            node.workerinput[WIRE_ERROR_KEY] = self.error
        node.workerinput[SHARE_KEY] = state is not None and _shares_up_front(config)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        reported = getattr(node, "workeroutput", {}).get(WIRE_ERROR_KEY)
        if reported:
            raise pytest.UsageError(reported)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if RUN_KEY not in config.stash or not _shares_up_front(config):
            return None
        return make_scheduler(config, log)
