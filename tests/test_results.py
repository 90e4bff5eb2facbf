"""Plain logic of results.py: which next commands a failure shows."""

from __future__ import annotations

from unibazzar_health.results import commands_for
from unibazzar_health.runbook import Finding

TEMPLATES = (
    "aws dynamodb describe-table --table-name {listings_table} --region {aws_region}",
    "curl -s {rabbitmq_management_url}/api/overview",
    "REDISCLI_AUTH=\"${{{redis_password_var}}}\" redis-cli{redis_tls} -u {redis_url} ping",
)


def test_a_finding_naming_its_dependencies_gets_only_their_commands() -> None:
    assert commands_for(Finding("x", dependencies=("redis",)), TEMPLATES) == (TEMPLATES[2],)
    assert commands_for(Finding("x", dependencies=("dynamodb", "rabbitmq")), TEMPLATES) == (
        TEMPLATES[0], TEMPLATES[1])


def test_other_failures_keep_every_command() -> None:
    assert commands_for(Finding("x"), TEMPLATES) == TEMPLATES
    assert commands_for(AssertionError("x"), TEMPLATES) == TEMPLATES
    # A dependency with no command of its own: better every command than none.
    assert commands_for(Finding("x", dependencies=("payments",)), TEMPLATES) == TEMPLATES


def test_probe_targets_never_show_their_secrets_in_a_repr() -> None:
    """A traceback with --showlocals prints targets: their secrets must not be in it."""
    from unibazzar_health.probes.aws import AwsTarget
    from unibazzar_health.probes.kubernetes import KubeTarget
    from unibazzar_health.probes.payments import ProviderTarget
    from unibazzar_health.probes.postgresql import PostgresTarget
    from unibazzar_health.probes.rabbitmq import BrokerTarget
    from unibazzar_health.probes.redis import RedisTarget
    from unibazzar_health.probes.vectordb import VectorTarget

    secret = "hunter2-never-shown"
    targets = [
        PostgresTarget("postgresql://u@h/db", secret, 2.0),
        RedisTarget("redis://h:6379/0", secret, 2.0),
        BrokerTarget("amqp://u@h/", secret, "http://h:15672", 2.0),
        AwsTarget("eu-west-1", None, secret, secret, 2.0),
        ProviderTarget("https://api.stripe.com", secret, 2.0),
        VectorTarget("http://h", "t", "d", secret, 2.0),
        KubeTarget("ns", "url", None, "http://h", secret, 2.0),
    ]
    for target in targets:
        assert secret not in repr(target), type(target).__name__
