"""Plain logic of results.py: outcomes, which dependencies a failure is pinned on, and which
fixes and next commands it shows (the check's own, or those for its kind of failure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.config.environment import Environment, load_environment
from unibazzar_health.config.platform import Thresholds
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.judges.runbook import Finding
from unibazzar_health.probes import FailureKind, ProbeError, ProbeFailure
from unibazzar_health.probes.dynamodb import TableStatus
from unibazzar_health.verdict.catalog import CatalogError, load_catalog, parse_catalog
from unibazzar_health.verdict.results import (
    CheckResult,
    Outcome,
    attribute,
    build_result,
    classify,
    commands_for,
    failed_host,
)

TEMPLATES = (
    "aws dynamodb describe-table --table-name {listings_table} --region {aws_region}",
    "curl -s {rabbitmq_management_url}/api/overview",
    "REDISCLI_AUTH=\"${{{redis_password_var}}}\" redis-cli{redis_tls} -u {redis_url} ping",
)

CATALOG = load_catalog()

ENV = """
[environment]
name = "results"

[redis.ai-cache]
url = "redis://cache.internal:6379/1"
password_env = "CACHE_PASSWORD"

[postgresql.orders]
dsn = "postgresql://health@db.internal:5432/orders"
password_env = "DB_PASSWORD"

[aws]
region = "eu-west-1"
listings_table = "unibazzar-listings"
images_bucket = "unibazzar-listing-images"

[kubernetes]
namespace = "unibazzar"
mode = "url"
api_url = "https://k8s.internal:6443"

[payments]
api_url = "https://api.stripe.com"
api_key_env = "STRIPE_API_KEY"
webhook_url = "https://orders.unibazzar.example/webhooks/stripe"
webhook_secret_env = "STRIPE_WEBHOOK_SECRET"
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    path: Path = tmp_path_factory.mktemp("env") / "results.toml"
    path.write_text(ENV)
    secrets = ("CACHE_PASSWORD", "DB_PASSWORD", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET")
    return load_environment(path, environ=dict.fromkeys(secrets, "s3cr3t"))


def failure(backend: str, kind: FailureKind, target: str = "somewhere",
            problem: str = "it failed") -> ProbeFailure:
    return ProbeFailure(backend, target, kind, problem, 2.0)


def result_of(check_id: str, exc: BaseException, env: Environment) -> CheckResult:
    return build_result(entry=CATALOG.check(check_id), nodeid=check_id, catalog=CATALOG,
                        env=env, redactor=Redactor(), exc=exc, skipped=False, skip_reason="",
                        observed=None, duration_s=0.1)


# ---- which commands a failure pinned on dependencies shows --------------------------------
def test_a_failure_pinned_on_dependencies_gets_only_their_commands() -> None:
    assert commands_for(["redis"], TEMPLATES) == (TEMPLATES[2],)
    assert commands_for(["dynamodb", "rabbitmq"], TEMPLATES) == (TEMPLATES[0], TEMPLATES[1])


def test_other_failures_keep_every_command() -> None:
    assert commands_for([], TEMPLATES) == TEMPLATES
    # A dependency with no command of its own: better every command than none.
    assert commands_for(["payments"], TEMPLATES) == TEMPLATES


# ---- outcomes ------------------------------------------------------------------------------
def test_a_database_without_the_expected_schema_is_broken_not_failed() -> None:
    """Our environment (a wrong database, a migration not applied), not the platform."""
    schema = ProbeError("postgresql", "db:5432/orders", 'relation "sagas" does not exist', 2.0,
                        kind=FailureKind.MISSING_SCHEMA)
    assert classify(schema, skipped=False) is Outcome.BROKEN
    only_schema = Finding("cannot reconcile", failures=(ProbeFailure.of(schema),))
    assert classify(only_schema, skipped=False) is Outcome.BROKEN
    # Anything else among its failures: the platform did fail.
    mixed = Finding("x", failures=(ProbeFailure.of(schema),
                                   failure("payments", FailureKind.REFUSED)))
    assert classify(mixed, skipped=False) is Outcome.FAILED
    refused = ProbeError("postgresql", "db:5432/orders", "connection refused", 2.0,
                         kind=FailureKind.REFUSED)
    assert classify(refused, skipped=False) is Outcome.FAILED
    assert classify(Finding("x"), skipped=False) is Outcome.FAILED


def test_a_schema_mismatch_says_so_plainly_with_its_failure(env: Environment) -> None:
    schema = ProbeError("postgresql", "db.internal:5432/orders",
                        'relation "sagas" does not exist', 2.0, kind=FailureKind.MISSING_SCHEMA)
    result = result_of("order.saga-orchestration", schema, env)
    assert result.outcome is Outcome.BROKEN
    assert result.message == (
        'postgresql at db.internal:5432/orders: relation "sagas" does not exist (deadline 2 s)'
        " — the database does not have the schema these checks expect (wrong database in the "
        "environment file, or a migration not applied): the check could not judge the platform")
    assert result.failures == [{"backend": "postgresql", "target": "db.internal:5432/orders",
                                "kind": "missing_schema",
                                "problem": 'relation "sagas" does not exist', "deadline": 2.0}]
    assert (result.severity, result.fixes, result.commands) == (None, [], [])


# ---- attribution by the failures' backends ------------------------------------------------
def test_a_failure_is_pinned_on_its_failures_backends_not_on_their_words() -> None:
    entry = CATALOG.check("listing.rabbitmq-event-publishing")
    management = failure("rabbitmq-management", FailureKind.UNEXPECTED_ANSWER,
                         problem="the redis and s3 words do not matter")
    assert attribute(Finding("x", failures=(management,)), entry) == ["rabbitmq"]
    assert attribute(ProbeError("rabbitmq", "h:5672", "connection refused", 2.0,
                                kind=FailureKind.REFUSED), entry) == ["rabbitmq"]
    # A backend the check does not depend on, or no failure at all: pinned on nothing.
    assert attribute(Finding("x", failures=(failure("redis", FailureKind.REFUSED),)),
                     entry) == []
    assert attribute(AssertionError("events queue backed up"), entry) == []
    related = CATALOG.check("listing.related-systems")
    both = Finding("x", failures=(failure("s3", FailureKind.REFUSED),
                                  failure("redis", FailureKind.TIMEOUT),
                                  failure("s3", FailureKind.TIMEOUT)))
    assert attribute(both, related) == ["s3", "redis"]


# ---- fixes and commands by kind -----------------------------------------------------------
def test_a_deleted_table_gets_restore_not_capacity(env: Environment) -> None:
    gone = failure("dynamodb", FailureKind.MISSING_OBJECT, "table unibazzar-listings",
                   "the table does not exist")
    result = result_of("listing.dynamodb-table-status",
                       Finding("DynamoDB table unibazzar-listings does not exist",
                               impact="data", failures=(gone,)), env)
    assert result.fixes == [CATALOG.fix_for("dynamodb", "missing_object").fixes[0]]
    assert "Scale DynamoDB read/write capacity" not in result.fixes
    assert result.fixes[0].startswith("Restore the DynamoDB table")
    assert result.commands == [
        "aws dynamodb describe-table --table-name unibazzar-listings --region eu-west-1",
        "aws dynamodb list-backups --table-name unibazzar-listings --region eu-west-1"]
    assert result.failed_dependencies == ["dynamodb"]


def listing_checks() -> Any:
    """checks/listing_service's module, loaded under a name of its own (not collected)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "checks" / "listing_service" / \
        "test_listing_service.py"
    spec = importlib.util.spec_from_file_location("checks_listing_service_judged", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ACTIVE_TABLE = TableStatus(table="unibazzar-listings", exists=True, status="ACTIVE",
                           index_statuses={"by-category": "ACTIVE"},
                           billing_mode="PAY_PER_REQUEST", read_capacity=0, write_capacity=0,
                           item_count=1, elapsed_ms=3.0)
METRICS = "CloudWatch AWS/DynamoDB metrics of table unibazzar-listings (eu-west-1)"


def test_capacity_that_cannot_be_read_is_never_a_pass(env: Environment) -> None:
    """CloudWatch failing hid throttling behind a pass. Our AWS identity refused the
    metrics: the check is broken (the checks' own configuration, the verdict incomplete),
    with the fix for that refusal; CloudWatch itself failing: non-critical (SEV3), pinned on
    cloudwatch, with the fix for its kind of failure."""
    judge = listing_checks().test_step1_dynamodb_table_status_and_capacity
    denied = failure("cloudwatch", FailureKind.AUTH_REJECTED, METRICS,
                     "AccessDenied: not authorized to perform: cloudwatch:GetMetricData")
    with pytest.raises(Finding) as caught:
        judge({"table": ACTIVE_TABLE, "capacity": denied}, Thresholds())
    assert caught.value.failures == (denied,)
    assert str(caught.value) == (
        "DynamoDB table unibazzar-listings is ACTIVE, but its capacity could not be judged: "
        f"cloudwatch at {METRICS}: AccessDenied: not authorized to perform: "
        "cloudwatch:GetMetricData (deadline 2 s)")
    result = result_of("listing.dynamodb-table-status", caught.value, env)
    assert (result.outcome, result.severity, result.failed_dependencies) == (
        Outcome.BROKEN, None, [])
    assert result.fixes == list(CATALOG.fix_for("cloudwatch", "auth_rejected").fixes)
    assert "Scale DynamoDB read/write capacity" not in result.fixes
    assert result.commands[0] == "aws sts get-caller-identity"
    assert ("aws cloudwatch get-metric-statistics --region eu-west-1 --namespace AWS/DynamoDB "
            "--metric-name ReadThrottleEvents --dimensions "
            "Name=TableName,Value=unibazzar-listings --statistics Sum --period 60 "
            "--start-time $(( $(date +%s) - 900 )) --end-time $(date +%s)") in result.commands
    # CloudWatch not answering: read the metrics by hand.
    slow = failure("cloudwatch", FailureKind.TIMEOUT, METRICS, "did not answer")
    with pytest.raises(Finding) as caught:
        judge({"table": ACTIVE_TABLE, "capacity": slow}, Thresholds())
    result = result_of("listing.dynamodb-table-status", caught.value, env)
    assert (result.impact, result.severity) == ("non-critical", "SEV3")
    assert result.failed_dependencies == ["cloudwatch"]
    assert result.fixes[0].startswith("Read the listings table's throttle events")
    assert "Scale DynamoDB read/write capacity" not in result.fixes
    assert result.commands[-1] == \
        "aws dynamodb describe-table --table-name unibazzar-listings --region eu-west-1"


def test_a_table_status_problem_still_fails_as_before_when_capacity_cannot_be_read() -> None:
    from dataclasses import replace

    judge = listing_checks().test_step1_dynamodb_table_status_and_capacity
    denied = failure("cloudwatch", FailureKind.AUTH_REJECTED, METRICS)
    # Not ACTIVE and not serving reads: an outage, judged before the capacity.
    not_served = failure("dynamodb", FailureKind.MISSING_OBJECT, "table unibazzar-listings",
                         "ResourceNotFoundException: Requested resource not found")
    with pytest.raises(Finding) as caught:
        judge({"table": replace(ACTIVE_TABLE, status="CREATING"), "capacity": denied,
               "reads_ms": not_served, "writes_ms": not_served}, Thresholds())
    assert (caught.value.impact, caught.value.mode) == ("outage", "table-unavailable")
    assert str(caught.value).startswith(
        "DynamoDB table unibazzar-listings is CREATING, not ACTIVE, and serves no reads or "
        "writes: ")
    with pytest.raises(Finding) as inactive:
        judge({"table": replace(ACTIVE_TABLE, index_statuses={"by-category": "CREATING"}),
               "capacity": denied}, Thresholds())
    assert inactive.value.impact == "degradation" and not inactive.value.failures


def test_a_deleted_bucket_gets_recreate_and_head_bucket(env: Environment) -> None:
    gone = failure("s3", FailureKind.MISSING_OBJECT, "bucket unibazzar-listing-images")
    result = result_of("listing.s3-image-uploads", Finding("gone", failures=(gone,)), env)
    assert result.fixes and result.fixes[0].startswith("Recreate the S3 bucket")
    assert "aws s3api head-bucket --bucket unibazzar-listing-images --region eu-west-1" \
        in result.commands


def test_a_stalled_redis_gets_paused_or_blocked_and_its_clients(env: Environment) -> None:
    stalled = ProbeError("redis", "cache.internal:6379/1", "did not answer within the deadline",
                         2.0, kind=FailureKind.TIMEOUT)
    result = result_of("ai.redis-cache-performance", stalled, env)
    assert result.fixes == [
        "Check Redis for a paused or blocked server (CLIENT PAUSE, a long-running command): "
        "unpause it or kill the blocking client"]
    prefix = 'REDISCLI_AUTH="${CACHE_PASSWORD}" redis-cli -u \'redis://cache.internal:6379/1\''
    assert result.commands == [f"{prefix} info clients", f"{prefix} client list",
                               f"{prefix} slowlog get 10"]
    # Refused is no stall: Redis is down, bring it back first.
    refused = ProbeError("redis", "cache.internal:6379/1", "connection refused", 2.0,
                         kind=FailureKind.REFUSED)
    down = result_of("ai.redis-cache-performance", refused, env)
    assert down.fixes == list(CATALOG.fix_for("redis", "refused").fixes)
    assert down.fixes[0].startswith("Bring Redis back")
    assert down.commands == [f"{prefix} ping"]


@pytest.mark.parametrize(("failed", "host"), [
    (ProbeFailure("redis", "cache.invalid:6379/1", FailureKind.UNREACHABLE,
                  "Name or service not known"), "cache.invalid"),
    (ProbeFailure("s3", "bucket b", FailureKind.UNREACHABLE,
                  "http://s3.invalid:4566/b unreachable: Failed to resolve 's3.invalid'"),
     "s3.invalid"),
    (ProbeFailure("kubernetes", "https://k8s.invalid:6443", FailureKind.UNREACHABLE,
                  "cannot connect"), "k8s.invalid"),
])
def test_an_unresolvable_host_gets_its_name_looked_up(
        failed: ProbeFailure, host: str, env: Environment) -> None:
    assert failed_host(failed) == host
    check = {"redis": "ai.related-systems", "s3": "listing.related-systems",
             "kubernetes": "ai.recent-deployments"}[failed.backend]
    result = result_of(check, Finding("x", failures=(failed,)), env)
    assert result.commands == [f"getent hosts {host}"]
    assert result.fixes[0].startswith("Check the backend's host name and the network path")


def test_a_rejected_webhook_signature_gets_sync_the_secret(env: Environment) -> None:
    refused = ProbeFailure("order-service", "https://orders.unibazzar.example/webhooks/stripe",
                           FailureKind.AUTH_REJECTED, "rejects a correctly signed event: HTTP 400")
    result = result_of("order.payment-provider-webhooks",
                       Finding("our webhook receiver rejects ...", failures=(refused,)), env)
    assert result.fixes == [
        "Sync the webhook signing secret between the payment provider and order-service"]
    assert "Reconcile payment provider state" not in result.fixes
    assert result.commands[0] == ("curl -s -u \"${STRIPE_API_KEY}:\" "
                                  "'https://api.stripe.com/v1/webhook_endpoints?limit=100'")


def test_a_canary_login_answered_with_a_5xx_is_auth_service_failing_not_its_secrets(
        env: Environment) -> None:
    """The JWT check's own fix is "Rotate JWT secrets if compromised": wrong for a 503."""
    failing = ProbeFailure("auth-service", "https://auth.internal/login",
                           FailureKind.UNEXPECTED_ANSWER,
                           "canary login answered HTTP 503 (database unavailable)")
    result = result_of("auth.jwt-secret-configuration",
                       Finding("auth-service is failing: canary login answered HTTP 503",
                               impact="degradation", failures=(failing,)), env)
    assert (result.impact, result.severity) == ("degradation", "SEV2")
    assert "Rotate JWT secrets if compromised" not in result.fixes
    assert result.fixes == list(CATALOG.fix_for("auth-service", "unexpected_answer").fixes)
    assert result.fixes[0].startswith("Restart auth-service")
    assert result.failed_dependencies == ["auth-service"]
    # Its logs and its rollouts, as kubectl names them for this environment's cluster.
    assert [c.split(" ", 3)[-1] for c in result.commands] == [
        "logs deployment/auth-service -n unibazzar --tail=100",
        "rollout status deployment/auth-service -n unibazzar",
        "rollout history deployment/auth-service -n unibazzar"], result.commands


def test_auth_service_failing_seen_from_order_service_names_auth_services_deployment(
        env: Environment) -> None:
    """order-service's downstream check finds the same failure: the commands are about
    auth-service's Deployment, not the check's own service's."""
    failing = ProbeFailure("auth-service", "https://auth.internal/health",
                           FailureKind.UNEXPECTED_ANSWER, "health endpoint answered HTTP 503")
    result = result_of("order.downstream-dependencies",
                       Finding("auth-service is down", failures=(failing,)), env)
    assert result.fixes[0].startswith("Restart auth-service")
    assert result.commands and all("deployment/auth-service " in c for c in result.commands)
    assert not any("order-service" in c for c in result.commands)


def test_failures_without_a_fix_for_their_kind_keep_the_checks_own(env: Environment) -> None:
    entry = CATALOG.check("listing.dynamodb-table-status")
    refused = ProbeError("dynamodb", "table t (eu-west-1)", "connection refused", 2.0,
                         kind=FailureKind.REFUSED)
    result = result_of(entry.id, refused, env)
    assert result.fixes == list(entry.fixes)
    assert result.commands == [
        "aws dynamodb describe-table --table-name unibazzar-listings --region eu-west-1"]
    # One of each: both fixes, each failure's commands.
    related = CATALOG.check("listing.related-systems")
    mixed = Finding("x", failures=(failure("redis", FailureKind.TIMEOUT),
                                   failure("s3", FailureKind.REFUSED)))
    result = result_of(related.id, mixed, env)
    assert result.fixes[0].startswith("Check Redis for a paused or blocked server")
    assert any("info clients" in c for c in result.commands)
    assert "aws s3api head-bucket --bucket unibazzar-listing-images --region eu-west-1" \
        in result.commands
    assert not any("dynamodb" in c for c in result.commands)


def test_the_failures_cross_workers_as_plain_data(env: Environment) -> None:
    gone = failure("dynamodb", FailureKind.MISSING_OBJECT, "table t", "gone")
    result = result_of("listing.dynamodb-table-status", Finding("gone", failures=(gone,)), env)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["failures"] == [{"backend": "dynamodb", "target": "table t",
                                 "kind": "missing_object", "problem": "gone", "deadline": 2.0}]
    assert CheckResult.from_dict(data) == result
    assert ProbeFailure.from_dict(data["failures"][0]) == gone


# ---- what stakeholders are told ------------------------------------------------------------
def test_a_failed_check_carries_its_impact_statement_for_stakeholders(env: Environment) -> None:
    refused = ProbeError("postgresql", "db.internal:5432/auth", "connection refused", 2.0,
                         kind=FailureKind.REFUSED)
    result = result_of("auth.postgresql-connectivity", refused, env)
    assert result.impact_statement == "Customers may be unable to log in or sign up."
    assert CheckResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    passed = build_result(entry=CATALOG.check("auth.postgresql-connectivity"), nodeid="n",
                          catalog=CATALOG, env=env, redactor=Redactor(), exc=None,
                          skipped=False, skip_reason="", observed=None, duration_s=0.1)
    assert passed.impact_statement is None


def test_every_check_has_one_plain_sentence_for_stakeholders() -> None:
    for entry in CATALOG.checks.values():
        statement = entry.impact_statement
        assert statement.endswith(".") and statement.count(". ") == 0, entry.id
        assert not any(word in statement.lower() for word in ("p95", "probe", "deadline")), \
            entry.id


def test_a_check_without_an_impact_statement_is_a_catalog_error() -> None:
    import tomllib
    from importlib import resources

    raw = tomllib.loads(resources.files("unibazzar_health.verdict").joinpath("catalog.toml")
                        .read_text("utf-8"))
    del raw["checks"]["order.saga-orchestration"]["impact_statement"]
    with pytest.raises(CatalogError, match=r"check order\.saga-orchestration: needs an "
                                           "impact_statement"):
        parse_catalog(raw)


# ---- fixes that fit the failure -------------------------------------------------------------
@pytest.mark.parametrize("kind", [FailureKind.UNREACHABLE, FailureKind.REFUSED,
                                  FailureKind.TIMEOUT])
@pytest.mark.parametrize("check_id", ["ai.vector-database-connectivity", "ai.related-systems"])
def test_a_vector_database_that_does_not_answer_gets_no_cache_clearing(
        kind: FailureKind, check_id: str, env: Environment) -> None:
    down = failure("vector-db", kind, "https://vectors.invalid/api/v2/heartbeat")
    result = result_of(check_id, Finding("x", failures=(down,)), env)
    assert "Clear vector database cache" not in result.fixes
    assert result.fixes == list(CATALOG.fix_for("vector-db", kind).fixes)  # type: ignore[union-attr]
    assert result.commands


# ---- the catalog's failure_fixes are checked like the rest ----------------------------------
@pytest.mark.parametrize(("key", "entry", "says"), [
    ("redis.slow", {"fixes": ["clear-redis-cache"], "commands": ["x"]},
     "unknown failure kind 'slow'"),
    ("memcached.timeout", {"fixes": ["clear-redis-cache"], "commands": ["x"]},
     "'memcached' is no check's dependency"),
    ("redis.timeout", {"fixes": ["no-such-fix"], "commands": ["x"]}, "unknown fixes"),
    ("redis.timeout", {"fixes": ["clear-redis-cache"], "commands": []}, "needs fixes and"),
])
def test_a_bad_failure_fix_entry_is_a_catalog_error(key: str, entry: dict[str, object],
                                                     says: str) -> None:
    import tomllib

    from unibazzar_health.verdict.catalog import resources

    raw = tomllib.loads(resources.files("unibazzar_health.verdict").joinpath("catalog.toml")
                        .read_text("utf-8"))
    raw["failure_fixes"] = {key: entry}
    with pytest.raises(CatalogError, match=says):
        parse_catalog(raw)


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
