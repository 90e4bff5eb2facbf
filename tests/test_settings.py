"""Environment files: a bad one stops the run with one clear error naming file, key and
value, and no error ever shows a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unibazzar_health.config import kubeconfig as kubeconfig_module
from unibazzar_health.config.environment import choose_environment_file, load_environment
from unibazzar_health.config.errors import EnvironmentFileError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-value-that-must-never-leak"

GOOD = """
[environment]
name = "test"

[postgresql.auth]
dsn = "postgresql://health@127.0.0.1:5432/auth"
password_env = "TEST_DB_PASSWORD"

[redis.ai-cache]
url = "redis://127.0.0.1:6379/1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "env.toml"
    path.write_text(text)
    return path


def kubeconfig(tmp_path: Path, *contexts: str, current: str | None = None,
               name: str = "kubeconfig") -> Path:
    """A kubeconfig defining ``contexts`` (one cluster, no user: only names are read)."""
    listed = "".join(f"- name: {c}\n  context: {{cluster: c}}\n" for c in contexts)
    path = tmp_path / name
    path.write_text("apiVersion: v1\nkind: Config\n"
                    "clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443'}\n"
                    f"contexts:\n{listed}"
                    + (f"current-context: {current}\n" if current else ""))
    return path


def test_a_good_file_resolves_its_secret_from_the_environment(tmp_path: Path) -> None:
    env = load_environment(write(tmp_path, GOOD), {"TEST_DB_PASSWORD": SECRET})
    assert env.name == "test"
    assert env.secret("TEST_DB_PASSWORD") == SECRET
    assert env.deadline("postgresql") == 3.0
    assert SECRET not in repr(env)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(GOOD + "\n[surprise]\nx = 1\n",
                 "key 'surprise': value {'x': 1}: unknown key", id="unknown-section"),
    pytest.param(GOOD.replace('name = "test"', 'name = "test"\nnmae = "typo"'),
                 "key 'environment.nmae': value 'typo': unknown key", id="unknown-key"),
    pytest.param(GOOD.replace("redis://127.0.0.1:6379/1", "htp://127.0.0.1:6379/1"),
                 "key 'redis.ai-cache.url': value 'htp://127.0.0.1:6379/1': "
                 "expected a URL with scheme redis or rediss", id="bad-scheme"),
    pytest.param(GOOD.replace("redis://127.0.0.1:6379/1", "redis://127.0.0.1:99999/1"),
                 "key 'redis.ai-cache.url': value 'redis://127.0.0.1:99999/1': bad port",
                 id="bad-port"),
    pytest.param(GOOD + "\n[deadlines]\ndefault = \"fast\"\n",
                 "key 'deadlines.default': value 'fast': Input should be a valid number",
                 id="wrong-type"),
    pytest.param(GOOD + "\n[deadlines]\ndefault = -1\n",
                 "key 'deadlines.default': value -1: Input should be greater than 0",
                 id="negative-deadline"),
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"', 'password_env = "1-bad"'),
                 "key 'postgresql.auth.password_env': value '***': "
                 "not an environment variable name (A-Z, 0-9, _): a *_env key names the "
                 "variable that holds the secret, never the secret itself",
                 id="bad-variable-name"),
    # A secret written where its variable's name belongs, or under a key of its own, or in
    # a URL's query: refused, and never shown.
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"',
                              f'password_env = "{SECRET}"'),
                 "key 'postgresql.auth.password_env': value '***': not an environment "
                 "variable name", id="secret-in-env-key"),
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"', f'password = "{SECRET}"'),
                 "key 'postgresql.auth.password': value '***': unknown key",
                 id="secret-under-unknown-key"),
    pytest.param(GOOD.replace("5432/auth", f"5432/auth?sslmode=require&password={SECRET}"),
                 "key 'postgresql.auth.dsn': value 'postgresql://health@127.0.0.1:5432/auth?"
                 "sslmode=require&password=***': the URL carries a secret in its query",
                 id="secret-in-url-query"),
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"', 'password_env = "UNSET_VAR"'),
                 "key 'postgresql.auth.password_env': value 'UNSET_VAR': "
                 "environment variable UNSET_VAR is not set", id="missing-variable"),
    pytest.param(GOOD + '\n[auth_logs]\nfailure = "login failed ("\n',
                 "key 'auth_logs.failure': value 'login failed (': not a regular expression",
                 id="bad-regex"),
    pytest.param(GOOD + '\n[error_logs]\nfiles = "/var/log/unibazzar/app.log"\n',
                 "key 'error_logs.files': value '/var/log/unibazzar/app.log': the path must "
                 "name the service as {service}", id="log-file-without-service"),
    pytest.param(GOOD + '\n[error_logs]\nfiles = "logs/{service}.log"\n',
                 "key 'error_logs.files': value 'logs/{service}.log': not an absolute path",
                 id="log-file-relative"),
    # [report] tms_pattern is filled with each check's id in a pytest hook: checked here.
    pytest.param(GOOD + '\n[report]\ntms_pattern = "https://tms.example/case/{name}"\n',
                 "key 'report.tms_pattern': value 'https://tms.example/case/{name}': expected "
                 "exactly one {} placeholder (the id), found {name}", id="tms-pattern-named"),
    pytest.param(GOOD + '\n[report]\ntms_pattern = "https://tms.example/{}/{}"\n',
                 "key 'report.tms_pattern': value 'https://tms.example/{}/{}': expected "
                 "exactly one {} placeholder (the id), found {}, {}", id="tms-pattern-two"),
    pytest.param(GOOD + '\n[report]\ntms_pattern = "https://tms.example/case"\n',
                 "key 'report.tms_pattern': value 'https://tms.example/case': expected "
                 "exactly one {} placeholder (the id), found none", id="tms-pattern-none"),
    pytest.param(GOOD + '\n[report]\ntms_pattern = "https://tms.example/{"\n',
                 "key 'report.tms_pattern': value 'https://tms.example/{': not a link "
                 "pattern", id="tms-pattern-brace"),
    pytest.param(GOOD + f'\n[report]\ntms_pattern = "https://tms.example/{{}}?token={SECRET}"\n',
                 "key 'report.tms_pattern': value 'https://tms.example/{}?token=***': the URL "
                 "carries a secret in its query", id="tms-pattern-secret"),
    # Nothing ever filled it: refused as unknown rather than silently doing nothing.
    pytest.param(GOOD + '\n[report]\nissue_pattern = "https://issues.example/{}"\n',
                 "key 'report.issue_pattern': value 'https://issues.example/{}': unknown key",
                 id="issue-pattern-unused"),
    pytest.param("[environment]\n", "key 'environment.name': required key is missing",
                 id="missing-key"),
    pytest.param("[environment\nname=1", "file: not valid TOML", id="not-toml"),
])
def test_bad_files_name_file_key_and_value(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET})
    message = str(caught.value)
    assert message.startswith(f"{path}: {expected}"), message
    assert SECRET not in message


def test_a_tms_pattern_with_one_placeholder_and_literal_braces_loads(tmp_path: Path) -> None:
    text = GOOD + '\n[report]\ntms_pattern = "https://tms.example/{{suite}}/case/{}"\n'
    env = load_environment(write(tmp_path, text), {"TEST_DB_PASSWORD": SECRET})
    assert env.spec.report.tms_pattern is not None
    assert env.spec.report.tms_pattern.format("auth.postgresql-connectivity") == \
        "https://tms.example/{suite}/case/auth.postgresql-connectivity"


def test_a_password_written_in_a_url_is_refused_without_being_shown(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("health@", f"health:{SECRET}@"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": "x"})
    message = str(caught.value)
    assert SECRET not in message
    assert message == (f"{path}: key 'postgresql.auth.dsn': value "
                       "'postgresql://health:***@127.0.0.1:5432/auth': the URL carries a "
                       "password: write it in an environment variable and name it in the "
                       "matching *_env key")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentFileError, match="no such environment file"):
        load_environment(tmp_path / "nope.toml", {})


def test_selection_order_command_line_then_variables_then_sandbox(tmp_path: Path) -> None:
    assert choose_environment_file(tmp_path, None, "x.toml", {"UNIBAZZAR_ENV": "prod"}) == \
        Path("x.toml")
    assert choose_environment_file(tmp_path, "staging", None, {"UNIBAZZAR_ENV_FILE": "y"}) == \
        tmp_path / "environments" / "staging.toml"
    assert choose_environment_file(tmp_path, None, None, {"UNIBAZZAR_ENV_FILE": "y.toml"}) == \
        Path("y.toml")
    assert choose_environment_file(tmp_path, None, None, {"UNIBAZZAR_ENV": "prod"}) == \
        tmp_path / "environments" / "prod.toml"
    assert choose_environment_file(tmp_path, None, None, {}) == \
        tmp_path / "environments" / "sandbox.toml"


def test_the_shipped_example_for_production_is_valid(tmp_path: Path) -> None:
    example = ROOT / "environments" / "production.toml.example"
    variables = {name: "x" * 8 for name in (
        "UNIBAZZAR_HEALTH_DB_PASSWORD", "UNIBAZZAR_REDIS_PASSWORD", "UNIBAZZAR_RABBITMQ_PASSWORD",
        "UNIBAZZAR_VECTOR_DB_TOKEN", "UNIBAZZAR_STRIPE_RESTRICTED_KEY",
        "UNIBAZZAR_STRIPE_WEBHOOK_SECRET", "UNIBAZZAR_CANARY_PASSWORD")}
    # Its [kubernetes] names a kubeconfig context: the machine it runs on must define it.
    variables["KUBECONFIG"] = str(kubeconfig(tmp_path, "unibazzar-prod"))
    assert load_environment(example, variables).name == "production"


def test_a_bad_file_stops_the_run_before_any_check(tmp_path: Path) -> None:
    """As a user runs it: one line naming file, key and value; exit code 4; nothing ran."""
    path = write(tmp_path, GOOD.replace('password_env = "TEST_DB_PASSWORD"',
                                        'password_env = "TEST_DB_PASSWORD"\nport = "x"'))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", f"--env-file={path}", "-m", "auth-service"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PATH": "/usr/bin:/bin", "TEST_DB_PASSWORD": SECRET})
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"ERROR: {path}: key 'postgresql.auth.port': value 'x': unknown key" in result.stderr
    assert "passed" not in result.stdout and "failed" not in result.stdout
    assert SECRET not in result.stdout + result.stderr


# A secret planted where a secret must not be, as every TOML type: (text, key, planted).
PLANTED = 8675309123
SECRET_OF_ANY_TYPE = [
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"', f"password = {PLANTED}"),
                 "postgresql.auth.password", str(PLANTED), id="number-under-unknown-key"),
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"', f'password_env = ["{SECRET}"]'),
                 "postgresql.auth.password_env", SECRET, id="list-under-env-key"),
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"',
                              f'password = {{x = "{SECRET}"}}'),
                 "postgresql.auth.password", SECRET, id="table-under-unknown-key"),
    pytest.param(GOOD + f'\n[postgresql.auth.password]\nx = {{y = "{SECRET}"}}\n',
                 "postgresql.auth.password", SECRET, id="nested-table-under-unknown-key"),
    pytest.param(GOOD.replace('password_env = "TEST_DB_PASSWORD"', "password_env = true"),
                 "postgresql.auth.password_env", "True", id="boolean-under-env-key"),
    pytest.param(GOOD + f'\n[kubernetes]\nmode = "url"\napi_url = "http://127.0.0.1:1"\n'
                 f'token_env = {{value = "{SECRET}"}}\n',
                 "kubernetes.token_env", SECRET, id="table-under-env-key"),
    pytest.param(GOOD + f'api_token = ["{SECRET}", {PLANTED}]\n',
                 "redis.ai-cache.api_token", SECRET, id="list-under-unknown-secret-like-key"),
    pytest.param(GOOD + f'\n[credentials]\naws = ["{SECRET}"]\n',
                 "credentials", SECRET, id="unknown-secret-like-section"),
]


@pytest.mark.parametrize(("text", "key", "planted"), SECRET_OF_ANY_TYPE)
def test_a_secret_of_any_type_is_never_shown(tmp_path: Path, text: str, key: str,
                                             planted: str) -> None:
    """Masked by its key, whatever its type: a password may be a number or sit in a list."""
    path = write(tmp_path, text)
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": "x" * 8})
    message = str(caught.value)
    assert message.startswith(f"{path}: key '{key}': value '***': "), message
    assert planted not in message and SECRET not in message


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(GOOD + f'\n[surprise]\nurls = ["postgresql://u:{SECRET}@db/x", 5]\n',
                 "key 'surprise': value {'urls': ['postgresql://u:***@db/x', 5]}: unknown key",
                 id="password-in-a-url-in-a-list"),
    pytest.param(GOOD + f'\n[surprise]\npassword = "{SECRET}"\nport = 5432\n',
                 "key 'surprise': value {'password': '***', 'port': 5432}: unknown key",
                 id="secret-like-key-in-a-table"),
    pytest.param(GOOD + f'\n[surprise]\ndsn = "redis://h/0?token={SECRET}"\n',
                 "key 'surprise': value {'dsn': 'redis://h/0?token=***'}: unknown key",
                 id="secret-in-a-query-in-a-table"),
])
def test_a_table_under_an_ordinary_key_shows_everything_but_its_secrets(
        tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": "x" * 8})
    assert str(caught.value) == f"{path}: {expected}"


def test_a_missing_secrets_file_is_named_in_clear(tmp_path: Path) -> None:
    """A path, not a secret: masked, "no such file" would not say which file."""
    path = write(tmp_path, GOOD.replace('name = "test"',
                                        'name = "test"\nsecrets_file = "missing.env"'))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {})
    assert str(caught.value) == (
        f"{path}: key 'environment.secrets_file': value '{tmp_path / 'missing.env'}': "
        "no such file (for the sandbox: run scripts/sandbox up)")


def test_the_secrets_file_is_read_as_dotenv_tools_write_it(tmp_path: Path) -> None:
    """Quotes, escapes, inline comments and ``export`` (python-dotenv), and no
    interpolation: a password holding ``$`` or ``#`` is the password as written."""
    (tmp_path / "secrets.env").write_text(
        "# the database\n"
        "export TEST_DB_PASSWORD='pa$$#word'   # quoted: the # is part of it\n")
    path = write(tmp_path, GOOD.replace('name = "test"',
                                        'name = "test"\nsecrets_file = "secrets.env"'))
    env = load_environment(path, {})
    assert env.secrets["TEST_DB_PASSWORD"] == "pa$$#word"


# ---- [kubernetes]: absent is "not configured"; present but unusable is the file's error ----
KUBE = GOOD + '\n[kubernetes]\nnamespace = "unibazzar"\nmode = "{mode}"\n'
NO_KUBECONFIG_HINT = ("(without one: mode 'in-cluster' or 'url', or no [kubernetes] section "
                      "to skip its checks)")


def test_no_kubernetes_section_is_none_and_needs_no_kubeconfig(tmp_path: Path) -> None:
    env = load_environment(write(tmp_path, GOOD),
                           {"TEST_DB_PASSWORD": SECRET, "KUBECONFIG": str(tmp_path / "none")})
    assert env.spec.kubernetes is None


def test_kubeconfig_mode_without_a_kubeconfig_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing-kubeconfig"
    path = write(tmp_path, KUBE.format(mode="kubeconfig") + 'context = "prod-eu"\n')
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET, "KUBECONFIG": str(missing)})
    assert str(caught.value) == (
        f"{path}: key 'kubernetes.mode': value 'kubeconfig': no kubeconfig file: "
        f"KUBECONFIG={missing} names no file that exists {NO_KUBECONFIG_HINT}")


def test_kubeconfig_mode_without_kubeconfig_variable_or_default_file(tmp_path: Path) -> None:
    path = write(tmp_path, KUBE.format(mode="kubeconfig"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET, "HOME": str(tmp_path)})
    assert str(caught.value) == (
        f"{path}: key 'kubernetes.mode': value 'kubeconfig': no kubeconfig file: "
        f"{tmp_path / '.kube' / 'config'} does not exist and KUBECONFIG is not set "
        f"{NO_KUBECONFIG_HINT}")


def test_a_context_the_kubeconfig_does_not_define_is_named(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path, "a", "b")
    path = write(tmp_path, KUBE.format(mode="kubeconfig") + 'context = "prod-eu"\n')
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET, "KUBECONFIG": str(config)})
    assert str(caught.value) == (
        f"{path}: key 'kubernetes.context': value 'prod-eu': the kubeconfig ({config}) "
        "defines no such context (it has: a, b)")


def test_no_context_and_no_current_context_is_named(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path, "a")
    path = write(tmp_path, KUBE.format(mode="kubeconfig"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET, "KUBECONFIG": str(config)})
    assert str(caught.value) == (
        f"{path}: key 'kubernetes.context': required: the kubeconfig ({config}) sets no "
        "current-context")


@pytest.mark.parametrize(("context", "first_current", "chosen"), [
    pytest.param('context = "prod-eu"\n', None, "prod-eu", id="named-in-the-last-file"),
    pytest.param('context = "a"\n', None, "a", id="named-in-the-first-file"),
    pytest.param("", None, "prod-eu", id="current-context-of-the-only-file-setting-one"),
    # kubernetes.config's KubeConfigMerger: each file's current-context replaces the last.
    pytest.param("", "a", "prod-eu", id="the-later-files-current-context-wins"),
])
def test_kubeconfig_list_is_read_like_the_client_reads_it(
        tmp_path: Path, context: str, first_current: str | None, chosen: str) -> None:
    """KUBECONFIG is a list: missing files are passed over, contexts are merged, the
    current-context may come from any file (the later one wins): the context chosen is the
    one the Kubernetes client would use, and the one printed kubectl commands name."""
    first = kubeconfig(tmp_path, "a", current=first_current, name="first")
    second = kubeconfig(tmp_path, "prod-eu", current="prod-eu", name="second")
    listed = f"{tmp_path / 'absent'}:{first}:{second}"
    path = write(tmp_path, KUBE.format(mode="kubeconfig") + context)
    env = load_environment(path, {"TEST_DB_PASSWORD": SECRET, "KUBECONFIG": listed})
    assert env.kube_context == chosen


def test_a_kubeconfig_that_is_not_yaml_is_named_without_quoting_it(tmp_path: Path) -> None:
    """YAML's own message quotes the bad line, and a kubeconfig holds tokens."""
    config = tmp_path / "kubeconfig"
    config.write_text(f"users:\n- name: u\n  user: {{token: {SECRET}\n")
    path = write(tmp_path, KUBE.format(mode="kubeconfig"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET, "KUBECONFIG": str(config)})
    message = str(caught.value)
    assert message.startswith(f"{path}: key 'kubernetes.mode': value 'kubeconfig': the "
                              f"kubeconfig {config} is not valid YAML at line "), message
    assert SECRET not in message


def test_in_cluster_mode_outside_a_pod_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, KUBE.format(mode="in-cluster"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET})
    assert str(caught.value) == (
        f"{path}: key 'kubernetes.mode': value 'in-cluster': not inside a Kubernetes pod: "
        "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")


def test_in_cluster_mode_without_a_service_account_token_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    monkeypatch.setattr(kubeconfig_module, "SERVICE_ACCOUNT_TOKEN", token)
    path = write(tmp_path, KUBE.format(mode="in-cluster"))
    pod = {"TEST_DB_PASSWORD": SECRET, "KUBERNETES_SERVICE_HOST": "10.0.0.1",
           "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, pod)
    assert str(caught.value) == (
        f"{path}: key 'kubernetes.mode': value 'in-cluster': the service-account token "
        f"({token}) is not readable: is a service account mounted in this pod?")
    token.write_text("a-token")
    assert load_environment(path, pod).spec.kubernetes is not None


def test_url_mode_without_an_api_url_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, KUBE.format(mode="url"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environment(path, {"TEST_DB_PASSWORD": SECRET})
    assert str(caught.value) == (
        f"{path}: key 'kubernetes.api_url': required when kubernetes.mode is 'url'")
