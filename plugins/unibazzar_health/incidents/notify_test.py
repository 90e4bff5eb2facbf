"""``python -m unibazzar_health notify test --env NAME``: the test page. One clearly marked
test message through each notifier the environment configures (PagerDuty: a trigger of
severity info, resolved at once; the ticket: an issue closed at once), each within the
environment's ``[notify]`` deadline, outside the incident store, and each service's answer
printed — so on-call proves the path before the night it matters. Exit 0 when every
notifier accepted its test, 1 when one did not, 2 when none is configured."""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from unibazzar_health.config.errors import EnvironmentFileError
from unibazzar_health.incidents.notifiers.base import DeliveryError, RequestBudget
from unibazzar_health.probes.deadline import within


def add_command(commands: Any) -> None:
    notify = commands.add_parser("notify", help="the notifiers: 'notify test' sends a test "
                                                "page through each one configured")
    actions = notify.add_subparsers(dest="action", required=True)
    test = actions.add_parser("test", help="send one marked test message through each "
                                           "configured notifier and print its answer")
    where = test.add_mutually_exclusive_group()
    where.add_argument("--env", metavar="NAME", help="environments/NAME.toml")
    where.add_argument("--env-file", metavar="PATH", help="the environment file")
    test.add_argument("--only", metavar="NOTIFIER", action="append",
                      help="test only this notifier (slack, pagerduty, ticket, webhook)")
    test.set_defaults(run=_test_command)


def _test_command(args: argparse.Namespace) -> int:
    # Imported here: the command line builds its parser from this module for every command;
    # only this one reads the environment file's settings (pydantic models).
    from unibazzar_health.config.environment import choose_environment_file
    from unibazzar_health.incidents.config import load_environment, notifiers

    path = choose_environment_file(Path.cwd(), args.env, args.env_file, os.environ)
    try:
        env = load_environment(path, os.environ)
    except EnvironmentFileError as exc:
        raise SystemExit(str(exc)) from None
    chosen = [n for n in notifiers(env) if not args.only or n.name in args.only]
    if not chosen:
        print(f"{path}: no notifier configured ([notify.*])"
              + (f" among {', '.join(args.only)}" if args.only else ""), file=sys.stderr)
        return 2
    notify = env.spec.notify
    assert notify is not None  # notifiers() found some
    redactor = env.redactor()
    failed = 0
    for notifier in chosen:
        ok, lines = test_one(notifier, notify.deadline, notify.budget)
        failed += not ok
        head = f"{notifier.name}: {'ok' if ok else 'FAILED'}"
        print(redactor.text(head + (" — " + lines[0] if lines else "")))
        for line in lines[1:]:
            print(redactor.text("    " + line))
    return 1 if failed else 0


def test_one(notifier: Any, deadline: float, budget: float) -> tuple[bool, list[str]]:
    """(accepted, the service's answers) for one notifier's test, bounded by ``budget``."""
    ends = time.monotonic() + budget
    finished, value = within(partial(notifier.test, RequestBudget(deadline, ends)), budget,
                             "unibazzar-post")
    if not finished:
        return False, [f"no answer within {budget:g} s"]
    if isinstance(value, DeliveryError):
        kind = ("refused" if value.permanent else
                "may have arrived" if value.maybe_delivered else "not delivered")
        lines = [f"{kind}: {value.reason}"]
        if value.fix:
            lines.append(value.fix)
        if value.retry_after is not None:
            lines.append(f"the service asked to wait {value.retry_after:g} s")
        return False, lines
    if isinstance(value, BaseException):
        return False, [f"{type(value).__name__} in the {notifier.name} notifier"]
    return True, list(value)
