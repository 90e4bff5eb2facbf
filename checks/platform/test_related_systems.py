"""Initial Response — check related systems and dependencies: every backend a service depends
on answers one cheap round trip within its deadline, all probed at once.

A dependency that does not answer fails the check with the worst impact class of the service's
own checks that depend on it (the runbook's "by the dependants' classes"): the auth database
down is an auth outage, SEV1; a listing cache down is a degradation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unibazzar_health.config.names import SERVICE_PREFIX, dependencies_of
from unibazzar_health.judges.runbook import (
    CheckContext,
    Finding,
    NotConfigured,
    gather,
    per_service,
)
from unibazzar_health.probes import ProbeFailure
from unibazzar_health.verdict.severity import impact_of_losing, worst_impact

Probe = Callable[[], Any]


def postgresql(ctx: CheckContext, name: str | None) -> Probe:
    from unibazzar_health.probes import postgresql

    target = ctx.postgres(name or "")
    return lambda: postgresql.fetch(target, "SELECT 1")


def redis(ctx: CheckContext, name: str | None) -> Probe:
    from unibazzar_health.probes import redis

    target = ctx.redis(name or "")
    return lambda: redis.ping(target)


def rabbitmq(ctx: CheckContext, _: str | None) -> Probe:
    from unibazzar_health.probes import rabbitmq

    target = ctx.broker()
    return lambda: rabbitmq.reachable(target)


def dynamodb(ctx: CheckContext, _: str | None) -> Probe:
    from unibazzar_health.probes import dynamodb

    target, spec = ctx.aws("dynamodb"), ctx.require("aws", ctx.env.spec.aws)
    return lambda: dynamodb.describe_table(target, spec.listings_table)


def s3(ctx: CheckContext, _: str | None) -> Probe:
    from unibazzar_health.probes import s3

    target, spec = ctx.aws("s3"), ctx.require("aws", ctx.env.spec.aws)
    return lambda: s3.head_bucket(target, spec.images_bucket)


def vector_db(ctx: CheckContext, _: str | None) -> Probe:
    from unibazzar_health.probes import vectordb

    target = ctx.vector_db()
    return lambda: vectordb.heartbeat(target)


def payments(ctx: CheckContext, _: str | None) -> Probe:
    from unibazzar_health.probes import payments

    target = ctx.payment_provider()
    return lambda: payments.provider_state(target)


# Each backend a service may depend on (config/names.py: which services, which of the
# environment file's tables) -> its cheapest round trip, given the table's name.
ROUND_TRIPS: dict[str, Callable[[CheckContext, str | None], Probe]] = {
    "postgresql": postgresql, "redis": redis, "rabbitmq": rabbitmq, "dynamodb": dynamodb,
    "s3": s3, "vector-db": vector_db, "payments": payments}


def observe_related_systems(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import timed

        calls: dict[str, Probe] = {}
        not_configured: dict[str, Any] = {}
        for name, table in dependencies_of(service).items():
            try:
                probe = ROUND_TRIPS[name](ctx, table)
            except NotConfigured as exc:
                not_configured[name] = {"not_configured": exc.key}
                continue

            def answered_ms(probe: Probe = probe) -> float:
                with timed() as t:
                    probe()
                return round(t.ms, 1)

            calls[name] = answered_ms
        if not calls:
            raise NotConfigured(", ".join(v["not_configured"] for v in not_configured.values()))
        return gather(**calls) | not_configured

    return observe


@per_service("related-systems", observe_related_systems)
def test_related_systems_and_dependencies_answer(service: str, observed: dict[str, Any]) -> None:
    down = {name: answer for name, answer in sorted(observed.items())
            if isinstance(answer, ProbeFailure)}
    if down:
        own = f"{SERVICE_PREFIX[service]}.related-systems"
        impact = worst_impact(impact_of_losing(service, name, own) for name in down)
        raise Finding.of(down.values(), f"{service} cannot reach {', '.join(down)}: ",
                         impact=impact)
