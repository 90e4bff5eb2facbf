"""Every next command a failing check prints runs as printed, with the real CLIs, against the
sandbox: under each game day (one on at a time) the suite's failing checks' commands are
collected from summary.json; the read-only ones (kubectl get/describe/logs/top/rollout
status|history, psql SELECTs, redis-cli reads, aws describe/list/get/head, curl GETs,
rabbitmqadmin list, local greps) are run with the sandbox's secrets exported and must
succeed; the ones that change things are checked, not run: kubectl's with --dry-run=server
(the emulator stores nothing), the others with `bash -n`.

A game day is switched on here only if test_game_days.py did not already show it to us while
it held it on (conftest.while_game_day_on): in a whole self-test run this module adds only the
commands' own time. A command is run under the first game day that prints it, and again under
the next one only while it has not yet succeeded."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    GAME_DAY_OBSERVERS,
    run_checks,
    sandbox,
    sandbox_logs_kept,
    sandbox_secrets,
)

TIMEOUT_S = 20.0  # a command still running then hangs (a watch, a follow that never ends)
CLIS = ("kubectl", "psql", "pg_isready", "redis-cli", "aws", "curl", "rabbitmqadmin")

# Game days that take away what some printed commands read (a server stopped, a table or a
# bucket deleted): while on, those commands fail as they would in the incident (`aws dynamodb
# describe-table` answers ResourceNotFoundException); they must succeed once it is off.
TAKES_AWAY = {"postgres-down", "redis-down", "dynamodb-table-missing", "s3-bucket-missing"}


# ---- which commands change things -------------------------------------------------------------
# Reserved words before a command (`do curl ...`, `then ...`), or a compound's end.
SHELL_KEYWORDS = {"do", "done", "then", "else", "elif", "fi", "if", "while", "until", "!", "{",
                  "}", "time"}
REDIRECTION = re.compile(r"^\d*(>>?|<|>&|<&|&>>?)")


def simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command of a pipeline or list: leading VAR=value and
    redirections (`2>&1`, `>/dev/null`) dropped."""
    lexer = shlex.shlex(re.sub(r"\d*[<>]&(\d+|-)", " ", command), posix=True,
                        punctuation_chars="|&;")
    lexer.whitespace_split = True
    found: list[list[str]] = [[]]
    skip = False
    for token in lexer:
        if skip:
            skip = False
        elif set(token) <= set("|&;"):
            found.append([])
        elif match := REDIRECTION.match(token):
            skip = match.end() == len(token)  # `> file`: the file is the next word
        elif found[-1] or not (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token)
                               or token in SHELL_KEYWORDS):
            found[-1].append(token)
    # A loop's header (`for saga in a b`) runs nothing: its body's commands are judged.
    return [words for words in found if words and words[0] != "for"]


def operands(args: list[str], valued: set[str]) -> list[str]:
    """The arguments that are neither options nor the values of options in ``valued``."""
    found: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-") and arg != "-":
            skip = "=" not in arg and arg in valued
        else:
            found.append(arg)
    return found


KUBECTL_VALUED = {"-s", "--server", "--context", "--cluster", "--user", "--kubeconfig", "-n",
                  "--namespace", "--token", "--request-timeout", "--cache-dir"}
KUBECTL_READS = {"get", "describe", "logs", "top", "explain", "api-resources", "api-versions",
                 "version", "events", "cluster-info"}
REDIS_VALUED = {"-h", "-p", "-s", "-a", "-u", "-n", "-r", "-i", "-d", "--user", "--pass",
                "--pattern", "--count", "--cacert", "--cacertdir", "--cert", "--key", "--sni"}
REDIS_SCANS = {"--scan", "--bigkeys", "--memkeys", "--hotkeys", "--stat", "--latency"}
REDIS_READS = {"ping", "info", "get", "mget", "exists", "ttl", "pttl", "type", "strlen",
               "dbsize", "scan", "keys", "hget", "hgetall", "hlen", "lrange", "llen",
               "smembers", "scard", "zrange", "zcard", "xlen", "xinfo", "time", "role"}
REDIS_READ_SUBCOMMANDS = {("client", "list"), ("client", "info"), ("slowlog", "get"),
                          ("slowlog", "len"), ("config", "get"), ("memory", "usage"),
                          ("memory", "stats"), ("memory", "doctor"), ("latency", "latest"),
                          ("latency", "doctor"), ("latency", "history"), ("object", "encoding")}
AWS_VALUED = {"--endpoint-url", "--region", "--profile", "--output", "--query", "--color",
              "--ca-bundle", "--cli-read-timeout", "--cli-connect-timeout"}
RABBITMQADMIN_VALUED = {"-H", "--host", "-P", "--port", "-V", "--vhost", "-u", "--username",
                        "-p", "--password", "-U", "--base-uri", "-c", "--config", "-N", "--node",
                        "-f", "--format", "-d", "--depth"}
XARGS_VALUED = {"-n", "-L", "-P", "-I", "-d", "-E", "-s", "-a"}
# Programs that only read (local files, name lookups), besides the CLIs above.
LOCAL_READS = {"grep", "egrep", "tail", "head", "wc", "sort", "uniq", "cut", "jq", "cat",
               "getent", "date", "pg_isready", "dig", "host", "nslookup"}
# Functions a SELECT can change things with.
SQL_WRITES = re.compile(r"\b(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|setval|"
                        r"nextval|set_config|pg_advisory\w*|lo_\w+)\s*\(", re.IGNORECASE)


CURL_BODY = {"--data", "--data-raw", "--data-binary", "--data-urlencode", "--data-ascii",
             "--form", "--form-string", "--upload-file", "--json"}
CURL_VALUED_SHORT = set("AbcCdDeEFHKmoPQrtTuUwxXyYz")


def curl_sends(args: list[str]) -> bool:
    """Whether curl sends more than a GET or HEAD: a method, a body, a form, an upload."""
    i = 0
    while i < len(args):
        arg, value = args[i], args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith("--"):
            name, equals, attached = arg.partition("=")
            if name in CURL_BODY:
                return True
            if name == "--request" and (attached if equals else value).upper() not in ("GET",
                                                                                      "HEAD"):
                return True
        elif arg.startswith("-"):
            for j, flag in enumerate(arg[1:], start=1):
                if flag in "dFT":
                    return True
                if flag in CURL_VALUED_SHORT:  # the rest of the word, or the next, is its value
                    method = arg[j + 1:] or value
                    if flag == "X" and method.upper() not in ("GET", "HEAD"):
                        return True
                    i += not arg[j + 1:]
                    break
        i += 1
    return False


def changes(words: list[str]) -> bool:
    """Whether one simple command changes anything; ValueError when this cannot tell."""
    program, args = Path(words[0]).name, words[1:]
    if program in LOCAL_READS:
        return False
    if program == "xargs":  # judged by the command it runs
        rest = operands(args, XARGS_VALUED)
        return bool(rest) and changes(args[args.index(rest[0]):])
    if program == "kubectl":
        verb = operands(args, KUBECTL_VALUED)[:2]
        return not ((verb[:1] and verb[0] in KUBECTL_READS)
                    or verb in (["rollout", "status"], ["rollout", "history"]))
    if program == "psql":
        sql = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--command")]
        sql += [a.split("=", 1)[1] for a in args if a.startswith("--command=")]
        return not sql or not all(re.match(r"\s*(SELECT|SHOW)\b", q, re.IGNORECASE)
                                  and not SQL_WRITES.search(q) for q in sql)
    if program == "redis-cli":
        if REDIS_SCANS & set(args):
            return False
        command = [w.lower() for w in operands(args, REDIS_VALUED)[:2]]
        return not ((command[:1] and command[0] in REDIS_READS)
                    or tuple(command) in REDIS_READ_SUBCOMMANDS)
    if program == "aws":
        service, operation = [*operands(args, AWS_VALUED), "", ""][:2]
        return not (operation.split("-")[0] in {"describe", "list", "get", "head"}
                    or (service, operation) == ("s3", "ls"))
    if program == "curl":
        return curl_sends(args)
    if program == "rabbitmqadmin":
        return operands(args, RABBITMQADMIN_VALUED)[:1] not in (["list"], ["show"])
    raise ValueError(f"cannot tell whether `{program}` changes anything: teach "
                     "tests/test_printed_commands.py which of its uses only read")


def test_commands_are_told_apart() -> None:
    reads = [
        "kubectl --server 'http://h' logs -l app=a -n ns --since=5m --tail=-1 --prefix "
        "| grep -E -e 'a|b'",
        "kubectl --server 'http://h' rollout history deployment/a -n ns",
        'PGPASSWORD="${P}" psql "host=h" -c "SELECT count(*) FROM pg_stat_activity;"',
        "REDISCLI_AUTH=\"${P}\" redis-cli -u 'redis://h:1/0' --scan --pattern 'listing:*'",
        "REDISCLI_AUTH=\"${P}\" redis-cli -u 'redis://h:1/0' slowlog get 10",
        "aws --endpoint-url 'http://h' dynamodb describe-table --table-name t --region r",
        "aws --endpoint-url 'http://h' cloudwatch get-metric-statistics --start-time "
        "$(( $(date +%s) - 300 )) --end-time $(date +%s)",
        "curl -s -u \"${K}:\" 'http://h/v1/events?limit=10'",
        "curl -s -o /dev/null -w '%{http_code}\\n' --max-time 30 'http://h/'",
        "rabbitmqadmin -H h list queues", "getent hosts db.internal",
        "kubectl -n ns get pods 2>&1 >/dev/null | tail -1",
    ]
    writes = [
        "kubectl --server 'http://h' rollout restart deployment/a -n ns",
        "kubectl --context c scale deployment/a --replicas=3 -n ns",
        "REDISCLI_AUTH=\"${P}\" redis-cli -u 'redis://h:1/0' del 'listing:1'",
        "redis-cli --scan --pattern 'listing:*' | xargs -r redis-cli unlink",
        'psql "host=h" -c "SELECT pg_terminate_backend(42);"',
        'psql "host=h" -c "UPDATE sagas SET state = \'retry\';"',
        "aws dynamodb update-table --table-name t --provisioned-throughput R=1,W=1",
        "curl -si --max-time 5 -X POST 'http://h/login' -d '{}' | grep -i ratelimit",
        "curl -s -XDELETE 'http://h/x'", "rabbitmqadmin purge queue name=q",
        "for saga in s-1 s-2; do curl -s -X POST 'http://h/sagas/'\"$saga\"'/retry'; done",
    ]
    assert [c for c in reads if any(changes(w) for w in simple_commands(c))] == []
    assert [c for c in writes if not any(changes(w) for w in simple_commands(c))] == []
    with pytest.raises(ValueError, match="`rm`"):
        changes(simple_commands("rm -rf /tmp/x")[0])


# ---- running them -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    game_day: str  # on while it ran ("" once every game day was off)
    how: str       # "ran", "dry run" (server side) or "syntax" (bash -n)
    ran: str       # what ran: the printed command, or its check
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        # redis-cli exits 0 on an error reply (NOAUTH, WRONGPASS...): read it from the output.
        refused = re.search(r"(?m)^(\(error\) )?(ERR|NOAUTH|WRONGPASS|NOPERM|WRONGTYPE)\b"
                            r"|AUTH failed", self.output) and "redis-cli" in self.ran
        return self.returncode == 0 and not refused

    def line(self) -> str:
        state = f"under {self.game_day}" if self.game_day else "every game day off"
        verdict = ("ok" if self.ok else "fails: taken away" if self.game_day in TAKES_AWAY
                   else f"FAILED (exit {self.returncode})")
        hint = ("\n  (a pipeline ending in grep exits 1 when nothing matched)"
                if not self.ok and self.returncode == 1 and re.search(r"\|\s*grep\b[^|]*$",
                                                                     self.ran) else "")
        return f"{self.how:8} {verdict:18} {self.seconds:4.1f} s {state}: {self.ran}{hint}"


_SCRATCH: list[tempfile.TemporaryDirectory[str]] = []


def environment() -> dict[str, str]:
    """An operator's shell on the sandbox: its secrets exported. Besides: kubectl's discovery
    cached afresh (an older emulator's must not answer), no kubeconfig of the developer's,
    aws v2's pager off, and curl told to fail on an HTTP error (it exits 0 on a 401 or a 404,
    which would hide a wrong key or path)."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="unibazzar-printed-commands-"))
        scratch = Path(_SCRATCH[0].name)
        (scratch / ".curlrc").write_text("fail\n")
        (scratch / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    scratch = Path(_SCRATCH[0].name)
    # Read afresh: a sandbox brought up again has new secrets.
    return {**os.environ, **sandbox_secrets(), "KUBECACHEDIR": str(scratch / "kube"),
            "KUBECONFIG": str(scratch / "kubeconfig"), "CURL_HOME": str(scratch),
            "AWS_PAGER": ""}


def shell(game_day: str, how: str, command: str, *bash_options: str) -> Trial:
    """``command`` in bash (-o pipefail: a failing kubectl before a grep fails the whole)."""
    started = time.monotonic()
    process = subprocess.Popen(["bash", *bash_options, "-c", command], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=environment(),
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its whole group: kubectl, the grep after it
        output, _ = process.communicate()
        output += f"\n(still running after {TIMEOUT_S:.0f} s)"
    tail = "\n".join(output.strip().splitlines()[-15:])
    return Trial(game_day, how, command, process.returncode, tail, time.monotonic() - started)


def restart_as_patch(words: list[str]) -> str:
    """`kubectl rollout restart` has no --dry-run: what it sends, a patch of the pod
    template's restartedAt annotation, as a server-side dry run on the same target."""
    at = words.index("rollout")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = json.dumps({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": now}}}}})
    return shlex.join([*words[:at], "patch", *words[at + 2:], "--type=strategic", "-p", patch,
                       "--dry-run=server"])


def check(game_day: str, command: str) -> list[Trial]:
    """Run a read-only command; check one that changes things without changing anything."""
    syntax = shell(game_day, "syntax", command, "-n")
    if not syntax.ok:
        return [syntax]
    parts = simple_commands(command)
    if not any(changes(words) for words in parts):
        return [shell(game_day, "ran", command, "-o", "pipefail")]
    if len(parts) != 1 or Path(parts[0][0]).name != "kubectl":
        return [syntax]  # no dry run to be had: checked as shell only
    words = parts[0]
    verb = operands(words[1:], KUBECTL_VALUED)[:2]
    if verb == ["rollout", "restart"]:
        # Its own flags parse (--help answers without asking the server), and the server
        # takes the change it would send.
        return [shell(game_day, "syntax", f"{command} --help >/dev/null"),
                shell(game_day, "dry run", restart_as_patch(words))]
    asked = any(w.startswith("--dry-run") for w in words)
    dry = shell(game_day, "dry run", command if asked else f"{command} --dry-run=server")
    if verb == ["rollout", "undo"] and not dry.ok and "no rollout history found" in dry.output:
        # The sandbox's deployments have one revision: nothing to go back to, as a cluster
        # deployed once would say (one deployed before has it). Its flags parse, and the
        # history undo starts from answers for the same target.
        history = command.replace(" rollout undo ", " rollout history ", 1)
        return [shell(game_day, "syntax", f"{command} --help >/dev/null"),
                shell(game_day, "ran", history)]
    return [dry]


# Per command: its trials so far (under game days, then with every game day off).
TRIALS: dict[str, list[Trial]] = {}
PRINTED: dict[str, list[str]] = {}  # per game day: its failing checks' commands
UNCLASSIFIED: dict[str, str] = {}   # a command this module cannot judge, and why
BROKEN: dict[str, str] = {}         # per game day: what went wrong looking while it was on


def passed(command: str, *, while_on: bool = False) -> bool:
    """Whether every trial of one of its runs succeeded (``while_on``: under a game day)."""
    return any(all(t.ok for t in trials) for trials in _runs(command)
               if trials[0].game_day or not while_on)


def _runs(command: str) -> list[list[Trial]]:
    """The trials of a command grouped by run (a run is one state: a game day, or none)."""
    runs: dict[str, list[Trial]] = {}
    for trial in TRIALS.get(command, []):
        runs.setdefault(trial.game_day, []).append(trial)
    return list(runs.values())


def look_while_on(name: str, summary: dict[str, Any]) -> None:
    """What the failing checks of a run printed, tried while its game day is still on."""
    commands = [c for entry in summary.get("checks", []) if entry.get("outcome") == "failed"
                for c in entry.get("commands", [])]
    PRINTED[name] = list(dict.fromkeys(commands))
    for command in PRINTED[name]:
        if command in UNCLASSIFIED or passed(command, while_on=True):
            continue
        try:
            TRIALS.setdefault(command, []).extend(check(name, command))
        except ValueError as exc:
            UNCLASSIFIED[command] = str(exc)


def _observe(name: str, summary: dict[str, Any]) -> None:
    try:
        look_while_on(name, summary)
    except Exception as exc:  # never break the game day's own test: ours reports it
        BROKEN[name] = f"{type(exc).__name__}: {exc}"


GAME_DAY_OBSERVERS.append(_observe)


def game_days() -> dict[str, dict[str, Any]]:
    listed = json.loads(sandbox("fault", "list", "--json").stdout)
    # A change that fails nothing (a rollout that landed) prints no next command.
    return {fault["name"]: fault for fault in listed if fault["fails"]}


GAME_DAYS = game_days()


@pytest.fixture(scope="module")
def clis() -> None:
    missing = [cli for cli in CLIS if shutil.which(cli) is None]
    assert not missing, f"not installed (scripts/bootstrap installs them): {missing}"


SANDBOX_KUBECTL = ["kubectl", "--server", "http://127.0.0.1:25443", "-n", "unibazzar"]


def workloads() -> dict[str, Any]:
    """Every Deployment's, ReplicaSet's and Pod's spec and annotations, by kind/name."""
    done = subprocess.run([*SANDBOX_KUBECTL, "get", "deployments,replicasets,pods", "-o", "json"],
                          capture_output=True, text=True, env=environment(), timeout=TIMEOUT_S,
                          check=True)
    return {f"{o['kind']}/{o['metadata']['name']}": (o["spec"], o["metadata"].get("annotations"))
            for o in json.loads(done.stdout)["items"]}


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox", "clis")
def test_a_server_side_dry_run_changes_nothing() -> None:
    """What runs instead of a printed change leaves the shared sandbox as it was."""
    before = workloads()
    kubectl = shlex.join(SANDBOX_KUBECTL)
    trials = [trial for change in (
        f"{kubectl} rollout restart deployment/auth-service",
        f"{kubectl} scale deployment/auth-service --replicas=5",
        f"{kubectl} delete pod auth-service-7d9f8-abc12",
        f"{kubectl} annotate deployment/order-service example.com/note=dry",
    ) for trial in check("", change)]
    assert [t.how for t in trials] == ["syntax", "dry run", "dry run", "dry run", "dry run"]
    assert all(t.ok for t in trials), "\n".join(f"{t.line()}\n{t.output}" for t in trials)
    assert workloads() == before


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox", "clis")
@pytest.mark.parametrize("name", list(GAME_DAYS))
def test_the_next_commands_printed_under_a_game_day_run_as_printed(
        tmp_path: Path, name: str) -> None:
    if name not in PRINTED:  # test_game_days.py did not show it to us: switch it on here
        with sandbox_logs_kept():
            sandbox("fault", name, "on")
            try:
                time.sleep(GAME_DAYS[name]["ripens_s"])
                _, summary = run_checks(tmp_path)
                look_while_on(name, summary)
            finally:
                sandbox("fault", name, "off")
    assert name not in BROKEN, f"looking while {name} was on: {BROKEN[name]}"
    assert PRINTED[name], f"{name}: its failing checks printed no next command"
    lines, failures = [], []
    for command in PRINTED[name]:
        if command in UNCLASSIFIED:
            failures.append(f"{UNCLASSIFIED[command]}\n  {command}")
            continue
        trials = TRIALS.setdefault(command, [])
        taken_away = all(t.game_day in TAKES_AWAY for t in trials if not t.ok)
        if taken_away and not passed(command):
            # What the game day took away is back now: the command must work again.
            trials.extend(check("", command))
        lines += [t.line() for run in _runs(command) for t in run]
        if not (passed(command, while_on=True) or (taken_away and passed(command))):
            failures += [f"{t.line()}\n{t.output}" for t in trials if not t.ok]
    print(f"{name}:", *lines, sep="\n  ")
    assert not failures, "\n\n".join(failures)
