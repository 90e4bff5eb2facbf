"""Every command a failed check prints is safe to paste into a shell during an incident:
filled from the shipped environments (the sandbox's, the production example), each one is
valid shell, leaves no placeholder empty, names the cluster and namespace in every kubectl
call, quotes every URL and names secrets instead of carrying them."""

from __future__ import annotations

import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.config.environment import Environment, load_environment
from unibazzar_health.config.platform import KubernetesTarget
from unibazzar_health.verdict.catalog import (
    ANY_DEPENDENCY,
    OPTIONAL_NAMES,
    CatalogError,
    fill_commands,
    load_catalog,
    names_in,
    parse_catalog,
)
from unibazzar_health.verdict.results import command_names, remedies

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = ROOT / "environments" / "sandbox.toml"
PRODUCTION = ROOT / "environments" / "production.toml.example"
CATALOG = load_catalog()
# What only a check's Finding names (catalog.FINDING_NAMES), and the host a failure_fixes
# command looks up: samples.
FINDING = {"pod": "auth-service-7d9f8-abc12", "replicas": "3", "read_capacity": "10",
           "write_capacity": "5", "error_log_file": "/var/log/unibazzar/auth-service.log",
           "saga_ids": "saga-1 'saga 2'", "saga_ids_pattern": "'saga-1|saga 2'",
           "saga_logs_window": "7260s"}
FAILED_HOST = "db.internal.unibazzar.example"
# How each environment selects its cluster: what every kubectl command starts with.
KUBECTL = {"sandbox": "kubectl --server 'http://127.0.0.1:25443'",
           "production": "kubectl --context unibazzar-prod"}


def secret_variables(raw: Any) -> list[str]:
    """The variables the file's ``*_env`` keys name."""
    found: list[str] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key.endswith("_env") and isinstance(value, str):
                found.append(value)
            else:
                found += secret_variables(value)
    return found


def kubeconfig(tmp_path: Path, context: str, current: str | None = None) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n"
                    "clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443'}\n"
                    f"contexts:\n- name: {context}\n  context: {{cluster: c}}\n"
                    + (f"current-context: {current}\n" if current else ""))
    return path


@dataclass(frozen=True)
class Loaded:
    name: str
    env: Environment
    secrets: dict[str, str]


def load(name: str, tmp_path: Path, text: str | None = None,
         kube_current: str | None = None) -> Loaded:
    """A shipped environment file as a run loads it, with made-up secret values (the
    sandbox's from the environment, not from the dotenv file a running sandbox writes)."""
    source = SANDBOX if name == "sandbox" else PRODUCTION
    text = source.read_text() if text is None else text
    if name == "sandbox":
        text = "\n".join(line for line in text.splitlines()
                         if not line.startswith("secrets_file"))
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    secrets = {var: f"s3cr3t-value-of-{var.lower()}"
               for var in secret_variables(tomllib.loads(text))}
    environ = dict(secrets)
    if name == "production":
        environ["KUBECONFIG"] = str(kubeconfig(tmp_path, "unibazzar-prod", kube_current))
    return Loaded(name, load_environment(path, environ), secrets)


@pytest.fixture(scope="module", params=["sandbox", "production"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    return load(request.param, tmp_path_factory.mktemp(request.param))


@dataclass(frozen=True)
class Command:
    where: str  # the check, and the failure_fixes entry it came from
    template: str
    names: dict[str, str]
    text: str


def every_command(env: Environment) -> Iterator[Command]:
    """Every command of every check, of each of its failure modes and of every failure_fixes
    entry a check can show, filled as results.remedies fills them (a command needing a name
    the environment leaves out, as an optional key, is left out)."""
    for entry in CATALOG.checks.values():
        names = command_names(env, entry) | FINDING
        own = [(entry.id, t) for t in entry.commands]
        own += [(f"{entry.id} / mode {m.name}", t) for m in entry.modes.values()
                for t in m.commands]
        for where, template in own:
            if names_in(template) & OPTIONAL_NAMES - set(names):
                continue
            [text] = fill_commands((template,), names)
            yield Command(where, template, names, text)
        for fix in CATALOG.failure_fixes.values():
            if fix.dependency in entry.depends_on or fix.dependency == ANY_DEPENDENCY:
                fix_names = names | {"failed_host": FAILED_HOST}
                for template in fix.commands:
                    [text] = fill_commands((template,), fix_names)
                    yield Command(f"{entry.id} / failure_fixes.{fix.dependency}.{fix.kind}",
                                  template, fix_names, text)


def words(command: str) -> list[list[tuple[str, str]]]:
    """The shell words of ``command``: each character with how it is quoted ("" bare, "'",
    '"', or "\\\\" escaped)."""
    found: list[list[tuple[str, str]]] = []
    word: list[tuple[str, str]] = []
    quote, i = "", 0
    while i < len(command):
        ch = command[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                word.append((ch, "'"))
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch == "\\" and command[i + 1:i + 2] in ('"', "\\", "$", "`"):
                i += 1
                word.append((command[i], '"'))
            else:
                word.append((ch, '"'))
        elif ch in "'\"":
            quote = ch
        elif ch == "\\":
            i += 1
            word.append((command[i], "\\"))
        elif ch.isspace():
            if word:
                found.append(word)
            word = []
        else:
            word.append((ch, ""))
        i += 1
    assert not quote, f"unterminated quote in {command!r}"
    return [*found, word] if word else found


def test_every_command_is_valid_shell(loaded: Loaded) -> None:
    bad = []
    for command in every_command(loaded.env):
        checked = subprocess.run(["bash", "-n", "-c", command.text], capture_output=True,
                                 text=True, timeout=10)
        if checked.returncode:
            bad.append((command.where, command.text, checked.stderr.strip()))
    assert not bad


def test_every_placeholder_is_filled(loaded: Loaded) -> None:
    """From the environment, or (the pod) from the finding; a value the environment lacks
    would show as a visible {placeholder}, which these two environments must not need."""
    placeholders = {name for entry in CATALOG.checks.values()
                    for t in (*entry.commands, *(t for m in entry.modes.values()
                                                 for t in m.commands))
                    for name in names_in(t)}
    placeholders |= {name for fix in CATALOG.failure_fixes.values() for t in fix.commands
                     for name in names_in(t)}
    placeholders |= {"kube_context"}  # what kubectl shows when no context is known
    for command in every_command(loaded.env):
        unfilled = names_in(command.template) - set(command.names)
        assert unfilled <= OPTIONAL_NAMES, (command.where, command.template, unfilled)
        left = [name for name in placeholders if "{" + name + "}" in command.text]
        assert not left, (command.where, command.text)


def test_every_kubectl_command_names_the_cluster_and_the_namespace(loaded: Loaded) -> None:
    namespace = loaded.env.spec.kubernetes.namespace  # type: ignore[union-attr]
    seen = 0
    for command in every_command(loaded.env):
        tokens = shlex.split(command.text)
        for at in (i for i, token in enumerate(tokens) if token == "kubectl"):
            seen += 1
            assert tokens[at:at + 3] == shlex.split(KUBECTL[loaded.name]), command.text
            end = tokens.index("|", at) if "|" in tokens[at:] else len(tokens)
            call = tokens[at:end]
            assert "-n" in call and call[call.index("-n") + 1] == namespace, command.text
    assert seen > 30


def test_every_url_is_quoted(loaded: Loaded) -> None:
    """zsh refuses a bare "?", and a bare "&" would run the command in the background."""
    seen = 0
    for command in every_command(loaded.env):
        for word in words(command.text):
            text = "".join(ch for ch, _ in word)
            if "://" in text:
                seen += 1
                bare = "".join(ch for ch, how in word if not how)
                assert not bare, (command.where, command.text, text)
    assert seen > 10


def test_no_secret_value_only_variables_that_the_shell_expands(loaded: Loaded) -> None:
    named = 0
    for command in every_command(loaded.env):
        for variable, value in loaded.secrets.items():
            assert value not in command.text, command.where
            reference = "${" + variable + "}"
            for word in words(command.text):
                text = "".join(ch for ch, _ in word)
                start = text.find(reference)
                while start >= 0:
                    named += 1
                    quoting = {how for _, how in word[start:start + len(reference)]}
                    assert quoting == {'"'}, (command.where, command.text)
                    start = text.find(reference, start + 1)
    assert named > 10


# ---- what the commands say ---------------------------------------------------------------
def commands_of(loaded: Loaded, check_id: str, exc: BaseException | None = None) -> list[str]:
    entry = CATALOG.check(check_id)
    _, commands = remedies(exc or AssertionError("x"), entry, CATALOG,
                           command_names(loaded.env, entry))
    return commands


def test_authentication_logs_read_the_checks_window_and_failure_pattern(
        tmp_path: Path) -> None:
    text = PRODUCTION.read_text() + (
        "\n[auth_logs]\nwindow_minutes = 7.5\n"
        "failure = \"login failed: (bad credentials|user's account locked)\"\n")
    loaded = load("production", tmp_path, text)
    [command] = commands_of(loaded, "auth.authentication-logs")
    logs, grep = command.split(" | ")
    assert logs == ("kubectl --context unibazzar-prod logs -l app=auth-service -n unibazzar "
                    "--since=450s --tail=-1 --prefix")
    assert shlex.split(grep) == ["grep", "-E", "-e",
                                 "login failed: (bad credentials|user's account locked)"]
    sandbox = load("sandbox", tmp_path)
    [command] = commands_of(sandbox, "auth.authentication-logs")
    assert "--since=15m " in command
    assert command.endswith("| grep -E -e 'login failed: bad credentials'")


def test_a_backed_up_queue_restarts_its_consumer_not_the_publisher(loaded: Loaded) -> None:
    consumer = loaded.env.spec.rabbitmq.consumer_deployment  # type: ignore[union-attr]
    for check_id in ("listing.rabbitmq-event-publishing", "listing.indexing-performance"):
        commands = commands_of(loaded, check_id, AssertionError("events queue backed up"))
        restarts = [c for c in commands if " rollout restart " in c]
        assert restarts == [f"{KUBECTL[loaded.name]} rollout restart "
                            f"deployment/{consumer} -n unibazzar"], commands
    if loaded.name == "production":  # where the consumer is not the publisher
        assert not any("deployment/listing-service" in c
                       for c in commands_of(loaded, "listing.rabbitmq-event-publishing"))


def test_a_consumer_the_environment_does_not_name_stays_a_visible_placeholder(
        tmp_path: Path) -> None:
    text = PRODUCTION.read_text().replace('consumer_deployment = "search-indexer"\n', "")
    loaded = load("production", tmp_path, text)
    commands = commands_of(loaded, "listing.rabbitmq-event-publishing")
    assert ("kubectl --context unibazzar-prod rollout restart deployment/{consumer_deployment} "
            "-n unibazzar") in commands


def test_kubectl_names_the_kubeconfigs_current_context_when_the_file_names_none(
        tmp_path: Path) -> None:
    text = PRODUCTION.read_text().replace('context = "unibazzar-prod"\n', "")
    loaded = load("production", tmp_path, text, kube_current="unibazzar-prod")
    assert loaded.env.kube_context == "unibazzar-prod"
    # Carried to xdist workers with the rest of the environment.
    assert Environment.from_wire(loaded.env.to_wire()).kube_context == "unibazzar-prod"
    assert all(c.text.startswith("kubectl --context unibazzar-prod ")
               for c in every_command(loaded.env) if "kubectl" in c.text)


def test_kubectl_in_cluster_uses_the_pods_own_and_without_kubernetes_asks(
        tmp_path: Path) -> None:
    env = load("production", tmp_path).env
    entry = CATALOG.check("auth.recent-deployments")
    in_cluster = Environment(env.path, env.spec.model_copy(
        update={"kubernetes": KubernetesTarget(mode="in-cluster")}), env.secrets)
    assert command_names(in_cluster, entry)["kubectl"] == "kubectl"
    # No [kubernetes]: nothing says which cluster, so the command says to choose one.
    none = Environment(env.path, env.spec.model_copy(update={"kubernetes": None}), env.secrets)
    assert command_names(none, entry)["kubectl"] == "kubectl --context {kube_context}"


def test_kubectl_in_url_mode_sends_the_token_it_names_not_another_clusters(
        tmp_path: Path) -> None:
    env = load("sandbox", tmp_path).env
    url = KubernetesTarget(mode="url", api_url="https://k8s.internal:6443/?x=1&y=2",
                           token_env="K8S_TOKEN")
    with_token = Environment(env.path, env.spec.model_copy(update={"kubernetes": url}),
                             env.secrets)
    kubectl = command_names(with_token, CATALOG.check("auth.recent-deployments"))["kubectl"]
    assert kubectl == "kubectl --server 'https://k8s.internal:6443/?x=1&y=2' " \
                      "--token \"${K8S_TOKEN}\""


# ---- the catalog keeps them so --------------------------------------------------------------
def raw_catalog() -> dict[str, Any]:
    from importlib import resources

    return tomllib.loads(resources.files("unibazzar_health.verdict").joinpath("catalog.toml")
                         .read_text("utf-8"))


@pytest.mark.parametrize(("command", "says"), [
    ("kubectl get pods -n {namespace}", "write {kubectl}, not kubectl"),
    ("echo x | kubectl logs deployment/{deployment} -n {namespace}", "write {kubectl}"),
    ("{kubectl} get pods", "needs -n {namespace}"),
])
def test_a_kubectl_command_without_cluster_or_namespace_is_a_catalog_error(
        command: str, says: str) -> None:
    raw = raw_catalog()
    raw["checks"]["auth.recent-deployments"]["commands"] = [command]
    with pytest.raises(CatalogError, match=r"auth\.recent-deployments") as error:
        parse_catalog(raw)
    assert says in str(error.value)
    raw = raw_catalog()
    raw["failure_fixes"]["*.unreachable"]["commands"] = [command]
    with pytest.raises(CatalogError, match=r"failure_fixes\.\*\.unreachable"):
        parse_catalog(raw)
