"""Environment files: a bad one stops the run with one clear error naming file, key and
value, and no error ever shows a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unibazzar_health.settings import (
    EnvironmentFileError,
    choose_environment_file,
    load_environment,
)

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
