"""Initial Response — check related systems and dependencies: every backend a service depends
on answers one cheap round trip within its deadline, all probed at once.

A dependency that does not answer fails the check with the worst impact class of the service's
own checks that depend on it (the runbook's "by the dependants' classes"): the auth database
down is an auth outage, SEV1; a listing cache down is a degradation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unibazzar_health.catalog import SEVERITY_ORDER, load_catalog
from unibazzar_health.probes import ProbeFailure
from unibazzar_health.runbook import (
    SERVICE_PREFIX,
    CheckContext,
    Finding,
    NotConfigured,
    gather,
    per_service,
)

Probe = Callable[[], Any]


def postgresql(name: str) -> Callable[[CheckContext], Probe]:
    def build(ctx: CheckContext) -> Probe:
        from unibazzar_health.probes import postgresql

        target = ctx.postgres(name)
        return lambda: postgresql.fetch(target, "SELECT 1")

    return build


def redis(name: str) -> Callable[[CheckContext], Probe]:
    def build(ctx: CheckContext) -> Probe:
        from unibazzar_health.probes import redis

        target = ctx.redis(name)
        return lambda: redis.ping(target)

    return build


def rabbitmq(ctx: CheckContext) -> Probe:
    from unibazzar_health.probes import rabbitmq

    target = ctx.broker()
    return lambda: rabbitmq.reachable(target)


def dynamodb(ctx: CheckContext) -> Probe:
    from unibazzar_health.probes import dynamodb

    target, spec = ctx.aws("dynamodb"), ctx.require("aws", ctx.env.spec.aws)
    return lambda: dynamodb.describe_table(target, spec.listings_table)


def s3(ctx: CheckContext) -> Probe:
    from unibazzar_health.probes import s3

    target, spec = ctx.aws("s3"), ctx.require("aws", ctx.env.spec.aws)
    return lambda: s3.head_bucket(target, spec.images_bucket)


def vector_db(ctx: CheckContext) -> Probe:
    from unibazzar_health.probes import vectordb

    target = ctx.vector_db()
    return lambda: vectordb.heartbeat(target)


def payments(ctx: CheckContext) -> Probe:
    from unibazzar_health.probes import payments

    target = ctx.payment_provider()
    return lambda: payments.provider_state(target)


# service -> dependency (as catalog.toml's depends_on names it) -> its probe
DEPENDENCIES: dict[str, dict[str, Callable[[CheckContext], Probe]]] = {
    "auth-service": {"postgresql": postgresql("auth")},
    "listing-service": {"dynamodb": dynamodb, "s3": s3, "rabbitmq": rabbitmq,
                        "redis": redis("listing-cache")},
    "order-service": {"postgresql": postgresql("orders"), "payments": payments},
    "ai-service": {"vector-db": vector_db, "redis": redis("ai-cache")},
}


def observe_related_systems(service: str) -> Callable[[CheckContext], dict[str, Any]]:
    def observe(ctx: CheckContext) -> dict[str, Any]:
        from unibazzar_health.probes import timed

        calls: dict[str, Probe] = {}
        not_configured: dict[str, Any] = {}
        for name, build in DEPENDENCIES[service].items():
            try:
                probe = build(ctx)
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


# Classes that describe what a check found in data it did read (a mismatch, an accepted
# forgery), not what losing the dependency does: they do not rate an unreachable backend.
NOT_FROM_UNAVAILABILITY = {"data", "security"}


def impact_of_losing(service: str, dependency: str) -> str:
    """The worst impact class among the service's checks that depend on ``dependency``."""
    catalog = load_catalog()
    own = catalog.check(f"{SERVICE_PREFIX[service]}.related-systems")
    impacts = [entry.impact for entry in catalog.checks.values()
               if entry.service == service and dependency in entry.depends_on
               and entry.id != own.id and entry.impact not in NOT_FROM_UNAVAILABILITY]
    return min(impacts or [own.impact],
               key=lambda i: SEVERITY_ORDER.index(catalog.severity_of(i).level))


@per_service("related-systems", observe_related_systems, DEPENDENCIES)
def test_related_systems_and_dependencies_answer(service: str, observed: dict[str, Any]) -> None:
    down = {name: answer for name, answer in sorted(observed.items())
            if isinstance(answer, ProbeFailure)}
    if down:
        impacts = [impact_of_losing(service, name) for name in down]
        catalog = load_catalog()
        worst = min(impacts, key=lambda i: SEVERITY_ORDER.index(catalog.severity_of(i).level))
        raise Finding.of(down.values(), f"{service} cannot reach {', '.join(down)}: ",
                         impact=worst)
