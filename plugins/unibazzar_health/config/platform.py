"""The environment file's sections the checks read: the platform's targets (services,
backends, Kubernetes, AWS), deadlines and thresholds, the canary, logs and impact sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    PositiveFloat,
    PositiveInt,
    create_model,
    model_validator,
)

from unibazzar_health.config.fields import (
    EnvVar,
    HttpUrl,
    QueryTemplate,
    Regex,
    _log_file_template,
    _one_saga,
    _Section,
    _url,
)
from unibazzar_health.config.names import BACKENDS, ServiceName

# The platform's namespace (runbook): the default, and what commands name when the
# environment has no [kubernetes].
DEFAULT_NAMESPACE = "unibazzar"


class EnvironmentInfo(_Section):
    name: str
    description: str = ""
    # A dotenv file for local sandboxes only; real variables always win.
    secrets_file: str | None = None


class _CommonDeadlines(_Section):
    """Seconds. Every probe is bounded by its backend's deadline, else the default."""

    default: PositiveFloat = 3.0
    # Wall clock of one check's observation, several probes included: past it the
    # observation is abandoned even if a client ignored its timeout.
    check: PositiveFloat = 10.0
    http: PositiveFloat | None = None  # the services' own HTTP APIs


# ... and one optional key per backend with a deadline of its own, as names.BACKENDS
# declares them (postgresql, vector_db, ...).
if TYPE_CHECKING:
    Deadlines = _CommonDeadlines
else:
    Deadlines = create_model(
        "Deadlines", __base__=_CommonDeadlines, __module__=__name__,
        __doc__=_CommonDeadlines.__doc__,
        **{b.key: (PositiveFloat | None, None) for b in BACKENDS if b.own_deadline})


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

