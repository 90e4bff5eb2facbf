"""[notify], [incident_state], [alerting], [[silences]] and [[maintenance]] are validated
when the environment file is loaded, with the environment file's one-line errors naming the
file, the key and the value (never a secret), so a bad one stops the run before any probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from unibazzar_health.config.errors import EnvironmentFileError
from unibazzar_health.incidents.config import load_environment, notifier_settings

BASE = '[environment]\nname = "prod"\n'
ENVIRON = {"SLACK_URL": "https://hooks.slack.com/services/T0/B0/s3cretSlackT0ken",
           "PD_KEY": "pdR0utingKeyS3cret0000000000000a", "GH_TOKEN": "ghp_s3cretT0ken"}


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = tmp_path / "prod.toml"
    path.write_text(BASE + text)
    with pytest.raises(EnvironmentFileError) as raised:
        load_environment(path, ENVIRON if environ is None else environ)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and not any(v in message for v in ENVIRON.values())
    return message.removeprefix(f"{path}: ")


@pytest.mark.parametrize(("text", "expected"), [
    ('[notify.slack]\nwebhook_url_env = "SLACK_URL"\n',
     "key 'notify.slack.webhook_url_env': value 'SLACK_URL': the value of SLACK_URL is not a "
     "webhook URL (https://hooks.slack.com/services/…)"),
    ('[notify.pagerduty]\nrouting_key_env = "PD_KEY"\napi_url = "ftp://events.example"\n',
     "key 'notify.pagerduty.api_url': value 'ftp://events.example': expected a URL with scheme "
     "http or https"),
    ('[notify.webhook]\nurl = "https://hooks.example/in?token=abc123"\n',
     "key 'notify.webhook.url': value 'https://hooks.example/in?token=***': the URL carries a "
     "secret in its query: write it in an environment variable and name it in the matching "
     "*_env key"),
    ('[notify.ticket]\nrepository = "unibazzar"\ntoken_env = "GH_TOKEN"\n',
     "key 'notify.ticket.repository': value 'unibazzar': expected a GitHub repository as "
     "owner/name"),
    ('[notify.ticket]\nrepository = "unibazzar/incidents"\ntoken_env = "GH_TOKN"\n',
     "key 'notify.ticket.token_env': value 'GH_TOKN': environment variable GH_TOKN is not set"),
    ('[notify]\nbudget = 0\n',
     "key 'notify.budget': value 0: Input should be greater than 0"),
    # A misspelt key of [notify] itself, and a notifier no module has.
    ('[notify]\nbudegt = 30\n', "key 'notify.budegt': value 30: unknown key"),
    ('[notify.teams]\nurl = "https://teams.example/in"\n',
     "key 'notify.teams': value {'url': 'https://teams.example/in'}: unknown key"),
    ('[incident_state]\nbackend = "redis"\n',
     "key 'incident_state.url': required when incident_state.backend is 'redis'"),
    ('[alerting]\nalert_after = 0\n',
     "key 'alerting.alert_after': value 0: Input should be greater than 0"),
    ('[[silences]]\ncheck = "order.saga-orchestration"\nuntil = 2026-12-01T06:00:00\n'
     'reason = "replay"\n',
     "key 'silences.0.until': value '2026-12-01T06:00:00': Input should have timezone info"),
    ('[[silences]]\ncheck = "order.sagas"\nuntil = 2026-12-01T06:00:00Z\nreason = "replay"\n',
     "key 'silences.0.check': value 'order.sagas': no check of the catalog has this id"),
    ('[[maintenance]]\nstart = 2026-12-01T06:00:00Z\nend = 2026-12-01T05:00:00Z\n'
     'reason = "db"\n',
     "key 'maintenance.0.end': value '2026-12-01T05:00:00+00:00': must be after 'start'"),
])
def test_a_bad_section_is_one_line_naming_file_key_and_value(tmp_path: Path, text: str,
                                                             expected: str) -> None:
    environ = {**ENVIRON, "SLACK_URL": "not a url"} if "SLACK_URL" in text else None
    assert error(tmp_path, text, environ) == expected


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("PD_KEY", "R0utingKey19chars00",
     "key 'notify.pagerduty.routing_key_env': value 'PD_KEY': the value of PD_KEY is not a "
     "PagerDuty routing key: it has 19 characters where an Events API v2 integration key has "
     "32 letters and digits"),
    ("SLACK_URL", "https://hooks.slack.com/workflows/T0/A0/123/s3cret",
     "key 'notify.slack.webhook_url_env': value 'SLACK_URL': the value of SLACK_URL is not an "
     "incoming webhook (its path must be /services/T…/B…/…, as Slack's 'Incoming Webhooks' "
     "page gives it; a workflow or app URL is not one)"),
    ("SLACK_URL", "http://hooks.slack.com/services/T0/B0/s3cret",
     "key 'notify.slack.webhook_url_env': value 'SLACK_URL': the value of SLACK_URL is not "
     "https: Slack's webhooks are https://hooks.slack.com/services/…"),
    ("GH_TOKEN", "ghp_ with a space",
     "key 'notify.ticket.token_env': value 'GH_TOKEN': the value of GH_TOKEN is not a GitHub "
     "token (it is empty or holds whitespace)"),
])
def test_a_secret_of_the_wrong_shape_stops_the_run_before_the_first_incident(
        tmp_path: Path, variable: str, value: str, expected: str) -> None:
    """What the real services would refuse on the night of the first incident, said at
    start-up: the shapes PagerDuty, Slack and GitHub demand."""
    section = {"PD_KEY": '[notify.pagerduty]\nrouting_key_env = "PD_KEY"\n',
               "SLACK_URL": '[notify.slack]\nwebhook_url_env = "SLACK_URL"\n',
               "GH_TOKEN": '[notify.ticket]\nrepository = "u/i"\ntoken_env = "GH_TOKEN"\n'}
    path = tmp_path / "prod.toml"
    path.write_text(BASE + section[variable])
    with pytest.raises(EnvironmentFileError) as raised:
        load_environment(path, {**ENVIRON, variable: value})
    assert str(raised.value) == f"{path}: {expected}"
    assert value not in str(raised.value)


def test_a_good_notify_section_loads_and_its_secrets_are_redacted(tmp_path: Path) -> None:
    path = tmp_path / "prod.toml"
    path.write_text(BASE + """
[notify.slack]
webhook_url_env = "SLACK_URL"

[notify.pagerduty]
routing_key_env = "PD_KEY"

[notify.ticket]
repository = "unibazzar/incidents"
token_env = "GH_TOKEN"

[[silences]]
service = "order-service"
until = 2026-12-01T06:00:00Z
reason = "payments provider migration"
""")
    env = load_environment(path, ENVIRON)
    assert env.spec.notify is not None
    # Each notifier's settings are its own module's model, asked of incidents.config.
    settings = notifier_settings(path, env.spec.notify)
    assert list(settings) == ["pagerduty", "slack", "ticket"]
    assert settings["pagerduty"].model_dump()["api_url"] == \
        "https://events.pagerduty.com/v2/enqueue"
    assert env.redactor().text(f"{ENVIRON['SLACK_URL']} {ENVIRON['GH_TOKEN']}") == "*** ***"


def test_a_bad_notify_section_stops_the_run_before_any_probe(pytester: pytest.Pytester
                                                             ) -> None:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env=BASE + '[notify.ticket]\nrepository = "x"\n'
                                          'token_env = "GH_TOKEN"\n')
    probed = pytester.path / "probed"
    pytester.makepyfile(test_checks=f'''
from pathlib import Path
from unibazzar_health.judges.runbook import runbook_check

def observe(ctx):
    Path({str(probed)!r}).write_text("probed")

@runbook_check("order.saga-orchestration", observe=observe)
def test_sagas(observed):
    pass
''')
    result = pytester.runpytest_subprocess("--env-file=env.toml", "-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *env.toml: key 'notify.ticket.repository': value 'x': "
                                 "expected a GitHub repository as owner/name"])
    assert not probed.exists()


def test_the_production_examples_commented_sections_load_when_uncommented(
        tmp_path: Path) -> None:
    import re

    example = (Path(__file__).parent.parent / "environments" / "production.toml.example")
    tail = example.read_text().split("# ---- Incident lifecycle and posting", 1)[1]
    lines = [line[2:] for line in tail.splitlines()
             if re.match(r"# (\[|[a-z_A-Z0-9]+ = )", line)]
    path = tmp_path / "prod.toml"
    path.write_text(BASE + "\n".join(lines) + "\n")
    names = set(re.findall(r'_env = "([A-Z0-9_]+)"', path.read_text()))
    environ = {name: f"value-of-{name.lower()}" for name in names}
    # Values of the shapes the real services give (start-up checks them).
    environ["UNIBAZZAR_SLACK_WEBHOOK_URL"] = "https://hooks.slack.com/services/T01/B01/x"
    environ["UNIBAZZAR_PAGERDUTY_ROUTING_KEY"] = "R" * 32
    env = load_environment(path, environ)
    spec = env.spec
    assert spec.notify is not None and "ticket" in notifier_settings(path, spec.notify)
    assert spec.incident_state is not None and spec.incident_state.backend == "redis"
    assert [s.check for s in spec.silences] == ["order.saga-orchestration"]
    assert spec.maintenance[0].services == ["order-service"]
    assert spec.alerting.update_every_minutes.SEV3 == 120
