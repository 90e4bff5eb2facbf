"""The environment a run targets: one TOML file, validated before any probe runs.

Secrets are never written in the file: a key ending in ``_env`` names the
environment variable that holds the value. Every error names the file, the key
and the value (masked, whatever its type, under a key that sounds secret; any password
in a URL masked).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from unibazzar_health.config.names import ServiceName
from unibazzar_health.config.redaction import MASK, Redactor, url_without_password

ENV_VAR_SELECT_NAME = "UNIBAZZAR_ENV"
ENV_VAR_SELECT_FILE = "UNIBAZZAR_ENV_FILE"
DEFAULT_ENVIRONMENT = "sandbox"
# The platform's namespace (runbook): the default, and what commands name when the
# environment has no [kubernetes].
DEFAULT_NAMESPACE = "unibazzar"
# Where a pod's service-account token is mounted: in-cluster mode cannot work without it.
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


# A key whose value is likely a secret written where it must not be: shown masked.
SECRET_LIKE_KEY = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)
ENV_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# A query parameter whose name says it carries a secret (libpq and redis-py honour some).
SECRET_QUERY = re.compile(r"(?i)(^|&)([^=&]*(?:pass|secret|token|key|auth)[^=&]*)=([^&]*)")


def _mask_query(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    return urlunsplit(parts._replace(query=SECRET_QUERY.sub(r"\1\2=***", parts.query)))


def shown_url(url: str) -> str:
    """``url`` as an error may show it: its password and secret-like query values masked."""
    return _mask_query(url_without_password(url))


# Keys that match SECRET_LIKE_KEY but hold no secret: names the file's author chose (a
# database called "auth"), the auth_logs section, and a path (shown: masked, "no such
# file" would not say which file).
_NAMED_TABLES = frozenset({"services", "postgresql", "redis"})
_NOT_SECRET_KEYS = frozenset({"auth_logs", "environment.secrets_file"})


def _names_a_secret(key: str) -> bool:
    """Whether ``key``'s value, or anything inside it, may be a secret: some part of its
    path is secret-like (a table under ``password`` hides its contents too). A last part
    ending in ``_env`` names a variable, judged by its value in ``_shown``."""
    parts = key.split(".")
    for index, part in enumerate(parts):
        if index == 1 and parts[0] in _NAMED_TABLES:
            continue
        if ".".join(parts[: index + 1]) in _NOT_SECRET_KEYS:
            continue
        if index == len(parts) - 1 and part.endswith("_env"):
            continue
        if SECRET_LIKE_KEY.search(part):
            return True
    return False


def _shown(key: str, value: object) -> object:
    """What an error may show of ``value``, whatever its TOML type: nothing that could be a
    secret. Masked by key first, since a secret may be a number, a list or a table."""
    if _names_a_secret(key):
        return MASK
    if key.rsplit(".", 1)[-1].endswith("_env"):
        return value if isinstance(value, str) and ENV_VAR_NAME.fullmatch(value) else MASK
    if isinstance(value, str):
        return shown_url(value)
    if isinstance(value, dict):
        return {name: _shown(f"{key}.{name}", item) for name, item in value.items()}
    if isinstance(value, list):
        return [_shown(key, item) for item in value]
    if isinstance(value, date | dt_time):  # as the file writes it, not datetime.datetime(…)
        return value.isoformat()
    return value  # a number or a boolean: its key already says it is no secret


class EnvironmentFileError(Exception):
    """A bad environment file: names the file, the key and the value (never a secret)."""

    def __init__(self, path: Path | str, key: str, value: object, reason: str) -> None:
        self.path, self.key, self.value, self.reason = str(path), key, value, reason
        where = f"key '{key}'" if key else "file"
        value_part = "" if value is NO_VALUE else f": value {_shown(key, value)!r}"
        super().__init__(f"{path}: {where}{value_part}: {reason}")


NO_VALUE: Any = object()


def secret_in_url(value: str) -> str | None:
    """What in ``value`` is a secret that must not be written where it is (a file, a
    command line, and so every summary and log that shows it): a password, a query
    parameter whose name sounds secret; None when there is none."""
    parts = urlsplit(value)
    if parts.password is not None:
        return "the URL carries a password"
    if SECRET_QUERY.search(parts.query):
        return "the URL carries a secret in its query"
    return None


def _url(*schemes: str) -> AfterValidator:
    def check(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise ValueError(f"expected a URL with scheme {' or '.join(schemes)}")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        try:
            parts.port  # noqa: B018 - parsing the port is the validation
        except ValueError as exc:
            raise ValueError(f"bad port ({exc})") from None
        secret = secret_in_url(value)
        if secret:
            raise ValueError(f"{secret}: write it in an environment variable and name it "
                             "in the matching *_env key")
        return value

    return AfterValidator(check)


def _env_var_name(value: str) -> str:
    if not ENV_VAR_NAME.fullmatch(value):
        raise ValueError("not an environment variable name (A-Z, 0-9, _): a *_env key names "
                         "the variable that holds the secret, never the secret itself")
    return value


HttpUrl = Annotated[str, _url("http", "https")]


def _one_saga(path: str) -> str:
    # Without it every retry would POST the same URL, whichever saga it was meant for.
    if not path.startswith("/") or "{saga_id}" not in path:
        raise ValueError("expected a path starting with / that names {saga_id}")
    return path
EnvVar = Annotated[str, AfterValidator(_env_var_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvironmentInfo(_Section):
    name: str
    description: str = ""
    # A dotenv file for local sandboxes only; real variables always win.
    secrets_file: str | None = None


class Deadlines(_Section):
    """Seconds. Every probe is bounded by its backend's deadline, else the default."""

    default: PositiveFloat = 3.0
    # Wall clock of one check's observation, several probes included: past it the
    # observation is abandoned even if a client ignored its timeout.
    check: PositiveFloat = 10.0
    postgresql: PositiveFloat | None = None
    redis: PositiveFloat | None = None
    rabbitmq: PositiveFloat | None = None
    dynamodb: PositiveFloat | None = None
    s3: PositiveFloat | None = None
    kubernetes: PositiveFloat | None = None
    http: PositiveFloat | None = None
    payments: PositiveFloat | None = None
    vector_db: PositiveFloat | None = None
    logs: PositiveFloat | None = None  # reading a service's log file ([error_logs] files)


class Thresholds(_Section):
    db_connection_usage: Annotated[float, Field(gt=0, le=1)] = 0.9
    long_query_seconds: PositiveFloat = 60.0
    idle_in_transaction_seconds: PositiveFloat = 60.0
    lock_wait_seconds: PositiveFloat = 30.0
    saga_timeout_minutes: PositiveFloat = 15.0
    recent_change_minutes: PositiveFloat = 60.0
    queue_depth_max: PositiveInt = 1000
    redis_latency_p95_ms: PositiveFloat = 50.0
    redis_memory_usage: Annotated[float, Field(gt=0, le=1)] = 0.9
    vector_query_ms: PositiveFloat = 500.0
    embedding_ms: PositiveFloat = 1000.0
    pod_memory_usage: Annotated[float, Field(gt=0, le=1)] = 0.9
    pod_cpu_usage: Annotated[float, Field(gt=0, le=1)] = 0.9  # of the container's CPU limit
    restart_window_minutes: PositiveFloat = 60.0
    search_p95_ms: PositiveFloat = 1000.0
    reconcile_window_minutes: PositiveFloat = 1440.0
    reconcile_grace_minutes: Annotated[float, Field(ge=0)] = 5.0
    indexing_budget_s: PositiveFloat = 3.0
    # Read-only indexing lag (listing-service step 2 where no canary is written): the oldest
    # waiting event's age, how long the events queue has stood still with events waiting,
    # and the time its consumers need to catch up, each at most this.
    indexing_lag_s: PositiveFloat = 60.0
    # DynamoDB capacity over this window (CloudWatch): more throttle events than
    # dynamodb_throttles_max, or the busiest minute's consumed units at this share of the
    # provisioned capacity, is a degradation.
    dynamodb_window_minutes: PositiveFloat = 15.0
    dynamodb_capacity_usage: Annotated[float, Field(gt=0, le=1)] = 0.8
    dynamodb_throttles_max: Annotated[int, Field(ge=0)] = 0
    recommendations_ms: PositiveFloat = 1000.0
    # Error lines in a service's pod logs (error_logs.pattern), per minute over the window
    # before the run started: at or over the rate, a spike (error_spike_ratio times the
    # window before's rate) is a degradation, a rate as high as before a minor finding.
    error_window_minutes: PositiveFloat = 15.0
    error_rate_per_minute: PositiveFloat = 10.0
    error_spike_ratio: Annotated[float, Field(gt=1)] = 3.0


class ServiceTarget(_Section):
    url: HttpUrl
    deployment: str | None = None  # defaults to the service name
    health_path: str = "/health"
    # A "deep health" endpoint answering {dependency: {"ok": bool, ...}}: the service's own
    # view of its downstream dependencies (order-service step 4).
    dependencies_path: str | None = None
    # ai-service: recommendations for a user, answering {"recommendations": [...]}; the
    # canary's email is sent as ?user= (the symptom "recommendation failures").
    recommendations_path: str | None = None
    # listing-service: its newest listings, answering {"listings": [{"listing_id": ...,
    # "created_at": ISO 8601}, ...]} (?limit=N is added): the newest indexed listing is
    # compared with the newest (the read-only indexing lag, listing-service step 2).
    newest_listings_path: str | None = None
    # order-service: its admin endpoint that retries a saga's failed step, POSTed with the
    # saga's id where the path says {saga_id} ("/admin/sagas/{saga_id}/retry"): the retry
    # command printed for stuck sagas. Unset: that command is left out.
    saga_retry_path: Annotated[str, AfterValidator(_one_saga)] | None = None
    # auth-service (or the gateway before it) states its login limits in RateLimit headers
    # (IETF RateLimit-Policy, RateLimit-Limit or X-RateLimit-Limit): their absence is then
    # a finding. Stated without this, they are read all the same (auth-service step 4).
    rate_limit_headers: bool = False


class PostgresTarget(_Section):
    dsn: Annotated[str, _url("postgresql", "postgres")]
    password_env: EnvVar | None = None


class RedisTarget(_Section):
    url: Annotated[str, _url("redis", "rediss")]
    password_env: EnvVar | None = None


class RabbitMQTarget(_Section):
    url: Annotated[str, _url("amqp", "amqps")]
    password_env: EnvVar | None = None
    management_url: HttpUrl
    events_exchange: str
    events_queue: str
    # The Deployment consuming events_queue (the search indexer), which "Restart RabbitMQ
    # consumers" restarts: not the publisher (listing-service). Unset: commands show
    # {consumer_deployment} for the engineer to fill in.
    consumer_deployment: str | None = None


class AwsTarget(_Section):
    region: str
    # Only for emulators or VPC endpoints; real AWS needs none.
    endpoint_url: HttpUrl | None = None
    # Unset: boto3's own credential chain (instance role, SSO, profile).
    access_key_id_env: EnvVar | None = None
    secret_access_key_env: EnvVar | None = None
    listings_table: str
    images_bucket: str
    canary_prefix: str = "health-checks/canary/"


class KubernetesTarget(_Section):
    namespace: str = DEFAULT_NAMESPACE
    mode: Literal["kubeconfig", "in-cluster", "url"] = "kubeconfig"
    context: str | None = None
    api_url: HttpUrl | None = None
    token_env: EnvVar | None = None


class VectorDbTarget(_Section):
    url: HttpUrl
    collection: str
    tenant: str = "default_tenant"
    database: str = "default_database"
    token_env: EnvVar | None = None


class PaymentsTarget(_Section):
    provider: Literal["stripe"] = "stripe"
    api_url: HttpUrl
    api_key_env: EnvVar
    webhook_url: HttpUrl
    webhook_secret_env: EnvVar


class CanaryUser(_Section):
    email: str
    password_env: EnvVar
    # A search the catalog always answers, and the id it must return (ai-service end to end).
    search_query: str | None = None
    search_expect_id: str | None = None
    # Let listing-service step 2 create (and delete) a canary listing: a write, so off
    # unless the environment says so.
    listing_writes: bool = False
    # A listing that never changes: the API must serve it as DynamoDB holds it (cache freshness).
    listing_id: str | None = None
    # Where the canary logs in from, as auth-service's log names the source (our checks'
    # hosts): a successful canary login from anywhere else means its password is out, a
    # breach (auth-service step 3). Empty: not judged.
    known_sources: tuple[str, ...] = ()
    # Let auth-service step 4 send a bounded burst of logins for an account that does not
    # exist (rate_limit_account) and expect the rate limiter to refuse one: it fills that
    # account's limiter window and the auth log, so off unless the environment says so.
    rate_limit_probe: bool = False
    rate_limit_burst: Annotated[int, Field(ge=2, le=100)] = 20
    # Default: the canary's address with "+rate-limit-probe" in its local part.
    rate_limit_account: str | None = None

    @property
    def probe_account(self) -> str:
        """The account the rate-limit burst logs in as (never a real user's)."""
        if self.rate_limit_account:
            return self.rate_limit_account
        local, _, domain = self.email.partition("@")
        return f"{local}+rate-limit-probe@{domain}" if domain else f"{local}+rate-limit-probe"


class OnCall(_Section):
    primary: str = "on-call primary"  # the Incident Commander the messages name
    secondary: str = "on-call secondary"
    manager: str = "engineering manager"


class Contacts(_Section):
    """Who each escalation reaches (the runbook's Escalation Procedures and Vendor
    Contacts): names, handles, channels or URLs, never secrets."""

    level_2: str = "senior engineer / team lead"
    level_3: str | None = None  # default: [oncall] manager
    level_4: str = "VP Engineering / CTO"
    aws_support: str | None = None  # e.g. the AWS support case URL
    payment_provider: str | None = None  # e.g. Stripe support
    security_team: str | None = None
    infrastructure_team: str | None = None  # e.g. its Slack channel: the cluster is theirs


Minutes = Annotated[float, Field(ge=0)]


class Escalation(_Section):
    """Minutes open after which an incident reaches internal levels 1, 2, 3, 4, by
    severity (a shorter list: never by time alone). Defaults: policy.py."""

    SEV1: list[Minutes] | None = None
    SEV2: list[Minutes] | None = None
    SEV3: list[Minutes] | None = None
    SEV4: list[Minutes] | None = None
    # An acknowledged incident (``incident ack``) does not escalate internally for this
    # long, unless its severity rises.
    ack_timeout_minutes: PositiveFloat = 60.0

    def minutes(self) -> dict[str, dict[int, float]]:
        levels = self.model_dump(include={"SEV1", "SEV2", "SEV3", "SEV4"})
        return {level: {n + 1: float(m) for n, m in enumerate(values)}
                for level, values in levels.items() if values is not None}


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return value


class Calendar(_Section):
    """The team's business days: SEV4's "next business day" starts at day_starts of the
    first one after the failure."""

    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    workdays: list[Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]] = [
        "Mon", "Tue", "Wed", "Thu", "Fri"]
    day_starts: dt_time = dt_time(9, 0)
    holidays: list[date] = []


def _link_pattern(value: str) -> str:
    """A link with exactly one ``{}``, the id it is filled with (``{{``/``}}``: a literal
    brace): checked here, so a bad one stops the run at load, not in a pytest hook."""
    import string

    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a link pattern ({exc}): write {{}} where the id goes, "
                         "{{ and }} for a literal brace") from None
    if fields != [("", "", None)]:
        found = ", ".join("{" + name + (f"!{conversion}" if conversion else "")
                          + (f":{spec}" if spec else "") + "}"
                          for name, spec, conversion in fields)
        raise ValueError(f"expected exactly one {{}} placeholder (the id), found "
                         f"{found or 'none'}")
    parts = urlsplit(value.format("id"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL with {} where the id goes")
    secret = secret_in_url(value)
    if secret:
        raise ValueError(f"{secret}: a link is shown in every report")
    return value


class ReportLinks(_Section):
    """Where a run's outputs are read: the published single-file Allure report, the
    runbook, the war room; ``tms_pattern``, each check's Allure test-case link, its
    catalog id in place of ``{}``."""

    url: HttpUrl | None = None
    runbook_url: HttpUrl | None = None
    war_room: str = "#incidents"
    # No issue_pattern: nothing knows a ticket's id while the checks' Allure results are
    # written (the ticket is opened by posting, after the verdict, and links itself).
    tms_pattern: Annotated[str, AfterValidator(_link_pattern)] | None = None


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc})") from None
    return value


Regex = Annotated[str, AfterValidator(_regex)]


def _log_file_template(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("not an absolute path")
    if "{service}" not in value:
        raise ValueError("the path must name the service as {service} (each service has "
                         "its own file), e.g. /var/log/unibazzar/{service}.log")
    return value


class AuthLogs(_Section):
    """How auth-service's log lines say what happened (regular expressions)."""

    window_minutes: PositiveFloat = 15.0
    success: Regex = r"login ok"
    failure: Regex = r"login failed: bad credentials"
    source: Regex = r"source=(\S+)"  # group 1: who tried
    # A login the rate limiter refused: a failed attempt that never reached the password
    # check. "429" only after "status"/"HTTP": bare, it matches a timestamp's milliseconds.
    # No (?:...): the printed command greps with it (grep -E).
    blocked: Regex = r"login blocked|rate limited|(status|HTTP)[ =:]*429\b"
    email: Regex = r"email=(\S+)"  # group 1: whose login succeeded (canary.known_sources)
    failed_min: PositiveInt = 20  # below this many failures nothing is judged
    failed_share: Annotated[float, Field(gt=0, le=1)] = 0.5  # failures / login attempts
    one_source_share: Annotated[float, Field(gt=0, le=1)] = 0.8  # brute force


class ErrorLogs(_Section):
    """What an error line is in the services' pod logs (the platform step "Analyze error
    patterns and rates"; its thresholds are in [thresholds])."""

    # Log levels as the usual formats write them: plain text, logfmt, JSON.
    # No (?:...): the printed command greps with it (grep -E).
    pattern: Regex = ("\\b(ERROR|CRITICAL|FATAL)\\b|level[\"']?\\s*[=:]\\s*[\"']?"
                      "(error|critical|fatal)\\b")
    signatures: Annotated[int, Field(ge=1, le=50)] = 5  # the top error signatures shown
    # The runbook's "/var/log/unibazzar/{service}.log", where this host can read it (a log
    # host, a CronJob's hostPath or shared volume): each service's file, {service} filled
    # in, judged beside its pod logs (or alone, without [kubernetes]). Only its last
    # file_max_bytes are read: a file written faster than that over the two windows is
    # judged over what fits.
    files: Annotated[str, AfterValidator(_log_file_template)] | None = None
    file_max_bytes: Annotated[int, Field(ge=4096, le=256 * 2**20)] = 8 * 2**20

    def file_for(self, service: str) -> str | None:
        return self.files.replace("{service}", service) if self.files else None


# ---- impact: the share of each service's requests that fail (scope-and-impact) -------------
def _query_template(value: str) -> str:
    # Without them every service would read the same number, over a window the message
    # would not state truly.
    missing = [token for token in ("{service}", "{window}") if token not in value]
    if missing:
        raise ValueError(f"the query must name {' and '.join(missing)} (filled with the "
                         "service's label and the window, e.g. 5m)")
    return value


QueryTemplate = Annotated[str, AfterValidator(_query_template)]


class ImpactService(_Section):
    """Where one service's requests are counted."""

    # CloudWatch: the metrics' dimensions (an ALB target group: LoadBalancer and
    # TargetGroup). A service without them is not measured: its share stays unknown.
    dimensions: dict[str, str] = {}
    # Prometheus: what {service} stands for in the queries (default: the service's name).
    label: str | None = None


class CloudWatchImpact(_Section):
    # An ALB's by default; a namespace of the services' own works alike (two counters).
    namespace: str = "AWS/ApplicationELB"
    requests_metric: str = "RequestCount"
    errors_metric: str = "HTTPCode_Target_5XX_Count"


class PrometheusImpact(_Section):
    url: HttpUrl  # the server's base URL; /api/v1/query is added
    token_env: EnvVar | None = None  # sent as a bearer token
    # PromQL, {service} and {window} (a Prometheus duration: 5m) filled in; each must give
    # one number (several series are added up).
    requests_query: QueryTemplate = ('sum(increase(http_requests_total{service="{service}"}'
                                     '[{window}]))')
    errors_query: QueryTemplate = ('sum(increase(http_requests_total{service="{service}",'
                                   'code=~"5.."}[{window}]))')


class Impact(_Section):
    """The share of each service's requests that failed over the window, from the metrics
    the platform already keeps: what rates scope-and-impact by the runbook's >50 % of users
    (severity.impact_of_share). Absent: severity is judged from one canary."""

    source: Literal["cloudwatch", "prometheus"]
    # Whole minutes at least: load balancers count by the minute.
    window_minutes: Annotated[float, Field(ge=1)] = 5.0
    # Below this share a service's 5xx are noise (retries, a rolling deploy): no finding.
    min_share: Annotated[float, Field(gt=0, le=0.5)] = 0.02
    deadline: PositiveFloat | None = None  # seconds per metrics read; unset: [deadlines] default
    cloudwatch: CloudWatchImpact = CloudWatchImpact()  # source "cloudwatch": [aws]'s region
    prometheus: PrometheusImpact | None = None  # required for source "prometheus"
    services: dict[ServiceName, ImpactService] = {}

    @model_validator(mode="after")
    def _source_described(self) -> Impact:
        if self.source == "prometheus" and self.prometheus is None:
            raise ValueError("source 'prometheus' needs [impact.prometheus] with its url")
        if self.source == "cloudwatch":
            bare = [name for name, s in self.services.items() if not s.dimensions]
            if bare:
                raise ValueError(f"source 'cloudwatch' needs the dimensions of "
                                 f"{', '.join(bare)} (e.g. LoadBalancer and TargetGroup)")
        return self

    def service(self, name: str) -> ImpactService | None:
        return self.services.get(name)  # type: ignore[call-overload, no-any-return]


# ---- incident lifecycle and posting (issue #8; docs/notifications.md) ---------------------
class SlackNotify(_Section):
    """One of two modes: an incoming webhook (each message in the channel), or a bot token
    and a channel (one thread per incident, its root edited as it goes)."""

    # The whole incoming-webhook URL is the secret (its path is the token).
    webhook_url_env: EnvVar | None = None
    token_env: EnvVar | None = None  # a bot token (xoxb-…) with chat:write, channels:history
    channel: str | None = None  # the channel's ID (C…), the bot invited to it
    api_url: HttpUrl = "https://slack.com/api/"

    @model_validator(mode="after")
    def _one_mode(self) -> SlackNotify:
        if (self.webhook_url_env is None) == (self.token_env is None):
            raise ValueError("set webhook_url_env (an incoming webhook) or token_env and "
                             "channel (a bot's thread per incident), not both or neither")
        if self.token_env is not None and not self.channel:
            raise ValueError("channel is required with token_env (the channel's ID, C…)")
        return self


class PagerDutyNotify(_Section):
    routing_key_env: EnvVar
    api_url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"


class WebhookNotify(_Section):
    url: HttpUrl  # carries no secret (refused with one); sign with secret_env instead
    secret_env: EnvVar | None = None  # HMAC-SHA256 of each body, X-UniBazzar-Signature
    # The largest document sent: a receiver behind a proxy refuses bigger bodies (413).
    max_bytes: Annotated[int, Field(ge=16 * 1024)] = 256 * 1024


def _repository(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", value):
        raise ValueError("expected a GitHub repository as owner/name")
    return value


class TicketNotify(_Section):
    kind: Literal["github"] = "github"
    api_url: HttpUrl = "https://api.github.com"
    repository: Annotated[str, AfterValidator(_repository)]
    token_env: EnvVar
    labels: list[str] = ["incident"]


class Notify(_Section):
    """Where incidents are posted. Absent: nothing is posted and no incident state kept."""

    deadline: PositiveFloat = 5.0  # seconds, per request
    retries: Annotated[int, Field(ge=0, le=5)] = 2  # more tries of a request never delivered
    # Seconds all posting of a run may take, retries included: past it, what is left waits
    # for the next run. The verdict and the exit status never wait on it beyond this.
    budget: PositiveFloat = 20.0
    slack: SlackNotify | None = None
    pagerduty: PagerDutyNotify | None = None
    webhook: WebhookNotify | None = None
    ticket: TicketNotify | None = None


class IncidentState(_Section):
    """Where incidents are remembered between runs: a SQLite file (one machine) or Redis
    (runners on several machines or pods)."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    path: str = "state/incidents.sqlite3"  # sqlite: relative to the reports directory
    url: Annotated[str, _url("redis", "rediss")] | None = None  # redis (required for it)
    password_env: EnvVar | None = None
    key_prefix: str = "unibazzar-health"
    deadline: PositiveFloat = 2.0  # seconds, per store operation
    lock_wait: PositiveFloat = 10.0  # seconds a run waits for another to finish deciding
    keep_runs: PositiveInt = 500  # run summaries kept, at most…
    keep_days: PositiveFloat = 30.0  # …and none older (except those an open incident needs)


class UpdateEvery(_Section):
    """Minutes between Status Updates for SEV3/SEV4 (SEV1/2: the runbook's 30); unset: the
    severity's response time."""

    SEV3: PositiveFloat | None = None
    SEV4: PositiveFloat | None = None


class Alerting(_Section):
    """Unset counts take the run mode's default (oncall 1/1, scheduled 2/2, ci 1/1)."""

    alert_after: PositiveInt | None = None  # consecutive failing runs before the alert
    resolve_after: PositiveInt | None = None  # consecutive passing runs before the resolution
    update_every_minutes: UpdateEvery = UpdateEvery()


class Silence(_Section):
    service: ServiceName | None = None
    check: str | None = None  # a catalog id
    until: AwareDatetime
    reason: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _one_target(self) -> Silence:
        if (self.service is None) == (self.check is None):
            raise ValueError("a silence names exactly one of 'service' or 'check'")
        return self


class Maintenance(_Section):
    start: AwareDatetime
    end: AwareDatetime
    reason: Annotated[str, Field(min_length=1)]
    services: list[ServiceName] = []  # empty: every service

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("must be after 'start'")
        return end


class EnvironmentFile(_Section):
    environment: EnvironmentInfo
    deadlines: Deadlines = Deadlines()
    thresholds: Thresholds = Thresholds()
    services: dict[ServiceName, ServiceTarget] = {}
    postgresql: dict[str, PostgresTarget] = {}
    redis: dict[str, RedisTarget] = {}
    rabbitmq: RabbitMQTarget | None = None
    aws: AwsTarget | None = None
    # None: the Kubernetes checks are skipped; a default here would run them against
    # whatever ~/.kube/config happens to hold, or break them where there is none.
    kubernetes: KubernetesTarget | None = None
    vector_db: VectorDbTarget | None = None
    payments: PaymentsTarget | None = None
    canary: CanaryUser | None = None
    auth_logs: AuthLogs = AuthLogs()
    error_logs: ErrorLogs = ErrorLogs()
    # None: no metrics source, the share of failing requests is unknown.
    impact: Impact | None = None
    oncall: OnCall = OnCall()
    contacts: Contacts = Contacts()
    escalation: Escalation = Escalation()
    calendar: Calendar = Calendar()
    report: ReportLinks = ReportLinks()
    notify: Notify | None = None
    incident_state: IncidentState | None = None
    alerting: Alerting = Alerting()
    silences: list[Silence] = []
    maintenance: list[Maintenance] = []

    def service(self, name: str) -> ServiceTarget | None:
        return self.services.get(name)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Environment:
    """A validated environment file with its secrets resolved."""

    path: Path
    spec: EnvironmentFile
    secrets: Mapping[str, str] = field(repr=False)
    # The kubeconfig context the run uses (kubernetes.context, else the kubeconfig's
    # current-context when the file was loaded): what printed kubectl commands name.
    kube_context: str | None = None

    @property
    def name(self) -> str:
        return self.spec.environment.name

    def secret(self, env_var: str | None) -> str | None:
        return None if env_var is None else self.secrets[env_var]

    def deadline(self, backend: str) -> float:
        value: float | None = getattr(self.spec.deadlines, backend)
        return value if value is not None else self.spec.deadlines.default

    def redactor(self) -> Redactor:
        return Redactor(self.secrets.values())

    def to_wire(self) -> dict[str, Any]:
        """Plain data, to hand the resolved settings to xdist workers."""
        return {"path": str(self.path), "spec": self.spec.model_dump(mode="json"),
                "secrets": dict(self.secrets), "kube_context": self.kube_context}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Environment:
        return cls(Path(data["path"]), EnvironmentFile.model_validate(data["spec"]),
                   dict(data["secrets"]), data.get("kube_context"))


def choose_environment_file(
    root: Path, env_name: str | None, env_file: str | None, environ: Mapping[str, str]
) -> Path:
    """Command line beats environment variables, which beat the sandbox default."""
    if env_file:
        return Path(env_file)
    if env_name:
        return root / "environments" / f"{env_name}.toml"
    if environ.get(ENV_VAR_SELECT_FILE):
        return Path(environ[ENV_VAR_SELECT_FILE])
    return root / "environments" / f"{environ.get(ENV_VAR_SELECT_NAME) or DEFAULT_ENVIRONMENT}.toml"


def read_environment_file(path: Path) -> tuple[EnvironmentFile, dict[str, Any]]:
    """The file validated (its secrets not resolved) and its raw TOML: one EnvironmentFileError
    naming file, key and value when it is bad."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnvironmentFileError(path, "", NO_VALUE, "no such environment file") from None
    except tomllib.TOMLDecodeError as exc:
        raise EnvironmentFileError(path, "", NO_VALUE, f"not valid TOML ({exc})") from None
    try:
        return EnvironmentFile.model_validate(raw), raw
    except ValidationError as exc:
        raise first_error(path, exc) from None


def load_environment(path: Path, environ: Mapping[str, str] | None = None) -> Environment:
    environ = os.environ if environ is None else environ
    spec, raw = read_environment_file(path)
    kube_context = _check_consistency(path, spec, environ)
    secrets = resolve_secrets(path, spec, raw, environ)
    # What only the incident layer can judge (notifiers' settings, silenced checks) it
    # checks itself: incidents.config.load_environment, which every entry point calls.
    return Environment(path, spec, secrets, kube_context)


def first_error(path: Path, exc: ValidationError) -> EnvironmentFileError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return EnvironmentFileError(path, key, error["input"], "unknown key")
    if error["type"] == "missing":
        return EnvironmentFileError(path, key, NO_VALUE, "required key is missing")
    reason = error["msg"].removeprefix("Value error, ")
    return EnvironmentFileError(path, key, error["input"], reason)


def _check_consistency(path: Path, spec: EnvironmentFile,
                       environ: Mapping[str, str]) -> str | None:
    """Raises on a file that cannot be used; returns the kubeconfig context it resolved."""
    if spec.impact is not None and spec.impact.source == "cloudwatch" and spec.aws is None:
        raise EnvironmentFileError(path, "impact.source", "cloudwatch",
                                   "needs an [aws] section (its region and credentials)")
    if spec.kubernetes is not None:
        return _check_kubernetes(path, spec.kubernetes, environ)
    return None


def _check_kubernetes(path: Path, kube: KubernetesTarget,
                      environ: Mapping[str, str]) -> str | None:
    """A [kubernetes] that cannot be used is the file's error, named once before any probe,
    not a ConfigException in each of the Kubernetes checks."""
    if kube.mode == "url":
        if kube.api_url is None:
            raise EnvironmentFileError(path, "kubernetes.api_url", NO_VALUE,
                                       "required when kubernetes.mode is 'url'")
    elif kube.mode == "in-cluster":
        # What kubernetes.config.load_incluster_config needs.
        unset = [name for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
                 if not environ.get(name)]
        if unset:
            raise EnvironmentFileError(
                path, "kubernetes.mode", kube.mode,
                f"not inside a Kubernetes pod: {' and '.join(unset)} "
                f"{'is' if len(unset) == 1 else 'are'} not set")
        if not os.access(SERVICE_ACCOUNT_TOKEN, os.R_OK):
            raise EnvironmentFileError(
                path, "kubernetes.mode", kube.mode,
                f"the service-account token ({SERVICE_ACCOUNT_TOKEN}) is not readable: "
                "is a service account mounted in this pod?")
    else:
        return _check_kubeconfig(path, kube, environ)
    return None


def _kubeconfig_paths(environ: Mapping[str, str]) -> tuple[str, list[Path]]:
    """Where the Kubernetes client looks, as it does: KUBECONFIG (a list), else ~/.kube/config."""
    home = environ.get("HOME")

    def expanded(entry: str) -> Path:
        if home and (entry == "~" or entry.startswith("~/")):
            return Path(home) / entry[2:]
        return Path(entry).expanduser()

    if environ.get("KUBECONFIG"):
        listed = [entry for entry in environ["KUBECONFIG"].split(os.pathsep) if entry]
        return f"KUBECONFIG={environ['KUBECONFIG']}", [expanded(entry) for entry in listed]
    default = expanded("~/.kube/config")
    return str(default), [default]


def _check_kubeconfig(path: Path, kube: KubernetesTarget,
                      environ: Mapping[str, str]) -> str | None:
    where, candidates = _kubeconfig_paths(environ)
    # Like the client: files of the list that do not exist are passed over.
    files = [candidate for candidate in candidates if candidate.is_file()]
    if not files:
        lacking = ("names no file that exists" if where.startswith("KUBECONFIG=")
                   else "does not exist and KUBECONFIG is not set")
        raise EnvironmentFileError(
            path, "kubernetes.mode", kube.mode,
            f"no kubeconfig file: {where} {lacking} (without one: mode 'in-cluster' or "
            "'url', or no [kubernetes] section to skip its checks)")
    contexts: dict[str, None] = {}  # ordered, without repeats
    current: str | None = None
    for file in files:
        config = _read_kubeconfig(path, kube, file)
        contexts |= {str(c["name"]): None for c in config.get("contexts") or []
                     if isinstance(c, dict) and "name" in c}
        # The client lets a later file's current-context win; so do we.
        current = str(config["current-context"]) if config.get("current-context") else current
    shown = ", ".join(str(file) for file in files)
    if kube.context is None:
        if current is None:
            raise EnvironmentFileError(
                path, "kubernetes.context", NO_VALUE,
                f"required: the kubeconfig ({shown}) sets no current-context")
    elif kube.context not in contexts:
        raise EnvironmentFileError(
            path, "kubernetes.context", kube.context,
            f"the kubeconfig ({shown}) defines no such context "
            f"(it has: {', '.join(contexts) or 'none'})")
    return kube.context or current


def _read_kubeconfig(path: Path, kube: KubernetesTarget, file: Path) -> dict[str, Any]:
    # Imported here: only a kubeconfig-mode run pays for it (PyYAML comes with kubernetes,
    # without type hints: the project does not add types-PyYAML for one call).
    import yaml  # type: ignore[import-untyped]

    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EnvironmentFileError(path, "kubernetes.mode", kube.mode,
                                   f"cannot read the kubeconfig {file} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        # Only the position: YAML's own message quotes the line, and a kubeconfig holds tokens.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise EnvironmentFileError(path, "kubernetes.mode", kube.mode,
                                   f"the kubeconfig {file} is not valid YAML{at}") from None
    if not isinstance(config, dict):
        raise EnvironmentFileError(path, "kubernetes.mode", kube.mode,
                                   f"the kubeconfig {file} is not a kubeconfig (no mapping)")
    return config


def _secret_keys(raw: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, variable name) for every ``*_env`` key in the file."""
    found: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            dotted = f"{prefix}{key}"
            if key.endswith("_env") and isinstance(value, str):
                found.append((dotted, value))
            else:
                found.extend(_secret_keys(value, dotted + "."))
    return found


def resolve_secrets(
    path: Path, spec: EnvironmentFile, raw: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, str]:
    fallback: dict[str, str] = {}
    if spec.environment.secrets_file:
        secrets_path = (path.parent / spec.environment.secrets_file).resolve()
        fallback = _read_dotenv(path, secrets_path)
    resolved: dict[str, str] = {}
    for key, var in _secret_keys(raw):
        value = environ.get(var) or fallback.get(var)
        if not value:
            source = f" (nor in {spec.environment.secrets_file})" if fallback else ""
            raise EnvironmentFileError(
                path, key, var, f"environment variable {var} is not set{source}")
        resolved[var] = value
    return resolved


def _read_dotenv(env_path: Path, path: Path) -> dict[str, str]:
    """A dotenv file as python-dotenv reads it (quotes, escapes, inline comments,
    ``export``), never interpolated: a secret holding ``$`` stays as written."""
    from dotenv import dotenv_values

    if not path.is_file():
        raise EnvironmentFileError(
            env_path, "environment.secrets_file", str(path),
            "no such file (for the sandbox: run scripts/sandbox up)")
    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    return {name: value for name, value in values.items() if value is not None}
