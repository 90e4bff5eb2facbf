"""The platform's services and the backends they stand on, each declared once: the runbook,
the catalog, the markers, the environment file and the checks derive their names from here.
Plain typing, nothing else: the plugin loads it in every pytest run (its entry point), where
the environment's settings (pydantic) may never be needed.

A new backend is one ``Backend`` below: its name (as the catalog's depends_on and its
probes' failures spell it), its marker, the services that stand on it and the placeholders
by which the catalog's commands name it. What else it needs: its section of the environment
file (config/platform.py, EnvironmentFile), its probe module (probes/), its target factory
(judges/runbook.py, CheckContext) and its round trip in checks/platform/test_related_systems.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

ServiceName = Literal["auth-service", "listing-service", "order-service", "ai-service"]
SERVICES: tuple[str, ...] = get_args(ServiceName)
# Each service's short name: the prefix of its checks' catalog ids ("auth.related-systems")
# and of its Deployment's command placeholder ({auth_deployment}).
SERVICE_PREFIX: dict[str, str] = {service: service.removesuffix("-service")
                                  for service in SERVICES}


def config_key(name: str) -> str:
    """A backend's name as the environment file spells its keys: ``vector-db`` ->
    ``vector_db`` ([vector_db], [deadlines] vector_db)."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class Backend:
    """One backend the checks probe. The checks log into every one with a credential of
    their own (a database role, a token, an AWS identity, a kubeconfig): refused, it is the
    checks' configuration that is wrong, not the platform (verdict/results.py)."""

    # As the catalog's depends_on and failure_fixes, and its probes' failures, name it.
    name: str
    # The pytest marker of the checks that stand on it (`pytest -m "order-service and
    # postgres"`); None: no check's catalog entry names it.
    marker: str | None
    # The services that depend on it, each with the table of the environment file its
    # checks read ([postgresql.auth]), None where the file has one section ([rabbitmq]).
    # Each service's related-systems check probes these, in this file's order.
    used_by: Mapping[str, str | None] = field(default_factory=dict)
    # The placeholders by which a catalog command names it ({postgres_host}): a failure
    # pinned on it keeps the commands about it.
    placeholders: tuple[str, ...] = ()
    # Other names its probes report failures under (RabbitMQ's management API).
    aliases: tuple[str, ...] = ()
    # A [deadlines] key of its own (else [deadlines] default).
    own_deadline: bool = True
    # What the checks only look through (to see pods, logs, metrics): its failing is a blind
    # spot of the checks, no path customers' requests take; said so in these words.
    looked_through: str | None = None

    @property
    def key(self) -> str:
        """Its [deadlines] key (and its section's, where it has one of its own)."""
        return config_key(self.name)


# The order the related-systems check probes (and reports) each service's dependencies in.
BACKENDS: tuple[Backend, ...] = (
    Backend("postgresql", "postgres", {"auth-service": "auth", "order-service": "orders"},
            ("{postgres_host}", "{postgres_db}")),
    Backend("payments", "payments", {"order-service": None}, ("{payments_api_url}",)),
    Backend("dynamodb", "dynamodb", {"listing-service": None}, ("{listings_table}",)),
    Backend("s3", "s3", {"listing-service": None}, ("{images_bucket}",)),
    Backend("rabbitmq", "rabbitmq", {"listing-service": None},
            ("{rabbitmq_management_url}", "{events_queue}"), aliases=("rabbitmq-management",)),
    Backend("vector-db", "vector-db", {"ai-service": None}, ("{vector_db_url}",)),
    Backend("redis", "redis", {"listing-service": "listing-cache", "ai-service": "ai-cache"},
            ("{redis_url}",)),
    Backend("kubernetes", "kubernetes", looked_through="the Kubernetes API"),
    # Reading a service's log file ([error_logs] files) or its pods' logs.
    Backend("logs", "logs", looked_through="its log files"),
    # The DynamoDB capacity metrics: a failure of its own, with fixes of its own.
    Backend("cloudwatch", "cloudwatch", own_deadline=False,
            looked_through="CloudWatch's metrics"),
    # The request metrics' other source ([impact.prometheus], its own deadline there).
    Backend("prometheus", None, own_deadline=False),
)
BACKENDS_BY_NAME: dict[str, Backend] = {backend.name: backend for backend in BACKENDS}


def dependencies_of(service: str) -> dict[str, str | None]:
    """The backends ``service`` depends on, each with the environment file's table its
    checks read (None: the backend's one section), in BACKENDS' order."""
    return {b.name: b.used_by[service] for b in BACKENDS if service in b.used_by}
