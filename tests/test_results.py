"""Plain logic of results.py: which next commands a failure shows."""

from __future__ import annotations

from unibazzar_health.results import commands_for
from unibazzar_health.runbook import Finding

TEMPLATES = (
    "aws dynamodb describe-table --table-name {listings_table} --region {aws_region}",
    "curl -s {rabbitmq_management_url}/api/overview",
    "redis-cli -h {redis_host} -p {redis_port} ping",
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
