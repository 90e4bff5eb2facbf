"""One check's result, as plain data that crosses xdist workers and lands in the summary.

Outcomes are kept apart as an on-call engineer needs them:
- failed: the platform is unhealthy (an assertion, a Finding, or a backend that gave
  no answer within its deadline);
- broken: the check itself could not run (a bug, a crash, or a database without the
  schema the checks expect: our environment, not the platform): the verdict is incomplete;
- skipped: not configured for this environment;
- not-run: the run's budget ran out first.
"""

from __future__ import annotations

import dataclasses
import enum
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from unibazzar_health.config.names import BACKENDS, BACKENDS_BY_NAME, SERVICE_PREFIX, SERVICES
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.judges.observer import ObservationTimeout
from unibazzar_health.probes import FailureKind, ProbeError, ProbeFailure
from unibazzar_health.verdict.catalog import (
    OPTIONAL_NAMES,
    RELATED_SYSTEMS,
    Catalog,
    CheckEntry,
    FailureMode,
    KindFix,
    fill_commands,
    names_in,
)
from unibazzar_health.verdict.severity import severity_of, worst_impact

# Imported inside the functions that use them: the plugin loads this module in every pytest
# run, and judges.runbook (Finding) and config/'s settings bring pydantic.
if TYPE_CHECKING:
    from unibazzar_health.config.environment import Environment, EnvironmentFile

PROPERTY_KEY = "unibazzar"
NOT_RUN_PREFIX = "not run:"
READ_ONLY_PREFIX = "read-only run:"


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
    # For failed checks: the catalog's sentence for stakeholders (what users experience),
    # the Initial Notification's "Impact:" line.
    impact_statement: str | None = None
    severity: str | None = None
    message: str | None = None
    fixes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    evidence: Any = None
    duration_s: float = 0.0
    # Which of depends_on the failure is attributed to (the backends of its failures): the
    # summary groups failures sharing one into a single incident.
    failed_dependencies: list[str] = field(default_factory=list)
    # The probe failures behind a failed or broken check, as ProbeFailure.to_dict() gives
    # them (backend, target, kind, problem, deadline): plain data, as it crosses workers.
    failures: list[dict[str, Any]] = field(default_factory=list)
    # For failed checks: their service's pods' last log lines and CPU/memory against limits
    # (service_context.py), gathered once per service per run; None where not gathered.
    context: dict[str, Any] | None = None

    def properties(self) -> list[tuple[str, str]]:
        """What a JUnit XML report shows of the check: plain strings, by name."""
        shown = {"check": self.id, "service": self.service, "step": self.step,
                 "outcome": str(self.outcome), "impact": self.impact, "severity": self.severity}
        return [(f"unibazzar.{key}", value) for key, value in shown.items() if value]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["outcome"] = str(self.outcome)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


def classify(exc: BaseException | None, skipped: bool, skip_reason: str = "") -> Outcome:
    """Turn what happened in a check into its outcome (see module docstring)."""
    if skipped:
        return Outcome.NOT_RUN if skip_reason.startswith(NOT_RUN_PREFIX) else Outcome.SKIPPED
    if exc is None:
        return Outcome.PASSED
    if isinstance(exc, AssertionError | ProbeError | ObservationTimeout):
        blind = schema_mismatch(exc) or only_own_credentials_refused(failures_of(exc))
        return Outcome.BROKEN if blind else Outcome.FAILED
    return Outcome.BROKEN


# The backends the checks log into with a credential of their own, as their probes name them:
# every backend of config/names.py (their database role and Redis password, RabbitMQ user,
# AWS identity, kubeconfig or token, vector database token, payment provider key, Prometheus
# token). Refused, it is the checks' configuration that is wrong (a rotated secret, a role
# without its grant), and they saw nothing of the platform there: no outage to page anyone
# for. A service refusing what we sent it (order-service a correctly signed webhook) is the
# platform's answer.
OWN_CREDENTIAL_BACKENDS = frozenset(name for b in BACKENDS for name in (b.name, *b.aliases))


def own_credential_refused(failure: ProbeFailure) -> bool:
    """The checks' own credential refused by a backend (OWN_CREDENTIAL_BACKENDS)."""
    return (failure.kind is FailureKind.AUTH_REJECTED
            and failure.backend in OWN_CREDENTIAL_BACKENDS)


def only_own_credentials_refused(failures: Iterable[ProbeFailure]) -> bool:
    """Every failure behind a check is the checks' own credential refused: the check judged
    nothing of the platform (it is broken, and says which credential)."""
    failures = tuple(failures)
    return bool(failures) and all(own_credential_refused(f) for f in failures)


def refused_credentials(checks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """From summary checks: each backend that refused the checks' own credential, with the
    broken checks it blinded and the first refusal in its own words, backend by backend."""
    refused: dict[str, dict[str, Any]] = {}
    for check in checks:
        failures = [ProbeFailure.from_dict(f) for f in check.get("failures") or []]
        if check["outcome"] != str(Outcome.BROKEN) or not only_own_credentials_refused(
                failures):
            continue
        for failure in failures:
            entry = refused.setdefault(dependency_of(failure), {
                "dependency": dependency_of(failure), "checks": [],
                "refusal": failure.message, "fixes": [], "commands": []})
            for key, values in (("checks", [check["id"]]), ("fixes", check.get("fixes")),
                                ("commands", check.get("commands"))):
                entry[key] += [v for v in values or [] if v not in entry[key]]
    return sorted(refused.values(), key=lambda e: str(e["dependency"]))


OWN_CREDENTIAL_REFUSED = (" — the checks' own credential was refused: their configuration, "
                          "not an outage; the check could not judge the platform")


def schema_mismatch(exc: BaseException) -> bool:
    """Every probe failure behind ``exc`` is a relation or column that does not exist: the
    database is not the one these checks were written for, so they judged nothing of it."""
    failures = failures_of(exc)
    return bool(failures) and all(f.kind is FailureKind.MISSING_SCHEMA for f in failures)


SCHEMA_MISMATCH = (" — the database does not have the schema these checks expect (wrong "
                   "database in the environment file, or a migration not applied): the "
                   "check could not judge the platform")


def failures_of(exc: BaseException | None) -> tuple[ProbeFailure, ...]:
    """The probe failures behind a check's failure: a Finding's, or the ProbeError's own."""
    from unibazzar_health.judges.runbook import Finding

    if isinstance(exc, Finding):
        return exc.failures
    if isinstance(exc, ProbeError):
        return (ProbeFailure.of(exc),)
    return ()


# The placeholders by which a catalog command names a dependency (catalog.toml's depends_on).
DEPENDENCY_PLACEHOLDERS = {b.name: b.placeholders for b in BACKENDS if b.placeholders}


def commands_for(dependencies: list[str], templates: tuple[str, ...]) -> tuple[str, ...]:
    """Only the commands about the dependencies a failure is pinned on (all of them when
    none is, or none of the commands names one)."""
    marks = [m for d in dependencies for m in DEPENDENCY_PLACEHOLDERS.get(d, ())]
    return tuple(t for t in templates if any(m in t for m in marks)) or templates


# Probe backends that stand for a catalog dependency under another name.
BACKEND_DEPENDENCY = {alias: b.name for b in BACKENDS for alias in b.aliases}


def dependency_of(failure: ProbeFailure) -> str:
    """The catalog dependency (depends_on) a probe failure is of."""
    return BACKEND_DEPENDENCY.get(failure.backend, failure.backend)


def attribute(exc: BaseException | None, entry: CheckEntry) -> list[str]:
    """The dependencies a failure can be pinned on: the backends of the probe failures
    behind it that the check depends on; nothing for a plain assertion (the check judged
    data). Never on a backend that only refused the checks' own credential: that is no
    failure of it to group services under."""
    pinned = [dependency_of(f) for f in failures_of(exc) if not own_credential_refused(f)]
    return list(dict.fromkeys(d for d in pinned if d in entry.depends_on))


def remedies(exc: BaseException | None, entry: CheckEntry, catalog: Catalog,
             names: dict[str, str]) -> tuple[list[str], list[str]]:
    """The fixes and filled-in commands for a failed check. A probe failure pinned on a
    dependency whose kind of failure the catalog has a fix for gets that fix and its
    commands: the check's own are written for what it judges (capacity, stale data), not
    for a deleted table or a host name that does not resolve. The rest get the check's own,
    or its failure mode's where the Finding names one (a forged token accepted is no secret
    to rotate), its commands narrowed to the dependencies they are pinned on."""
    fixes: list[str] = []
    commands: list[str] = []
    generic = not failures_of(exc)
    generic_dependencies: list[str] = []
    for failure in failures_of(exc):
        fix = kind_fix(failure, entry, catalog)
        if fix is None and own_credential_refused(failure):
            continue  # beside a real failure: the check's own fixes are not for it
        if fix is None:
            generic = True
            if dependency_of(failure) in entry.depends_on:
                generic_dependencies.append(dependency_of(failure))
            continue
        fixes += fix.fixes
        host = failed_host(failure)
        commands += fill_commands(fix.commands, names | ({"failed_host": host} if host else {}))
    if generic:
        mode = failure_mode(exc, entry)
        own_fixes, own_commands = (mode.fixes, mode.commands) if mode else (entry.fixes,
                                                                             entry.commands)
        fixes += own_fixes
        found = finding_names(exc)
        given = names | found
        # A command needing a name neither the finding nor the environment gives is left
        # out, not shown with a hole.
        templates = [t for t in commands_for(generic_dependencies, own_commands)
                     if all(name in given for name in names_in(t) & OPTIONAL_NAMES)]
        commands += fill_commands(tuple(templates), given)
    return list(dict.fromkeys(fixes)), list(dict.fromkeys(commands))


def kind_fix(failure: ProbeFailure, entry: CheckEntry, catalog: Catalog) -> KindFix | None:
    """The catalog's entry for this kind of failure of one of the check's dependencies."""
    dependency = dependency_of(failure)
    return catalog.fix_for(dependency, failure.kind) if dependency in entry.depends_on else None


def failure_mode(exc: BaseException | None, entry: CheckEntry) -> FailureMode | None:
    """The check's failure mode its Finding names (a CatalogError if the catalog has none)."""
    from unibazzar_health.judges.runbook import Finding

    if isinstance(exc, Finding) and exc.mode:
        return entry.mode(exc.mode)
    return None


def finding_names(exc: BaseException | None) -> dict[str, str]:
    from unibazzar_health.judges.runbook import Finding

    return exc.names if isinstance(exc, Finding) else {}


def failed_host(failure: ProbeFailure) -> str | None:
    """The host a failed probe was aimed at: its target's ("host:port/db" or a URL), else
    the endpoint its problem names (AWS targets name the table or bucket, not the host)."""
    import re

    for text in (failure.target, failure.problem):
        url = re.search(r"[a-z][a-z0-9+.-]*://[^\s/?#]+", text)
        if url:
            return urlsplit(url.group(0)).hostname
    address = re.match(r"([^\s:/]+):\d+(/|$)", failure.target)
    return address.group(1) if address else None


def impact_of(exc: BaseException | None, entry: CheckEntry, catalog: Catalog) -> str:
    """The class the Finding names; else, where every failure behind it has a kind entry
    that rates it (failure_fixes' impact: the Kubernetes API unreadable is alike for every
    check), the worst of those; else the check's own."""
    from unibazzar_health.judges.runbook import Finding

    if isinstance(exc, Finding) and exc.impact:
        return exc.impact
    # A refused credential of the checks' own beside the real failures rates nothing.
    rated = [fix.impact if fix else None
             for fix in (kind_fix(f, entry, catalog) for f in failures_of(exc)
                         if not own_credential_refused(f))]
    if rated and all(rated):
        return worst_impact([i for i in rated if i], catalog)
    return entry.impact


def credential_remedies(exc: BaseException | None, entry: CheckEntry, catalog: Catalog,
                        names: dict[str, str]) -> tuple[list[str], list[str]]:
    """For a check blinded by its own credential refused: the catalog's fix for that refusal
    of each backend ("<dependency>.auth_rejected"), none of the check's own fixes, which
    are for the platform."""
    fixes: list[str] = []
    commands: list[str] = []
    for failure in failures_of(exc):
        fix = kind_fix(failure, entry, catalog)
        if fix is not None:
            fixes += fix.fixes
            commands += fill_commands(fix.commands, names)
    return list(dict.fromkeys(fixes)), list(dict.fromkeys(commands))


def impact_statement(entry: CheckEntry, failed_dependencies: list[str],
                     catalog: Catalog) -> str:
    """The Impact line's sentence for a failed check, only what its evidence supports. A
    check that judged what it read says its own. One failed by a backend it needs (pinned on
    it) judged nothing of its own subject (stuck sagas, a charge without an order, forged
    tokens): it says what losing a backend does to its service, the sentence of the
    service's related-systems check, so a dead database speaks once per service. Pinned only
    on what the checks look through (the Kubernetes API, log files, CloudWatch), customers
    are not shown to be affected at all."""
    if not failed_dependencies:
        return entry.impact_statement
    if set(failed_dependencies) <= LOOKED_THROUGH:
        seen = ", ".join(LOOKED_THROUGH_NAMES.get(d, d) for d in failed_dependencies)
        return (f"No customer impact is shown: the checks cannot read {seen}, so part of "
                f"{entry.service} goes unchecked.")
    related = next((c for c in catalog.checks.values() if c.service == entry.service
                    and c.id.endswith(RELATED_SYSTEMS)), None)
    return related.impact_statement if related else entry.impact_statement


# Dependencies the checks only look through (to see pods, logs, metrics): their failing is a
# blind spot of the checks, not a path customers' requests take.
LOOKED_THROUGH_NAMES = {b.name: b.looked_through for b in BACKENDS if b.looked_through}
LOOKED_THROUGH = frozenset(LOOKED_THROUGH_NAMES)


def first_line(exc: BaseException) -> str:
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
    if isinstance(observed, enum.Enum):
        return as_evidence(observed.value)
    if observed is None or isinstance(observed, str | int | float | bool):
        return observed
    return repr(observed)




def kubectl(env: Environment) -> str:
    """``kubectl`` with the environment's cluster selection, for catalog.toml's {kubectl}:
    every printed kubectl command starts with it (catalog.check_command refuses a bare one),
    so pasted during an incident it acts on the cluster the checks looked at, never on
    whatever cluster the engineer's shell points at. Kubeconfig mode: --context, the file's
    or the kubeconfig's current-context when loaded; url mode: --server (and --token from
    the variable the file names, so no other cluster's credentials are sent); in-cluster:
    the pod's own. Without [kubernetes] the context stays a visible {kube_context}."""
    kube, context = env.spec.kubernetes, env.kube_context
    if kube is None or (kube.mode == "kubeconfig" and not context):
        return "kubectl --context {kube_context}"
    if kube.mode == "kubeconfig" and context:
        return f"kubectl --context {shlex.quote(context)}"
    if kube.mode == "url" and kube.api_url:
        token = f' --token "${{{kube.token_env}}}"' if kube.token_env else ""
        return f"kubectl --server {quoted(kube.api_url)}{token}"
    return "kubectl"


def quoted(text: str) -> str:
    """Single-quoted for a shell, always (shlex.quote leaves a URL bare when it can, but a
    printed URL is quoted wherever it appears)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _duration(minutes: float) -> str:
    """A window as kubectl's --since takes it: whole minutes, else seconds."""
    return f"{minutes:.0f}m" if minutes == int(minutes) else f"{round(minutes * 60)}s"


def command_names(env: Environment, entry: CheckEntry) -> dict[str, str]:
    """The names the runbook's commands need, filled in from the environment: the check's
    own (its service, the cluster, its windows and patterns), then each section's."""
    spec = env.spec
    return (_check_names(env, entry) | _deployment_names(spec) | _aws_names(spec)
            | _postgres_names(spec, entry.service) | _redis_names(spec, entry.service)
            | _rabbitmq_names(spec) | _vector_db_names(spec) | _canary_names(spec)
            | _saga_names(spec) | _payments_names(spec))


def _check_names(env: Environment, entry: CheckEntry) -> dict[str, str]:
    from unibazzar_health.config.platform import DEFAULT_NAMESPACE

    spec = env.spec
    service = spec.service(entry.service)
    names = {
        "namespace": spec.kubernetes.namespace if spec.kubernetes else DEFAULT_NAMESPACE,
        "service": entry.service,
        "deployment": (service.deployment if service and service.deployment else entry.service),
        "kubectl": kubectl(env),
        # The authentication-logs check's own window and failure pattern (grep -E).
        "auth_logs_window": _duration(spec.auth_logs.window_minutes),
        "auth_logs_failure": shlex.quote(spec.auth_logs.failure),
        "auth_logs_blocked": shlex.quote(spec.auth_logs.blocked),
        # The error-patterns check's window and what it counts as an error line (grep -E).
        "error_logs_window": _duration(spec.thresholds.error_window_minutes),
        "error_logs_pattern": shlex.quote(spec.error_logs.pattern),
        "saga_timeout_minutes": f"{spec.thresholds.saga_timeout_minutes:g}",
    }
    if service:
        names["service_url"] = service.url.rstrip("/")
    return names


def _deployment_names(spec: EnvironmentFile) -> dict[str, str]:
    """Every service's Deployment by its id prefix ({auth_deployment}): a failure_fixes
    entry about one service is shown by other services' checks too."""
    names = {}
    for name in SERVICES:
        target = spec.service(name)
        names[f"{SERVICE_PREFIX[name]}_deployment"] = (
            target.deployment if target and target.deployment else name)
    return names


def _aws_names(spec: EnvironmentFile) -> dict[str, str]:
    if not spec.aws:
        return {}
    return {
        # An emulator or VPC endpoint: the pasted command must reach what the checks read.
        "aws": (f"aws --endpoint-url {quoted(spec.aws.endpoint_url)}"
                if spec.aws.endpoint_url else "aws"),
        "listings_table": spec.aws.listings_table, "images_bucket": spec.aws.images_bucket,
        "aws_region": spec.aws.region,
        # The capacity check's window, for a CloudWatch read by hand.
        "dynamodb_window_seconds": f"{round(spec.thresholds.dynamodb_window_minutes * 60)}"}


def _instance(backend: str, service: str) -> str:
    """The [<backend>.NAME] of the environment file ``service``'s checks read (config/names.py;
    "" for a service that does not use the backend: the commands take the file's first)."""
    return BACKENDS_BY_NAME[backend].used_by.get(service) or ""


def _postgres_names(spec: EnvironmentFile, service: str) -> dict[str, str]:
    database = (spec.postgresql.get(_instance("postgresql", service))
                or next(iter(spec.postgresql.values()), None))
    if not database:
        return {}
    parts = urlsplit(database.dsn)
    return {"postgres_host": parts.hostname or "", "postgres_port": str(parts.port or 5432),
            "postgres_db": parts.path.lstrip("/"), "postgres_user": parts.username or "",
            "postgres_password_var": database.password_env or "PGPASSWORD"}


def _redis_names(spec: EnvironmentFile, service: str) -> dict[str, str]:
    cache = (spec.redis.get(_instance("redis", service))
             or next(iter(spec.redis.values()), None))
    if not cache:
        return {}
    parts = urlsplit(cache.url)
    return {"redis_host": parts.hostname or "", "redis_port": str(parts.port or 6379),
            "redis_url": cache.url, "redis_tls": " --tls" if parts.scheme == "rediss" else "",
            "redis_password_var": cache.password_env or "REDISCLI_AUTH"}


def _rabbitmq_names(spec: EnvironmentFile) -> dict[str, str]:
    if not spec.rabbitmq:
        return {}
    amqp = urlsplit(spec.rabbitmq.url)
    vhost = unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
    names = {"rabbitmq_management_url": spec.rabbitmq.management_url.rstrip("/"),
             "events_queue": spec.rabbitmq.events_queue,
             "rabbitmq_user": unquote(amqp.username or "guest"),
             "rabbitmq_vhost": quote(vhost, safe=""),
             "rabbitmq_password_var": spec.rabbitmq.password_env or "RABBITMQ_PASSWORD"}
    if spec.rabbitmq.consumer_deployment:
        names["consumer_deployment"] = spec.rabbitmq.consumer_deployment
    return names


def _vector_db_names(spec: EnvironmentFile) -> dict[str, str]:
    if not spec.vector_db:
        return {}
    return {"vector_db_url": spec.vector_db.url.rstrip("/"),
            "vector_collection": spec.vector_db.collection,
            "vector_tenant": spec.vector_db.tenant, "vector_database": spec.vector_db.database}


def _canary_names(spec: EnvironmentFile) -> dict[str, str]:
    if not spec.canary:
        return {}
    names = {"canary_email": shlex.quote(spec.canary.email)}
    if spec.canary.listing_id:
        names["canary_listing_id"] = spec.canary.listing_id
    return names


def _saga_names(spec: EnvironmentFile) -> dict[str, str]:
    order = spec.service("order-service")
    if not (order and order.saga_retry_path):
        return {}
    # One saga's retry URL, quoted, with the shell's $saga where the path names {saga_id}:
    # the command loops over the stuck sagas' ids.
    path = quoted(order.url.rstrip("/") + order.saga_retry_path)
    return {"saga_retry_url": path.replace("{saga_id}", "'\"$saga\"'")}


def _payments_names(spec: EnvironmentFile) -> dict[str, str]:
    if not spec.payments:
        return {}
    return {"payments_api_url": spec.payments.api_url.rstrip("/"),
            "payments_api_key_var": spec.payments.api_key_env}


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
    refused = outcome is Outcome.BROKEN and only_own_credentials_refused(failures_of(exc))
    if outcome is Outcome.FAILED:
        assert exc is not None
        result.impact = impact_of(exc, entry, catalog)
        result.failed_dependencies = attribute(exc, entry)
        result.impact_statement = impact_statement(entry, result.failed_dependencies, catalog)
        result.severity = severity_of(result.impact, catalog).level
        names = command_names(env, entry) if env is not None else {}
        fixes, commands = remedies(exc, entry, catalog, names)
        result.fixes = fixes
        result.commands = [redactor.text(c) for c in commands]
    elif refused:
        # No platform fix fits: only the catalog's words for the refused credential
        # (failure_fixes "<dependency>.auth_rejected"), never the check's own.
        names = command_names(env, entry) if env is not None else {}
        fixes, commands = credential_remedies(exc, entry, catalog, names)
        result.fixes = fixes
        result.commands = [redactor.text(c) for c in commands]
    if outcome in (Outcome.FAILED, Outcome.BROKEN):
        result.failures = redactor.data([f.to_dict() for f in failures_of(exc)])
    if exc is not None:
        explained = (SCHEMA_MISMATCH if outcome is Outcome.BROKEN and schema_mismatch(exc)
                     else OWN_CREDENTIAL_REFUSED if refused else "")
        result.message = redactor.text(first_line(exc) + explained)
    elif skipped:
        result.message = skip_reason
    return result
