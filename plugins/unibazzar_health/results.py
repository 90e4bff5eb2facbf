"""One check's result, as plain data that crosses xdist workers and lands in the summary.

Outcomes are kept apart as an on-call engineer needs them:
- failed: the platform is unhealthy (an assertion, a Finding, or a backend that gave
  no answer within its deadline);
- broken: the check itself could not run (a bug, a crash): the verdict is incomplete;
- skipped: not configured for this environment;
- not-run: the run's budget ran out first.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.catalog import Catalog, CheckEntry, fill_commands
from unibazzar_health.redaction import Redactor
from unibazzar_health.settings import Environment

PROPERTY_KEY = "unibazzar"
NOT_RUN_PREFIX = "not run:"


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    BROKEN = "broken"
    SKIPPED = "skipped"
    NOT_RUN = "not-run"


@dataclass
class CheckResult:
    id: str
    service: str
    step: str
    title: str
    nodeid: str
    outcome: Outcome
    impact: str | None = None
    severity: str | None = None
    message: str | None = None
    fixes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    evidence: Any = None
    duration_s: float = 0.0
    # Which of depends_on the failure is attributed to (the probe that failed, or what a
    # Finding names): the summary groups failures sharing one into a single incident.
    failed_dependencies: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["outcome"] = str(self.outcome)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


def classify(exc: BaseException | None, skipped: bool, skip_reason: str = "") -> Outcome:
    """Turn what happened in a check into its outcome (see module docstring)."""
    from unibazzar_health.observer import ObservationTimeout
    from unibazzar_health.probes import ProbeError

    if skipped:
        return Outcome.NOT_RUN if skip_reason.startswith(NOT_RUN_PREFIX) else Outcome.SKIPPED
    if exc is None:
        return Outcome.PASSED
    if isinstance(exc, AssertionError | ProbeError | ObservationTimeout):
        return Outcome.FAILED
    return Outcome.BROKEN


# The placeholders by which a catalog command names a dependency (catalog.toml's depends_on).
DEPENDENCY_PLACEHOLDERS = {
    "postgresql": ("{postgres_host}", "{postgres_db}"),
    "redis": ("{redis_url}",),
    "rabbitmq": ("{rabbitmq_management_url}", "{events_queue}"),
    "dynamodb": ("{listings_table}",),
    "s3": ("{images_bucket}",),
    "vector-db": ("{vector_db_url}",),
    "payments": ("{payments_api_url}",),
}


def commands_for(exc: BaseException | None, templates: tuple[str, ...]) -> tuple[str, ...]:
    """A finding that names its failed dependencies gets only the commands about them."""
    from unibazzar_health.runbook import Finding

    if not isinstance(exc, Finding) or not exc.dependencies:
        return templates
    marks = [m for d in exc.dependencies for m in DEPENDENCY_PLACEHOLDERS.get(d, ())]
    return tuple(t for t in templates if any(m in t for m in marks)) or templates


# Probe backends named in errors that stand for a catalog dependency under another name.
BACKEND_DEPENDENCY = {"rabbitmq-management": "rabbitmq"}


def attribute(exc: BaseException | None, entry: CheckEntry) -> list[str]:
    """The dependencies a failure can be pinned on: those a Finding names, or the backend
    of the probe that failed; nothing for a plain assertion (the check judged data)."""
    from unibazzar_health.probes import ProbeError
    from unibazzar_health.runbook import Finding

    if isinstance(exc, Finding):
        return [d for d in exc.dependencies if d in entry.depends_on]
    if isinstance(exc, ProbeError):
        name = BACKEND_DEPENDENCY.get(exc.backend, exc.backend)
        return [name] if name in entry.depends_on else []
    return []


def impact_of(exc: BaseException | None, entry: CheckEntry) -> str:
    from unibazzar_health.runbook import Finding

    if isinstance(exc, Finding) and exc.impact:
        return exc.impact
    return entry.impact


def first_line(exc: BaseException) -> str:
    from unibazzar_health.probes import ProbeError

    if isinstance(exc, ProbeError | AssertionError) and str(exc).strip():
        text = str(exc).strip()
        # pytest appends its assertion rewrite ("assert 0 == 2 ...") after the message.
        return text.split("\nassert ")[0].strip()
    return f"{type(exc).__name__}: {exc}".strip()


def as_evidence(observed: Any) -> Any:
    """Plain JSON-able data of an observation (dataclasses, dicts, lists, scalars)."""
    if dataclasses.is_dataclass(observed) and not isinstance(observed, type):
        return as_evidence(dataclasses.asdict(observed))
    if isinstance(observed, dict):
        return {str(k): as_evidence(v) for k, v in observed.items()}
    if isinstance(observed, list | tuple | set):
        return [as_evidence(v) for v in observed]
    if observed is None or isinstance(observed, str | int | float | bool):
        return observed
    return repr(observed)


# Which [postgresql.NAME] / [redis.NAME] of the environment file a service's commands name
# (the keys environments/*.toml use); otherwise the file's first one.
SERVICE_DATABASE = {"auth-service": "auth", "order-service": "orders"}
SERVICE_CACHE = {"listing-service": "listing-cache", "ai-service": "ai-cache"}


def command_names(env: Environment, entry: CheckEntry) -> dict[str, str]:
    """The names the runbook's commands need, filled in from the environment."""
    from urllib.parse import urlsplit

    spec = env.spec
    service = spec.service(entry.service)
    names = {
        "namespace": spec.kubernetes.namespace,
        "service": entry.service,
        "deployment": (service.deployment if service and service.deployment else entry.service),
    }
    if spec.aws:
        names |= {"listings_table": spec.aws.listings_table,
                  "images_bucket": spec.aws.images_bucket, "aws_region": spec.aws.region}
    database = (spec.postgresql.get(SERVICE_DATABASE.get(entry.service, ""))
                or next(iter(spec.postgresql.values()), None))
    if database:
        parts = urlsplit(database.dsn)
        names |= {"postgres_host": parts.hostname or "", "postgres_port": str(parts.port or 5432),
                  "postgres_db": parts.path.lstrip("/"), "postgres_user": parts.username or "",
                  "postgres_password_var": database.password_env or "PGPASSWORD"}
    cache = (spec.redis.get(SERVICE_CACHE.get(entry.service, ""))
             or next(iter(spec.redis.values()), None))
    if cache:
        parts = urlsplit(cache.url)
        names |= {"redis_host": parts.hostname or "", "redis_port": str(parts.port or 6379),
                  "redis_url": cache.url, "redis_tls": " --tls" if parts.scheme == "rediss" else "",
                  "redis_password_var": cache.password_env or "REDISCLI_AUTH"}
    if spec.rabbitmq:
        from urllib.parse import quote, unquote

        amqp = urlsplit(spec.rabbitmq.url)
        vhost = unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
        names |= {"rabbitmq_management_url": spec.rabbitmq.management_url.rstrip("/"),
                  "events_queue": spec.rabbitmq.events_queue,
                  "rabbitmq_user": unquote(amqp.username or "guest"),
                  "rabbitmq_vhost": quote(vhost, safe=""),
                  "rabbitmq_password_var": spec.rabbitmq.password_env or "RABBITMQ_PASSWORD"}
    if spec.vector_db:
        names |= {"vector_db_url": spec.vector_db.url.rstrip("/"),
                  "vector_collection": spec.vector_db.collection}
    if spec.canary and spec.canary.listing_id:
        names["canary_listing_id"] = spec.canary.listing_id
    if spec.payments:
        names |= {"payments_api_url": spec.payments.api_url.rstrip("/"),
                  "payments_api_key_var": spec.payments.api_key_env}
    return names


def build_result(
    *,
    entry: CheckEntry,
    nodeid: str,
    catalog: Catalog,
    env: Environment | None,
    redactor: Redactor,
    exc: BaseException | None,
    skipped: bool,
    skip_reason: str,
    observed: Any,
    duration_s: float,
) -> CheckResult:
    outcome = classify(exc, skipped, skip_reason)
    result = CheckResult(
        id=entry.id, service=entry.service, step=entry.step, title=entry.title, nodeid=nodeid,
        outcome=outcome, depends_on=list(entry.depends_on), duration_s=round(duration_s, 3),
        evidence=redactor.data(as_evidence(observed)) if observed is not None else None,
    )
    if outcome is Outcome.FAILED:
        assert exc is not None
        result.impact = impact_of(exc, entry)
        result.failed_dependencies = attribute(exc, entry)
        result.severity = catalog.severity_of(result.impact).level
        result.fixes = list(entry.fixes)
        names = command_names(env, entry) if env is not None else {}
        result.commands = [redactor.text(c) for c in
                           fill_commands(commands_for(exc, entry.commands), names)]
    if exc is not None:
        result.message = redactor.text(first_line(exc))
    elif skipped:
        result.message = skip_reason
    return result
