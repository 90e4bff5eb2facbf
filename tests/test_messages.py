"""The runbook's three messages from summaries (golden files under tests/golden/; rewrite
them with UPDATE_GOLDEN=1 after a deliberate change, and read the diff), the update's deltas,
the resolution's duration, and the severity and escalation policy they rest on."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from unibazzar_health.reports import messages
from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.model import Summary
from unibazzar_health.verdict.policy import BusinessCalendar, internal_level, respond_by
from unibazzar_health.verdict.results import CheckResult, Outcome
from unibazzar_health.verdict.severity import (
    combined_severity,
    impact_of_losing,
    service_outages,
    severity_of,
    worst,
)
from unibazzar_health.verdict.summary import Response, RunInfo, build_summary

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
RESPONSE = Response(ic="@alice", war_room="#incidents-prod",
                    report_url="https://reports.example/unibazzar/prod/index.html",
                    runbook_url="https://wiki.example/runbook",
                    contacts={"level_2": "@bob", "level_3": "@carol", "level_4": "@dave",
                              "aws_support": "https://console.aws.example/support"})


def failed(check_id: str, message: str, dependencies: tuple[str, ...] = (),
           impact: str | None = None) -> CheckResult:
    catalog = load_catalog()
    entry = catalog.check(check_id)
    impact = impact or entry.impact
    return CheckResult(id=entry.id, service=entry.service, step=entry.step, title=entry.title,
                       nodeid=entry.id, outcome=Outcome.FAILED, impact=impact,
                       severity=severity_of(impact).level, message=message,
                       fixes=list(entry.fixes)[:1],
                       commands=["redis-cli -u 'redis://cache:6379/0' ping"],
                       failed_dependencies=list(dependencies),
                       impact_statement=getattr(entry, "impact_statement", None))


def passed(check_id: str) -> CheckResult:
    entry = load_catalog().check(check_id)
    return CheckResult(id=entry.id, service=entry.service, step=entry.step, title=entry.title,
                       nodeid=entry.id, outcome=Outcome.PASSED)


def summary_at(minutes: float, results: list[CheckResult]) -> Summary:
    started = T0 + timedelta(minutes=minutes)
    run = RunInfo("production", "environments/production.toml", started,
                  started + timedelta(seconds=2), [], "0.1.0")
    return build_summary(results, load_catalog(), run, RESPONSE)


REDIS_DOWN = [
    failed("listing.related-systems", "listing-service cannot reach redis: redis at "
           "cache:6379/0: connection refused (deadline 2 s)", ("redis",), "degradation"),
    failed("ai.redis-cache-performance", "redis at cache:6379/1: connection refused "
           "(deadline 2 s)", ("redis",)),
    passed("ai.vector-database-connectivity"),
]
SAGAS_STUCK = failed("order.saga-orchestration", "2 saga(s) stuck past 15 min: s-1, s-2")


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and read it"
    assert text == path.read_text(encoding="utf-8")


def test_the_initial_notification_one_per_root_cause() -> None:
    first = summary_at(0, [*REDIS_DOWN, SAGAS_STUCK])
    alerts = messages.alerts(first)
    assert [m.key for m in alerts] == ["dependency:redis", "service:order-service"]
    assert alerts[0].lines[0] == "🚨 INCIDENT ALERT - SEV 2"
    assert alerts[0].lines[1] == "Service: ai-service, listing-service"
    assert alerts[0].lines[3:5] == ["IC: @alice", "War Room: #incidents-prod"]
    assert alerts[0].lines[5] == "ETA for update: 30 min (2026-11-27 03:30 UTC)"
    golden("alert.md", "\n".join(m.markdown() for m in alerts))
    golden("incident.md", messages.incident_markdown(first))


def test_the_status_update_says_what_changed() -> None:
    first = summary_at(0, REDIS_DOWN)
    worse = summary_at(30, [*REDIS_DOWN, SAGAS_STUCK])
    update = messages.update(first, first, worse)
    assert update.lines[2] == "Status: INVESTIGATING"
    assert update.lines[3] == "Actions taken: newly failing: order.saga-orchestration"
    better = summary_at(60, [REDIS_DOWN[1], passed("listing.related-systems")])
    mitigating = messages.update(first, worse, better)
    assert mitigating.lines[2] == "Status: MITIGATING"
    assert mitigating.lines[3] == ("Actions taken: recovered: listing.related-systems, "
                                   "order.saga-orchestration; severity SEV 2 → SEV 3")
    same = messages.update(first, better, summary_at(90, [REDIS_DOWN[1]]))
    assert same.lines[3] == ("Actions taken: no change since 2026-11-27 04:00 UTC: 1 check(s) "
                             "still failing")
    golden("update.md", mitigating.markdown())


def test_the_resolution_says_how_long_it_lasted() -> None:
    first = summary_at(0, REDIS_DOWN)
    last = summary_at(75, REDIS_DOWN)
    healthy = summary_at(83, [passed("listing.related-systems")])
    message = messages.resolved(first, last, healthy)
    assert message.lines[0] == "✅ INCIDENT RESOLVED - SEV 2"
    assert message.lines[3] == "Duration: 1 h 23 min (2026-11-27 03:00 UTC → 2026-11-27 04:23 UTC)"
    assert message.lines[4] == ("Post-mortem: due 2026-12-04 04:23 UTC (within 1 week, "
                                "Post-Incident Procedures)")
    golden("resolved.md", message.markdown())


def test_the_message_command_renders_from_summary_files(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    files = []
    for n, summary in enumerate([summary_at(0, REDIS_DOWN), summary_at(75, REDIS_DOWN),
                                 summary_at(83, [passed("listing.related-systems")])]):
        files.append(tmp_path / f"{n}.json")
        files[-1].write_text(json.dumps(summary.to_dict()))
    done = subprocess.run([sys.executable, "-m", "unibazzar_health", "message", "resolved",
                           *map(str, files)], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("✅ INCIDENT RESOLVED - SEV 2\n")
    alert = subprocess.run([sys.executable, "-m", "unibazzar_health", "message", "alert",
                            str(files[0])], capture_output=True, text=True, check=True)
    assert alert.stdout.startswith("🚨 INCIDENT ALERT - SEV 2\n")
    healthy = subprocess.run([sys.executable, "-m", "unibazzar_health", "message", "alert",
                              str(files[2])], capture_output=True, text=True)
    assert healthy.returncode == 1 and "healthy, nothing to alert" in healthy.stderr


# ---- the policy behind them -------------------------------------------------------------
@pytest.mark.parametrize(("impact", "level"), [
    ("outage", "SEV1"), ("data", "SEV1"), ("security", "SEV1"), ("degradation", "SEV2"),
    ("performance-major", "SEV2"), ("payments", "SEV2"), ("minor", "SEV3"),
    ("performance-minor", "SEV3"), ("non-critical", "SEV3"), ("cosmetic", "SEV4"),
    ("documentation", "SEV4"), ("enhancement", "SEV4"),
])
def test_every_impact_class_has_the_runbooks_severity(impact: str, level: str) -> None:
    assert severity_of(impact).level == level


def test_the_worst_severity_and_the_outage_rule() -> None:
    assert worst(["SEV3", None, "SEV2"]) == "SEV2" and worst([]) is None
    down = [failed("order.saga-orchestration", "x"), failed("order.payment-reconciliation", "y")]
    assert service_outages(down) == [{"service": "order-service", "checks": 2,
                                      "severity": "SEV1"}]
    assert service_outages(down[:1]) == []


def test_one_rule_combines_severities_for_a_cause_or_a_verdict() -> None:
    assert combined_severity(["SEV3", None, "SEV2"]) == "SEV2"
    assert combined_severity(["SEV3"], outage=True) == "SEV1"  # a service of it is down
    assert combined_severity([]) is None and combined_severity([None]) is None


def test_one_table_per_severity_read_by_every_part() -> None:
    """Response times from the catalog; PagerDuty's severity, the metric's value and the
    escalation defaults from severity.SEVERITY_TABLE, wherever they are read."""
    from unibazzar_health.incidents.lifecycle import Policy
    from unibazzar_health.incidents.notifiers.pagerduty import pagerduty_severity
    from unibazzar_health.reports.metrics import severity_number
    from unibazzar_health.verdict.catalog import SEVERITY_ORDER
    from unibazzar_health.verdict.policy import DEFAULT_ESCALATION_MINUTES
    from unibazzar_health.verdict.severity import SEVERITY_TABLE

    catalog = load_catalog()
    assert tuple(SEVERITY_TABLE) == SEVERITY_ORDER == tuple(catalog.severities)
    assert Policy(environment="production").respond_within_minutes == {
        level: s.respond_within_minutes for level, s in catalog.severities.items()} == {
        "SEV1": 15, "SEV2": 60, "SEV3": 240, "SEV4": 1440}
    assert DEFAULT_ESCALATION_MINUTES == {
        "SEV1": {1: 0, 2: 15, 3: 30, 4: 60}, "SEV2": {1: 0, 2: 60, 3: 240},
        "SEV3": {1: 0, 2: 240}, "SEV4": {1: 0}}
    assert [pagerduty_severity(level) for level in (*SEVERITY_ORDER, None)] == [
        "critical", "error", "warning", "info", "error"]
    assert [severity_number(level) for level in (*SEVERITY_ORDER, None)] == [1, 2, 3, 4, 0]


def test_losing_a_dependency_is_rated_by_what_depends_on_it() -> None:
    # The auth database down is an auth outage (its connectivity check is an outage class).
    assert severity_of(impact_of_losing("auth-service", "postgresql",
                                        "auth.related-systems")).level == "SEV1"
    # A listing cache down is a degradation at worst.
    assert severity_of(impact_of_losing("listing-service", "redis",
                                        "listing.related-systems")).level in ("SEV2", "SEV3")


def test_sev4_is_due_the_next_business_day() -> None:
    calendar = BusinessCalendar(timezone="Europe/Berlin", day_starts=time(9, 0),
                                holidays=(date(2026, 11, 30),))
    friday_night = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
    due = respond_by("SEV4", 1440, friday_night, calendar)
    # Saturday and Sunday are no business days, Monday the 30th is a holiday.
    assert due.isoformat() == "2026-12-01T09:00:00+01:00"
    assert respond_by("SEV2", 60, friday_night, calendar) == friday_night + timedelta(hours=1)


@pytest.mark.parametrize(("level", "minutes", "expected"), [
    ("SEV1", 0, 1), ("SEV1", 15, 2), ("SEV1", 45, 3), ("SEV1", 61, 4),
    ("SEV2", 59, 1), ("SEV2", 60, 2), ("SEV2", 300, 3), ("SEV3", 10_000, 2), ("SEV4", 10_000, 1),
])
def test_internal_escalation_by_severity_and_time_open(level: str, minutes: float,
                                                       expected: int) -> None:
    assert internal_level(level, minutes) == expected


def test_escalation_names_the_level_and_the_external_teams() -> None:
    dynamo = failed("listing.dynamodb-table-status", "gone", ("dynamodb",))
    forged = failed("auth.jwt-secret-configuration", "accepts forged", impact="security")
    summary = summary_at(0, [dynamo, forged])
    assert summary.escalation is not None
    assert summary.escalation.model_dump() == {
        "internal": {"level": 1, "title": "On-call engineer", "contact": "@alice"},
        "external": [{"team": "AWS Support", "contact": "https://console.aws.example/support",
                      "why": "infrastructure: dynamodb failing"},
                     {"team": "Security Team", "contact": None, "why": "security incident"}]}


def test_a_healthy_verdict_names_what_was_skipped_and_an_unchecked_service() -> None:
    from unibazzar_health.verdict.summary import render

    skipped = CheckResult(id="ai.end-to-end-search", service="ai-service", step="s",
                          title="t", nodeid="n", outcome=Outcome.SKIPPED,
                          message="not configured: the environment has no 'canary'")
    healthy = summary_at(0, [passed("auth.postgresql-connectivity"), passed("ai.scope-and-impact"),
                             skipped])
    lines = render(healthy)
    assert lines[0] == ("VERDICT HEALTHY: 2 of 3 checks ran and passed in production; "
                        "1 skipped (1 not configured)")
    assert "  SKIPPED ai.end-to-end-search" in lines
    unchecked = summary_at(0, [passed("auth.postgresql-connectivity"), skipped])
    assert unchecked.verdict.status == "incomplete"
    assert unchecked.services["ai-service"].status == "unchecked"
    assert render(unchecked)[0].endswith("nothing of ai-service was checked (every check "
                                         "skipped)")
