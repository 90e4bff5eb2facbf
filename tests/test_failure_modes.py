"""Severities and fixes by failure mode, as the runbook reads (issue #15, item 3): each check's
test function judged over made-up observations, then turned into the verdict's severity,
fixes and commands as the plugin does (results.build_result).

- an unblocked brute force is SEV1, a rate limiter switched off SEV2;
- a DynamoDB table that is UPDATING but serves reads and writes is no outage, and is never
  told to scale again; one that serves neither is an outage with no capacity fix;
- a vector collection gone, empty or answering wrongly is reindexed, not a cache cleared;
- the Kubernetes API unreadable is one severity (and one fix) whichever check reads it;
- a SEV4's post-mortem is due like any other's, and the draft says the fixes were suggested;
- fixes by failure mode: forged tokens, services down without CPU/memory evidence, a broker
  or database that refuses or does not answer, forged webhooks, a rejected API key;
- the cache-clearing fixes and the saga retry come with their commands, and failed sagas
  are listed.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from unibazzar_health.config.environment import Environment, load_environment
from unibazzar_health.config.platform import Thresholds
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.judges.runbook import CheckContext, Finding
from unibazzar_health.probes import FailureKind, ProbeError, ProbeFailure
from unibazzar_health.probes.dynamodb import CapacityUse, TableStatus
from unibazzar_health.probes.kubernetes import ContainerHealth, PodsHealth
from unibazzar_health.probes.vectordb import CollectionHealth
from unibazzar_health.verdict.catalog import CatalogError, load_catalog, parse_catalog
from unibazzar_health.verdict.results import CheckResult, build_result

from conftest import check_module

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()
KUBECTL = "kubectl --server 'https://k8s.internal:6443'"

ENV = """
[environment]
name = "modes"

[services.auth-service]
url = "http://auth.internal:8080"

[services.order-service]
url = "http://order.internal:8080"
saga_retry_path = "/admin/sagas/{saga_id}/retry"

[services.ai-service]
url = "http://ai.internal:8080"

[postgresql.auth]
dsn = "postgresql://health@db.internal:5432/auth"
password_env = "DB_PASSWORD"

[postgresql.orders]
dsn = "postgresql://health@db.internal:5432/orders"
password_env = "DB_PASSWORD"

[redis.listing-cache]
url = "redis://cache.internal:6379/0"
password_env = "CACHE_PASSWORD"

[redis.ai-cache]
url = "redis://cache.internal:6379/1"
password_env = "CACHE_PASSWORD"

[rabbitmq]
url = "amqp://unibazzar@mq.internal:5672/"
password_env = "MQ_PASSWORD"
management_url = "http://mq.internal:15672"
events_exchange = "listing.events"
events_queue = "search-indexer"
consumer_deployment = "search-indexer"

[aws]
region = "eu-west-1"
listings_table = "unibazzar-listings"
images_bucket = "unibazzar-listing-images"

[vector_db]
url = "http://vectors.internal:8000"
collection = "listings"

[kubernetes]
namespace = "unibazzar"
mode = "url"
api_url = "https://k8s.internal:6443"

[payments]
api_url = "https://api.stripe.com"
api_key_env = "STRIPE_API_KEY"
webhook_url = "https://orders.unibazzar.example/webhooks/stripe"
webhook_secret_env = "STRIPE_WEBHOOK_SECRET"

[canary]
email = "canary@unibazzar.test"
password_env = "CANARY_PASSWORD"
listing_id = "canary-listing-0001"
"""
SECRETS = ("DB_PASSWORD", "CACHE_PASSWORD", "MQ_PASSWORD", "STRIPE_API_KEY",
           "STRIPE_WEBHOOK_SECRET", "CANARY_PASSWORD")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    path: Path = tmp_path_factory.mktemp("env") / "modes.toml"
    path.write_text(ENV)
    return load_environment(path, environ=dict.fromkeys(SECRETS, "s3cr3t"))




auth = check_module("auth_service/test_auth_service.py", "modes")
listing = check_module("listing_service/test_listing_service.py", "modes")
orders = check_module("order_service/test_order_service.py", "modes")
ai = check_module("ai_service/test_ai_service.py", "modes")
scope = check_module("platform/test_scope_and_impact.py", "modes")
deployments = check_module("platform/test_recent_deployments.py", "modes")
errors = check_module("platform/test_error_patterns.py", "modes")


def judged(test: Any, *args: Any) -> BaseException | None:
    """What a check's test function raised (its Finding or assertion), None if it passed."""
    try:
        test(*args)
    except AssertionError as exc:
        return exc
    return None


def verdict(check_id: str, exc: BaseException | None, env: Environment) -> CheckResult:
    assert exc is not None, f"{check_id} passed"
    return build_result(entry=CATALOG.check(check_id), nodeid=check_id, catalog=CATALOG,
                        env=env, redactor=Redactor(), exc=exc, skipped=False, skip_reason="",
                        observed=None, duration_s=0.1)


def failure(backend: str, kind: FailureKind, target: str = "somewhere") -> ProbeFailure:
    return ProbeFailure(backend, target, kind, f"it failed ({kind})", 2.0)


def mode_fixes(check_id: str, mode: str) -> list[str]:
    return list(CATALOG.check(check_id).mode(mode).fixes)


# ---- a rate limiter off is a weakness; an attack nothing stops is the higher one ---------------
def test_a_rate_limiter_off_is_sev2_and_a_brute_force_it_does_not_stop_is_sev1(
        env: Environment) -> None:
    off = verdict("auth.rate-limit-protection", judged(
        auth.test_step4_a_burst_from_one_source_is_rate_limited,
        {"not_judged": None, "limited_after": None, "sent": 30, "seconds": 1.2,
         "statuses": {"401": 30}}), env)
    assert (off.impact, off.severity) == ("security-weakness", "SEV2")
    assert off.fixes == list(CATALOG.check("auth.rate-limit-protection").fixes)
    from unibazzar_health.judges.authlogs import LoginActivity

    attack = LoginActivity(successes=0, failures=40, by_source={"10.6.6.6": 40})
    attacked = verdict("auth.authentication-logs", judged(
        auth.test_step3_authentication_logs, attack, env), env)
    assert (attacked.impact, attacked.severity) == ("security-attempt", "SEV1")
    assert attacked.fixes == mode_fixes("auth.authentication-logs", "brute-force")
    assert attacked.fixes[0].startswith("Block the attacking source")
    # The security team is called for both.
    from unibazzar_health.verdict.policy import external_teams

    for impact in (off.impact, attacked.impact):
        assert [team for team, _ in external_teams([impact], [])] == ["security_team"]


def test_the_canary_used_elsewhere_resets_its_password_and_rotates_the_jwt_secrets(
        env: Environment, tmp_path: Path) -> None:
    from unibazzar_health.judges.authlogs import LoginActivity

    path = tmp_path / "known.toml"
    path.write_text(ENV.replace('listing_id = "canary-listing-0001"\n',
                                'listing_id = "canary-listing-0001"\n'
                                'known_sources = ["10.0.0.5"]\n'))
    known = load_environment(path, environ=dict.fromkeys(SECRETS, "s3cr3t"))
    seen = LoginActivity(successes=2, canary_logins={"203.0.113.9": 2})
    result = verdict("auth.authentication-logs", judged(
        auth.test_step3_authentication_logs, seen, known), known)
    assert (result.impact, result.severity) == ("security", "SEV1")
    assert result.fixes == ["Change the canary account's password and find where it leaked "
                            "(the checks' secret store, CI logs): only the checks may know it",
                            "Rotate JWT secrets if compromised"]
    assert result.commands == [f"{KUBECTL} logs -l app=auth-service -n unibazzar --since=15m "
                               "--tail=-1 --prefix | grep -F -e canary@unibazzar.test"]


# ---- a DynamoDB table UPDATING is judged by its reads and writes ------------------------------
TABLE = TableStatus(table="unibazzar-listings", exists=True, status="ACTIVE",
                    index_statuses={"by-category": "ACTIVE"}, billing_mode="PROVISIONED",
                    read_capacity=10, write_capacity=5, item_count=40, elapsed_ms=3.0)
QUIET = CapacityUse(window_minutes=15, read_peak={"": 1.0}, write_peak={"": 0.5})
THROTTLED = CapacityUse(window_minutes=15, read_peak={"": 9.5}, write_peak={"": 0.5},
                        read_throttles={"": 240})


def table_check(table: TableStatus, capacity: Any, reads: Any = None,
                writes: Any = None) -> BaseException | None:
    observed = {"table": table, "capacity": capacity}
    if table.status != "ACTIVE":
        observed |= {"reads_ms": reads, "writes_ms": writes}
    return judged(listing.test_step1_dynamodb_table_status_and_capacity, observed, Thresholds())


def test_an_updating_table_that_serves_reads_and_writes_is_no_outage() -> None:
    updating = replace(TABLE, status="UPDATING")
    assert table_check(updating, QUIET, reads=3.1, writes=4.2) is None
    # Our identity may not write: the read decides.
    denied = failure("dynamodb", FailureKind.AUTH_REJECTED)
    assert table_check(updating, QUIET, reads=3.1, writes=denied) is None


def test_an_updating_table_short_of_capacity_waits_for_its_update_not_scales_again(
        env: Environment) -> None:
    result = verdict("listing.dynamodb-table-status",
                     table_check(replace(TABLE, status="UPDATING"), THROTTLED, 3.1, 4.2), env)
    assert (result.impact, result.severity) == ("degradation", "SEV2")
    assert "Scale DynamoDB read/write capacity" not in result.fixes
    assert result.fixes == mode_fixes("listing.dynamodb-table-status", "change-in-progress")
    assert not any("update-table" in c for c in result.commands), result.commands
    assert ("aws dynamodb wait table-exists --table-name unibazzar-listings --region eu-west-1"
            in result.commands)
    assert "(it is UPDATING: a change is in progress" in (result.message or "")
    # An index being built: the same wait, not capacity.
    building = verdict("listing.dynamodb-table-status", table_check(
        replace(TABLE, status="UPDATING", index_statuses={"by-category": "CREATING"}), QUIET,
        3.1, 4.2), env)
    assert building.fixes == result.fixes
    # ACTIVE and throttled: scaling is right, with its command.
    active = verdict("listing.dynamodb-table-status", table_check(TABLE, THROTTLED), env)
    assert active.fixes == ["Scale DynamoDB read/write capacity"]
    assert any("update-table" in c and "ReadCapacityUnits=20" in c for c in active.commands)


def test_a_table_that_serves_no_reads_or_writes_is_an_outage_no_capacity_fixes(
        env: Environment) -> None:
    not_found = failure("dynamodb", FailureKind.MISSING_OBJECT, "table unibazzar-listings")
    result = verdict("listing.dynamodb-table-status", table_check(
        replace(TABLE, status="DELETING"), QUIET, not_found, not_found), env)
    assert (result.impact, result.severity) == ("outage", "SEV1")
    # The table exists (DescribeTable): not "restore a deleted table", not "scale".
    assert "Scale DynamoDB read/write capacity" not in result.fixes
    assert result.fixes == mode_fixes("listing.dynamodb-table-status", "table-unavailable")
    assert result.failed_dependencies == ["dynamodb"]
    assert (result.message or "").startswith(
        "DynamoDB table unibazzar-listings is DELETING, not ACTIVE, and serves no reads or "
        "writes: ")


# ---- an empty or wrong vector collection is reindexed --------------------------------------
COLLECTION = CollectionHealth(collection="listings", exists=True, count=40,
                              canary_id="listing-0001", nearest_id="listing-0001",
                              query_ms=12.0)


@pytest.mark.parametrize("broken", [
    replace(COLLECTION, exists=False, count=0, nearest_id=None),
    replace(COLLECTION, count=0, nearest_id=None),
    replace(COLLECTION, nearest_id="listing-0042"),
], ids=["gone", "empty", "wrong-answer"])
def test_a_vector_collection_gone_empty_or_wrong_is_reindexed_not_a_cache_cleared(
        broken: CollectionHealth, env: Environment) -> None:
    result = verdict("ai.vector-database-connectivity", judged(
        ai.test_step1_vector_database_connectivity, broken, Thresholds()), env)
    assert result.severity == "SEV1"
    assert result.fixes[0].startswith("Reindex the vector collection from the listings table")
    assert result.fixes == mode_fixes("ai.vector-database-connectivity", "needs-reindex")
    assert result.commands == [
        "curl -s 'http://vectors.internal:8000/api/v2/tenants/default_tenant/databases/"
        "default_database/collections/listings'",
        "aws dynamodb describe-table --table-name unibazzar-listings --region eu-west-1 "
        "--query 'Table.ItemCount'",
        "REDISCLI_AUTH=\"${CACHE_PASSWORD}\" redis-cli -u 'redis://cache.internal:6379/1' "
        "--scan --pattern 'search:*' | REDISCLI_AUTH=\"${CACHE_PASSWORD}\" xargs -r redis-cli "
        "-u 'redis://cache.internal:6379/1' unlink"]


def test_a_search_that_finds_nothing_is_the_collections_and_slow_reads_the_metrics_first(
        env: Environment) -> None:
    seen = {"statuses": [200, 200], "result_ids": [[], []], "query": "q", "samples": 2,
            "expect_id": None, "p95_ms": 10.0}
    empty = verdict("ai.end-to-end-search", judged(
        ai.test_search_returns_results_within_budget, seen, Thresholds()), env)
    assert "Scale up instances if CPU/memory bound" not in empty.fixes
    assert empty.fixes[0].startswith("Reindex the vector collection")
    assert empty.fixes == mode_fixes("ai.end-to-end-search", "no-results")
    slow = verdict("ai.end-to-end-search", judged(
        ai.test_search_returns_results_within_budget,
        seen | {"result_ids": [["l-1"], ["l-1"]], "p95_ms": 5000.0}, Thresholds()), env)
    assert (slow.impact, slow.severity) == ("performance-major", "SEV2")
    assert "Scale up instances if CPU/memory bound" not in slow.fixes
    assert slow.fixes[0].startswith("Read the service's CPU and memory first")
    assert slow.commands[0] == f"{KUBECTL} top pods -l app=ai-service -n unibazzar"


# ---- the Kubernetes API unreadable: one severity, whichever check -----------------------------
KUBE_DOWN = ProbeError("kubernetes", "https://k8s.internal:6443", "did not answer within the "
                       "deadline", 2.0, kind=FailureKind.TIMEOUT)
POD = ContainerHealth(pod="ai-service-1", container="ai-service", ready=True, restarts=0,
                      waiting_reason=None, last_termination_reason=None,
                      last_terminated_minutes_ago=None, memory_limit_bytes=512 * 2**20,
                      memory_bytes=100 * 2**20, cpu_limit_millicores=500, cpu_millicores=50)
PODS = PodsHealth(deployment="ai-service", exists=True, metrics_available=True,
                  containers=(POD,), desired=2, ready=2)


def test_the_kubernetes_api_unreadable_is_one_severity_and_one_fix_in_every_check(
        env: Environment) -> None:
    from unibazzar_health.probes.http import HttpAnswer

    unread = ProbeFailure.of(KUBE_DOWN)
    healthy = HttpAnswer(status=200, elapsed_ms=1.0, body={"loaded": True})
    seen = {
        # Its service answers, only its pods cannot be read.
        "ai.scope-and-impact": judged(
            scope.test_service_answers_health_and_its_pods_are_up, "ai-service",
            {"health": healthy, "pods": unread}, Thresholds()),
        "ai.model-loading-and-memory": judged(
            ai.test_step2_model_loading_and_memory_usage,
            {"model": healthy, "pods": unread}, Thresholds()),
        "ai.error-patterns": judged(errors.test_error_rate_has_not_spiked, "ai-service",
                                    {"pods": unread}, Thresholds()),
        # Raised by their observe functions (the probe's own error).
        "ai.recent-deployments": KUBE_DOWN,
        "auth.authentication-logs": KUBE_DOWN,
    }
    results = {check_id: verdict(check_id, exc, env) for check_id, exc in seen.items()}
    assert {(r.impact, r.severity) for r in results.values()} == {("non-critical", "SEV3")}
    fixes = list(CATALOG.fix_for("kubernetes", "timeout").fixes)  # type: ignore[union-attr]
    for check_id, result in results.items():
        assert result.fixes == fixes, check_id
        assert result.commands == [f"{KUBECTL} get deployment/{result.service} "
                                   "-n unibazzar"], check_id
        assert result.failed_dependencies == ["kubernetes"]
    # Its health endpoint failing besides is the service's, not the cluster unreadable: one
    # request (a canary) with no pod seen, a degradation, not yet an outage (issue 15).
    down = verdict("ai.scope-and-impact", judged(
        scope.test_service_answers_health_and_its_pods_are_up, "ai-service",
        {"health": HttpAnswer(status=503, elapsed_ms=1.0, body={}), "pods": unread},
        Thresholds()), env)
    assert (down.impact, down.severity) == ("degradation", "SEV2")
    # Unreachable by name: the same severity, with the name looked up.
    unresolved = ProbeError("kubernetes", "https://k8s.invalid:6443", "cannot connect", 2.0,
                            kind=FailureKind.UNREACHABLE)
    named = verdict("ai.recent-deployments", unresolved, env)
    assert (named.severity, named.commands) == ("SEV3", ["getent hosts k8s.invalid"])


# ---- a SEV4's post-mortem is due; the draft says the fixes were suggested ----------------------
def test_a_sev4_incident_still_gets_its_post_mortem_due() -> None:
    from unibazzar_health.reports import messages
    from unibazzar_health.verdict.model import Summary
    from unibazzar_health.verdict.policy import post_mortem_due

    resolved_at = datetime(2026, 11, 27, 4, 23, tzinfo=UTC)
    for level in ("SEV1", "SEV2", "SEV3", "SEV4"):
        assert post_mortem_due(level, resolved_at) == resolved_at + timedelta(weeks=1)
    check = {"id": "listing.cache-freshness", "service": "listing-service",
             "outcome": "failed", "severity": "SEV4", "fixes": [], "message": "x"}

    def run(minutes: int, failing: bool) -> dict[str, Any]:
        return {"started_at": (resolved_at + timedelta(minutes=minutes)).isoformat(),
                "environment": "production",
                "verdict": {"severity": "SEV4" if failing else None,
                            "status": "failing" if failing else "healthy"},
                "checks": [check | ({} if failing else {"outcome": "passed"})]}

    message = messages.resolved(*(Summary.model_validate(run(minutes, failing))
                                  for minutes, failing in ((-60, True), (-30, True),
                                                           (0, False))))
    post_mortem = next(line for line in message.lines if line.startswith("Post-mortem:"))
    assert "not required" not in post_mortem
    assert post_mortem == "Post-mortem: due 2026-12-04 04:23 UTC (within 1 week, Post-Incident " \
        "Procedures)"


def test_the_post_mortem_draft_says_the_checks_suggested_the_fixes_not_applied_them() -> None:
    from unibazzar_health.incidents.timeline import _facts

    incident = SimpleNamespace(
        resolved_at=None, checks=["order.saga-orchestration"], all_checks=[], alerted_at=None,
        first_failure_at="2026-11-27T03:00:00+00:00", silenced=None, dependency=None,
        services=["order-service"],
        check_info={"order.saga-orchestration": {"fixes": ["Retry failed saga steps manually"]}})
    fact = _facts(None, incident, [])["Create action items for prevention"]  # type: ignore[arg-type]
    assert "applied:" not in fact
    assert fact == ("the runbook's fixes the checks suggested (not applied by them; note which "
                    "were done): Retry failed saga steps manually")


# ---- fixes that fit the failure mode ----------------------------------------------------------
def test_a_forged_token_accepted_is_a_verifier_to_fix_not_secrets_to_rotate(
        env: Environment) -> None:
    forged = auth.JwtObservation(login_status=200, token_issued=True,
                                 genuine_token_verify_status=200,
                                 forged_token_verify_status={"alg-none": 200, "wrong-key": 401})
    result = verdict("auth.jwt-secret-configuration",
                     judged(auth.test_step2_jwt_secret_configuration, forged), env)
    assert (result.impact, result.severity) == ("security", "SEV1")
    assert "Rotate JWT secrets if compromised" not in result.fixes
    assert result.fixes == mode_fixes("auth.jwt-secret-configuration", "forged-token-accepted")
    assert "redeploy" in result.fixes[0] and "revoke the tokens" in result.fixes[0]
    assert [c.split(" ", 3)[-1] for c in result.commands] == [
        "rollout history deployment/auth-service -n unibazzar",
        "logs deployment/auth-service -n unibazzar --tail=100",
        "rollout undo deployment/auth-service -n unibazzar"]
    # Its own token rejected: the keys are out of sync, no secret leaked either.
    rejected = verdict("auth.jwt-secret-configuration", judged(
        auth.test_step2_jwt_secret_configuration,
        replace(forged, genuine_token_verify_status=401, forged_token_verify_status={})), env)
    assert rejected.severity == "SEV1"
    assert rejected.fixes == mode_fixes("auth.jwt-secret-configuration", "token-rejected")


def crash_looping(**changes: Any) -> PodsHealth:
    pod = replace(POD, **{"ready": False, "restarts": 14, "waiting_reason": "CrashLoopBackOff",
                          "last_termination_reason": "Error", "last_terminated_minutes_ago": 1.0,
                          **changes})
    return replace(PODS, containers=(pod,), ready=1)


def test_a_service_down_or_crash_looping_without_cpu_or_memory_evidence_is_not_scaled(
        env: Environment) -> None:
    from unibazzar_health.probes.http import HttpAnswer

    healthy = HttpAnswer(status=200, elapsed_ms=1.0, body={})
    degraded = verdict("ai.scope-and-impact", judged(
        scope.test_service_answers_health_and_its_pods_are_up, "ai-service",
        {"health": healthy, "pods": crash_looping()}, Thresholds()), env)
    assert degraded.severity == "SEV2"
    assert "Scale up instances if CPU/memory bound" not in degraded.fixes
    assert degraded.fixes == ["Roll back the latest deployment if it preceded the failures",
                              "Restart the service if no recent deployment explains the "
                              "failure (its pods' logs, the previous container's too, name "
                              "the error)"]
    assert not any(" scale " in c for c in degraded.commands)
    # kubectl top first: read the CPU and memory before deciding.
    assert degraded.commands[0] == f"{KUBECTL} top pods -l app=ai-service -n unibazzar"
    down = verdict("ai.scope-and-impact", judged(
        scope.test_service_answers_health_and_its_pods_are_up, "ai-service",
        {"health": HttpAnswer(status=503, elapsed_ms=1.0, body={}),
         "pods": replace(PODS, ready=0)}, Thresholds()), env)
    assert down.severity == "SEV1" and "Scale up instances if CPU/memory bound" not in down.fixes
    # OOMKilled: the evidence scaling needs, with the replicas to scale to.
    oom = verdict("ai.scope-and-impact", judged(
        scope.test_service_answers_health_and_its_pods_are_up, "ai-service",
        {"health": healthy, "pods": crash_looping(last_termination_reason="OOMKilled")},
        Thresholds()), env)
    assert oom.fixes[0] == "Scale up instances if CPU/memory bound"
    assert f"{KUBECTL} scale deployment/ai-service --replicas=3 -n unibazzar" in oom.commands
    # ai-service's model step: no scaling without it either.
    model = verdict("ai.model-loading-and-memory", judged(
        ai.test_step2_model_loading_and_memory_usage,
        {"model": HttpAnswer(status=200, elapsed_ms=1.0, body={"loaded": False}),
         "pods": PODS}, Thresholds()), env)
    assert model.fixes == ["Restart service to reload models"]


@pytest.mark.parametrize("kind", [FailureKind.REFUSED, FailureKind.TIMEOUT])
@pytest.mark.parametrize("backend", ["rabbitmq", "rabbitmq-management"])
def test_a_broker_that_refuses_or_does_not_answer_is_brought_back_not_its_consumers_restarted(
        kind: FailureKind, backend: str, env: Environment) -> None:
    down = failure(backend, kind, "mq.internal:5672")
    for check_id in ("listing.rabbitmq-event-publishing", "listing.indexing-lag",
                     "listing.related-systems"):
        result = verdict(check_id, Finding.of([down]), env)
        assert "Restart RabbitMQ consumers if backed up" not in result.fixes, check_id
        assert result.fixes[0].startswith("Bring RabbitMQ back"), check_id
        assert not any("rollout restart" in c for c in result.commands), check_id
        assert any("/api/health/checks/alarms" in c for c in result.commands), check_id
    # A queue backed up on a broker that answers: its consumers, as the runbook says.
    backed_up = verdict("listing.rabbitmq-event-publishing",
                        AssertionError("events queue backed up"), env)
    assert backed_up.fixes == ["Restart RabbitMQ consumers if backed up"]


@pytest.mark.parametrize("kind", [FailureKind.REFUSED, FailureKind.TIMEOUT])
def test_a_database_that_refuses_or_does_not_answer_is_brought_back_not_the_service_restarted(
        kind: FailureKind, env: Environment) -> None:
    down = ProbeError("postgresql", "db.internal:5432/auth", "connection refused", 2.0,
                      kind=kind)
    for check_id in ("auth.postgresql-connectivity", "auth.database-performance",
                     "order.saga-orchestration", "order.database-transaction-health",
                     "auth.related-systems"):
        result = verdict(check_id, down, env)
        assert "Restart service if connection pool exhausted" not in result.fixes, check_id
        assert result.fixes[0].startswith("Bring PostgreSQL back"), check_id
        assert result.commands[0] == "pg_isready -h db.internal -p 5432 -d " + (
            "orders" if check_id.startswith("order.") else "auth"), check_id
    # Connections near exhaustion on a database that answers: the runbook's restart.
    exhausted = verdict("auth.postgresql-connectivity",
                        Finding("auth database connections near exhaustion",
                                impact="degradation"), env)
    assert exhausted.fixes == ["Restart service if connection pool exhausted"]


def webhooks_seen(**changes: Any) -> dict[str, Any]:
    from unibazzar_health.probes.payments import ProviderState, WebhookEndpoint

    provider = ProviderState(key_accepted=True, events_status=200, endpoints_status=200,
                             elapsed_ms=1.0, endpoints=[WebhookEndpoint(
                                 "we_1", "https://orders.unibazzar.example/webhooks/stripe",
                                 "enabled", [])])
    seen = {"provider": provider, "correctly_signed": 200, "badly_signed": 400,
            "stale_timestamp": 400, "our_endpoint": provider.endpoints[0],
            "webhook_url": "https://orders.unibazzar.example/webhooks/stripe"}
    return seen | changes


def test_forged_webhooks_or_a_rejected_api_key_are_not_reconciled(env: Environment) -> None:
    forged = verdict("order.payment-provider-webhooks", judged(
        orders.test_step1_payment_provider_webhooks, webhooks_seen(badly_signed=200)), env)
    assert (forged.impact, forged.severity) == ("security", "SEV1")
    assert "Reconcile payment provider state" not in forged.fixes
    assert forged.fixes == mode_fixes("order.payment-provider-webhooks",
                                      "forged-webhook-accepted")
    provider = webhooks_seen()["provider"]
    rejected = verdict("order.payment-provider-webhooks", judged(
        orders.test_step1_payment_provider_webhooks,
        webhooks_seen(provider=replace(provider, key_accepted=False, events_status=401))), env)
    assert rejected.severity == "SEV2"
    assert "Reconcile payment provider state" not in rejected.fixes
    assert rejected.fixes[0].startswith("Put a current payment provider API key")
    restricted = verdict("order.payment-provider-webhooks", judged(
        orders.test_step1_payment_provider_webhooks,
        webhooks_seen(provider=replace(provider, endpoints_status=403))), env)
    assert restricted.fixes == rejected.fixes
    # Our endpoint disabled: enable it, then reconcile what it missed.
    disabled = verdict("order.payment-provider-webhooks", judged(
        orders.test_step1_payment_provider_webhooks, webhooks_seen(our_endpoint=replace(
            provider.endpoints[0], status="disabled"))), env)
    assert disabled.fixes == ["Enable our webhook endpoint at the payment provider again (or "
                              "register it for our URL): the provider delivers it no events "
                              "meanwhile", "Reconcile payment provider state"]


# ---- fixes with their commands ----------------------------------------------------------------
def test_stale_data_clears_the_services_keys_by_prefix_not_one_key_nor_everything(
        env: Environment) -> None:
    result = verdict("listing.cache-freshness", Finding("stale data: ...", impact="minor"), env)
    assert result.fixes == ["Clear Redis cache if stale data"]
    prefix = "REDISCLI_AUTH=\"${CACHE_PASSWORD}\" redis-cli -u 'redis://cache.internal:6379/0'"
    assert f"{prefix} --scan --pattern 'listing:*' | REDISCLI_AUTH=\"${{CACHE_PASSWORD}}\" " \
           "xargs -r redis-cli -u 'redis://cache.internal:6379/0' unlink" in result.commands
    assert not any(re.search(r"\b(flushall|flushdb|keys|del)\b", c, re.IGNORECASE)
                   for c in result.commands), result.commands


def test_every_cache_clearing_fix_comes_with_its_scoped_command() -> None:
    """Wherever "Clear Redis cache" or "Clear vector database cache" is offered, its command
    is there: SCAN by the service's prefix and UNLINK, never FLUSHALL or KEYS."""
    clearing = {"Clear Redis cache if stale data": "'listing:*'",
                "Clear vector database cache": "'search:*'"}
    offered = 0

    def scoped(where: str, fixes: tuple[str, ...], commands: tuple[str, ...]) -> int:
        found = 0
        for fix, pattern in clearing.items():
            if fix in fixes:
                found += 1
                clears = [c for c in commands if f"--scan --pattern {pattern}" in c]
                assert clears and all(c.endswith(" unlink") for c in clears), (where, fix)
                assert not any(re.search(r"\b(flushall|flushdb|keys)\b", c, re.IGNORECASE)
                               for c in commands), where
        return found

    for entry in CATALOG.checks.values():
        offered += scoped(entry.id, entry.fixes, entry.commands)
    for entry in CATALOG.checks.values():
        for mode in entry.modes.values():
            offered += scoped(f"{entry.id} mode {mode.name}", mode.fixes, mode.commands)
    assert offered >= 5


def sagas_observed(monkeypatch: pytest.MonkeyPatch, env: Environment,
                   stuck: list[tuple[Any, ...]], failed: list[tuple[Any, ...]],
                   logs: dict[str, str] | Exception) -> dict[str, Any]:
    from unibazzar_health.probes import kubernetes, postgresql

    def fetch(target: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return failed if "state = 'failed'" in sql else stuck

    def pod_logs(target: Any, deployment: str, since_seconds: int,
                 **kwargs: Any) -> dict[str, str]:
        assert deployment == "order-service"
        if isinstance(logs, Exception):
            raise logs
        return logs

    monkeypatch.setattr(postgresql, "fetch", fetch)
    monkeypatch.setattr(kubernetes, "pod_logs", pod_logs)
    return dict(orders.observe_sagas(CheckContext(env)))


def test_stuck_sagas_are_named_with_their_logs_failed_ones_listed_and_the_retry_given(
        monkeypatch: pytest.MonkeyPatch, env: Environment) -> None:
    observed = sagas_observed(
        monkeypatch, env, stuck=[("saga-7", "order-7", "awaiting_payment", "charge", 7230)],
        failed=[("saga-3", "order-3", "failed", "reserve", 600)],
        logs={"order-service-1": "10:00 ERROR saga saga-7 step charge timed out\n"
                                 "10:01 INFO unrelated\n"})
    # Failed sagas are terminal, never stuck: listed with their ids and age all the same.
    assert observed["failed_last_day"] == [{"saga": "saga-3", "order": "order-3",
                                            "state": "failed", "step": "reserve",
                                            "idle_s": 600}]
    assert observed["logs"] == {"since_s": 122 * 60, "lines": [
        "order-service-1: 10:00 ERROR saga saga-7 step charge timed out"]}
    result = verdict("order.saga-orchestration",
                     judged(orders.test_step2_saga_orchestration, observed), env)
    assert result.message == (
        "1 saga(s) stuck past 15 min: saga-7 (awaiting_payment/charge, order order-7, idle "
        "120 min); 1 failed in the last 24 h: saga-3 (reserve, 10 min ago); 1 order-service "
        "log line(s) name them")
    assert result.fixes == ["Retry failed saga steps manually"]
    assert f"{KUBECTL} logs -l app=order-service -n unibazzar --since=122m --tail=-1 --prefix " \
           "| grep -E -e 'saga-7|order-7'" in result.commands
    assert result.commands[-1] == ("for saga in saga-7; do curl -s -X POST "
                                   "'http://order.internal:8080/admin/sagas/'\"$saga\"'/retry' "
                                   "-w '\\n'; done")
    assert any("WHERE state = 'failed'" in c for c in result.commands)


def test_saga_logs_that_cannot_be_read_fail_nothing_and_no_retry_path_leaves_it_out(
        monkeypatch: pytest.MonkeyPatch, env: Environment, tmp_path: Path) -> None:
    observed = sagas_observed(monkeypatch, env, stuck=[], failed=[], logs=KUBE_DOWN)
    assert judged(orders.test_step2_saga_orchestration, observed) is None
    assert "logs" not in observed  # nothing stuck: no logs read
    observed = sagas_observed(
        monkeypatch, env, stuck=[("saga-7", "order-7", "awaiting_payment", "charge", 1200)],
        failed=[], logs=KUBE_DOWN)
    assert observed["logs"] == {"not_read": str(KUBE_DOWN)}
    path = tmp_path / "no-retry.toml"
    path.write_text(ENV.replace('saga_retry_path = "/admin/sagas/{saga_id}/retry"\n', ""))
    without = load_environment(path, environ=dict.fromkeys(SECRETS, "s3cr3t"))
    result = verdict("order.saga-orchestration",
                     judged(orders.test_step2_saga_orchestration, observed), without)
    assert (result.severity, result.fixes) == ("SEV2", ["Retry failed saga steps manually"])
    assert not any("/retry" in c for c in result.commands)
    assert any("--since=22m" in c for c in result.commands)


def test_a_saga_retry_path_must_name_the_saga(tmp_path: Path) -> None:
    from unibazzar_health.config.errors import EnvironmentFileError

    path = tmp_path / "bad.toml"
    path.write_text(ENV.replace('"/admin/sagas/{saga_id}/retry"', '"/admin/sagas/retry"'))
    with pytest.raises(EnvironmentFileError, match=r"saga_retry_path.*names \{saga_id\}"):
        load_environment(path, environ=dict.fromkeys(SECRETS, "s3cr3t"))


# ---- failure modes are data, held to the checks -----------------------------------------------
def test_every_mode_a_check_names_is_in_the_catalog_and_every_catalog_mode_is_named() -> None:
    named: set[tuple[str, str]] = set()
    for path in (ROOT / "checks").rglob("test_*.py"):
        text = path.read_text()
        ids = set(re.findall(r'runbook_check\("([a-z]+\.[a-z0-9-]+)"', text))
        steps = set(re.findall(r'per_service\("([a-z0-9-]+)"', text))
        ids |= {c for c in CATALOG.checks if c.split(".", 1)[1] in steps}
        for mode in re.findall(r'\bmode ?= ?"([a-z0-9-]+)"', text):
            owners = {c for c in ids if mode in CATALOG.checks[c].modes}
            assert owners, (path.name, mode)
            named |= {(c, mode) for c in owners}
    assert named == {(c.id, m) for c in CATALOG.checks.values() for m in c.modes}


def test_a_mode_the_catalog_does_not_have_is_a_catalog_error(env: Environment) -> None:
    with pytest.raises(CatalogError, match="no failure mode 'made-up'"):
        verdict("auth.jwt-secret-configuration", Finding("x", mode="made-up"), env)


def test_a_mode_names_no_impact_class_and_only_known_fixes() -> None:
    import tomllib

    from unibazzar_health.verdict.catalog import resources

    raw = tomllib.loads(resources.files("unibazzar_health.verdict").joinpath("catalog.toml")
                        .read_text("utf-8"))
    modes = raw["checks"]["auth.jwt-secret-configuration"]["modes"]
    modes["forged-token-accepted"]["impact"] = "outage"
    with pytest.raises(CatalogError, match="unknown keys \\['impact'\\]"):
        parse_catalog(raw)
    del modes["forged-token-accepted"]["impact"]
    modes["forged-token-accepted"]["fixes"] = ["no-such-fix"]
    with pytest.raises(CatalogError, match="unknown fixes"):
        parse_catalog(raw)


# ---- the data-plane probes against the sandbox's DynamoDB ------------------------------------
@pytest.mark.sandbox
def test_the_read_and_write_probes_serve_and_write_nothing(running_sandbox: None) -> None:
    from unibazzar_health.probes import dynamodb

    ctx = CheckContext(load_environment(ROOT / "environments" / "sandbox.toml"))
    target = ctx.aws("dynamodb")
    table = dynamodb.describe_table(target, "unibazzar-listings")
    assert table.key == {"listing_id": "S"}
    assert dynamodb.serves_reads(target, table) >= 0
    assert dynamodb.serves_writes(target, table) >= 0
    # Refused on its condition: nothing was written.
    assert dynamodb.get_item(target, "unibazzar-listings",
                             {"listing_id": "unibazzar-health-probe"}) is None
    assert dynamodb.describe_table(target, "unibazzar-listings").item_count == table.item_count
    gone = replace(table, table="unibazzar-health-no-such-table")
    for probe in (dynamodb.serves_reads, dynamodb.serves_writes):
        with pytest.raises(ProbeError) as error:
            probe(target, gone)
        assert error.value.kind is FailureKind.MISSING_OBJECT
