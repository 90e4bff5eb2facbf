"""The verdict's escalation rules, on plain results: one dependency failing for several
services is one incident; a service whose every check fails is an outage (SEV1)."""

from __future__ import annotations

from datetime import UTC, datetime

from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.model import DependencyIncident, Outage
from unibazzar_health.verdict.results import CheckResult, Outcome
from unibazzar_health.verdict.summary import RunInfo, build_summary, render

RUN = RunInfo(environment="test", environment_file="test.toml",
              started_at=datetime(2026, 11, 27, tzinfo=UTC),
              finished_at=datetime(2026, 11, 27, 0, 0, 2, tzinfo=UTC), arguments=[])


def result(check_id: str, service: str, outcome: Outcome, severity: str | None = None,
           failed_dependencies: tuple[str, ...] = ()) -> CheckResult:
    return CheckResult(id=check_id, service=service, step="s", title="t", nodeid=check_id,
                       outcome=outcome, severity=severity, message="m",
                       failed_dependencies=list(failed_dependencies))


def test_one_dependency_failing_for_several_services_is_one_incident() -> None:
    summary = build_summary([
        result("listing.related-systems", "listing-service", Outcome.FAILED, "SEV2", ("redis",)),
        result("ai.redis-cache-performance", "ai-service", Outcome.FAILED, "SEV3", ("redis",)),
        result("ai.related-systems", "ai-service", Outcome.FAILED, "SEV3", ("redis",)),
        result("ai.vector-database-connectivity", "ai-service", Outcome.PASSED),
        result("listing.s3-image-uploads", "listing-service", Outcome.FAILED, "SEV2", ("s3",)),
        result("listing.dynamodb-table-status", "listing-service", Outcome.PASSED),
    ], load_catalog(), RUN)
    assert summary.incidents == [DependencyIncident(
        dependency="redis", services=["ai-service", "listing-service"],
        checks=["listing.related-systems", "ai.redis-cache-performance",
                "ai.related-systems"],
        severity="SEV2")]
    assert summary.outages == []
    assert summary.verdict.severity == "SEV2"
    assert ("  INCIDENT redis failing for ai-service, listing-service: one incident, SEV2 "
            "(3 checks)") in render(summary)


def test_a_service_whose_every_check_fails_is_an_outage() -> None:
    summary = build_summary([
        result("order.saga-orchestration", "order-service", Outcome.FAILED, "SEV2"),
        result("order.database-transaction-health", "order-service", Outcome.FAILED, "SEV2"),
        result("auth.jwt-secret-configuration", "auth-service", Outcome.FAILED, "SEV2"),
        result("auth.postgresql-connectivity", "auth-service", Outcome.PASSED),
    ], load_catalog(), RUN)
    assert summary.outages == [Outage(service="order-service", checks=2, severity="SEV1")]
    assert summary.verdict.severity == "SEV1"
    assert summary.verdict.respond_within == "15 minutes"
    assert summary.services["order-service"].worst_severity == "SEV1"
    assert summary.services["auth-service"].worst_severity == "SEV2"
    assert summary.incidents == []
    lines = render(summary)
    assert lines[0].startswith("VERDICT SEV1 Critical: respond within 15 minutes")
    assert "  OUTAGE order-service: every check failing (2 of 2): treated as SEV1" in lines


def test_no_escalation_from_one_check_or_one_service() -> None:
    summary = build_summary([
        result("ai.redis-cache-performance", "ai-service", Outcome.FAILED, "SEV3", ("redis",)),
        result("ai.related-systems", "ai-service", Outcome.PASSED),
        result("listing.related-systems", "listing-service", Outcome.SKIPPED),
    ], load_catalog(), RUN)
    assert (summary.incidents, summary.outages) == ([], [])
    assert summary.verdict.severity == "SEV3"
    # A lone check that fails is not a service outage.
    alone = build_summary([result("ai.redis-cache-performance", "ai-service", Outcome.FAILED,
                                  "SEV3")], load_catalog(), RUN)
    assert alone.outages == [] and alone.verdict.severity == "SEV3"


def test_each_failing_checks_probe_failures_reach_the_summary() -> None:
    """Backend, target, kind, problem and deadline of each failure, as plain JSON."""
    import json

    failures = [{"backend": "redis", "target": "127.0.0.1:26379/1", "kind": "timeout",
                 "problem": "did not answer within the deadline", "deadline": 2.0}]
    failing = result("ai.redis-cache-performance", "ai-service", Outcome.FAILED, "SEV3",
                     ("redis",))
    failing.failures = failures
    summary = json.loads(json.dumps(build_summary(
        [failing, result("ai.related-systems", "ai-service", Outcome.PASSED)],
        load_catalog(), RUN).to_dict()))
    checks = {c["id"]: c for c in summary["checks"]}
    assert checks["ai.redis-cache-performance"]["failures"] == failures
    assert checks["ai.related-systems"]["failures"] == []


def test_a_failure_pinned_on_nothing_joins_the_dependency_incident_it_likely_follows() -> None:
    """Redis down: ai-service's search times out (pinned on ai-service itself, which stands
    on redis); it is the same incident, one page, not a second root cause."""
    search = result("ai.end-to-end-search", "ai-service", Outcome.FAILED, "SEV2",
                    ("ai-service",))
    search.depends_on = ["ai-service", "redis"]
    summary = build_summary([
        result("listing.related-systems", "listing-service", Outcome.FAILED, "SEV2", ("redis",)),
        result("ai.related-systems", "ai-service", Outcome.FAILED, "SEV2", ("redis",)),
        search,
        result("order.saga-orchestration", "order-service", Outcome.FAILED, "SEV2"),
    ], load_catalog(), RUN)
    assert [(c.key, c.checks) for c in summary.root_causes] == [
        ("dependency:redis", ["ai.related-systems", "listing.related-systems",
                              "ai.end-to-end-search"]),
        ("service:order-service", ["order.saga-orchestration"])]
