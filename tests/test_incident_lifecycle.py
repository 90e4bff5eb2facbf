"""The incident lifecycle as a pure function (incidents/lifecycle.py): sequences of runs
built with summary.build_summary at chosen times, the exact messages each decides, and the
policy behind them (alert/resolve after N runs, updates on change and when due, escalation,
silences and maintenance windows, runs that observed only part of an incident)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from unibazzar_health.incidents.lifecycle import (
    Decision,
    Mute,
    Policy,
    decide,
    dedup_key,
    first_failure_at,
)
from unibazzar_health.incidents.notifiers.pagerduty import PagerDutyNotifier
from unibazzar_health.incidents.state import KINDS, Delivery, EnvironmentState
from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.model import Silenced, Summary
from unibazzar_health.verdict.policy import internal_level
from unibazzar_health.verdict.results import CheckResult, Outcome
from unibazzar_health.verdict.severity import severity_of
from unibazzar_health.verdict.summary import Response, RunInfo, build_summary

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
RESPONSE = Response(ic="@alice", war_room="#incidents-prod",
                    report_url="https://reports.example/prod/index.html",
                    contacts={"level_2": "@bob", "level_3": "@carol", "level_4": "@dave"})
POLICY = Policy(environment="production",
                notifiers=(("pagerduty", PagerDutyNotifier.kinds),
                           ("slack", frozenset(KINDS))),
                contacts={1: "@alice", 2: "@bob", 3: "@carol", 4: "@dave"})


def failed(check_id: str, message: str, dependencies: tuple[str, ...] = (),
           impact: str | None = None) -> CheckResult:
    entry = load_catalog().check(check_id)
    impact = impact or entry.impact
    return CheckResult(id=entry.id, service=entry.service, step=entry.step, title=entry.title,
                       nodeid=entry.id, outcome=Outcome.FAILED, impact=impact,
                       severity=severity_of(impact).level, message=message,
                       fixes=list(entry.fixes)[:1], failed_dependencies=list(dependencies),
                       impact_statement=entry.impact_statement)


def passed(check_id: str) -> CheckResult:
    entry = load_catalog().check(check_id)
    return CheckResult(id=entry.id, service=entry.service, step=entry.step, title=entry.title,
                       nodeid=entry.id, outcome=Outcome.PASSED)


LISTING_REDIS = failed("listing.related-systems", "listing-service cannot reach redis: redis "
                       "at cache:6379/0: connection refused (deadline 2 s)", ("redis",))
AI_REDIS = failed("ai.redis-cache-performance", "redis at cache:6379/1: connection refused "
                  "(deadline 2 s)", ("redis",))
SAGAS = failed("order.saga-orchestration", "2 saga(s) stuck past 15 min: s-1, s-2")
HEALTHY = [passed("listing.related-systems"), passed("ai.redis-cache-performance"),
           passed("order.saga-orchestration")]


class Runs:
    """A sequence of runs against one remembered state, as posting drives it (the stored
    summaries included)."""

    def __init__(self, policy: Policy = POLICY) -> None:
        self.policy = policy
        self.state = EnvironmentState("production")
        self.stored: dict[str, Summary] = {}

    def at(self, minutes: float, results: list[CheckResult]) -> Decision:
        started = T0 + timedelta(minutes=minutes)
        info = RunInfo("production", "environments/production.toml", started,
                       started + timedelta(seconds=2), [], "0.1.0")
        remembered = first_failure_at(self.state, [r.id for r in results
                                                   if r.outcome is Outcome.FAILED])
        summary = build_summary(results, load_catalog(), info,
                                replace(RESPONSE, first_failure_at=remembered))
        run_id = f"run-{minutes:g}"
        decision = decide(self.state, summary, run_id, self.policy,
                          started + timedelta(seconds=2), self.stored)
        self.stored[run_id] = Summary.model_validate(summary.to_dict())  # as the store keeps it
        self.state = decision.state
        self.state.outbox = [*self.state.outbox, *decision.deliveries]
        return decision


def sent(decision: Decision, notifier: str = "slack") -> list[list[str]]:
    return [d.payload["message"]["lines"] for d in decision.deliveries
            if d.notifier == notifier]


def test_one_alert_per_incident_then_quiet_until_the_update_is_due() -> None:
    runs = Runs()
    first = runs.at(0, [LISTING_REDIS, AI_REDIS, passed("order.saga-orchestration")])
    assert [(d.notifier, d.kind, d.incident_key) for d in first.deliveries] == [
        ("pagerduty", "alert", "dependency:redis"), ("slack", "alert", "dependency:redis")]
    assert sent(first) == [[
        "🚨 INCIDENT ALERT - SEV 2",
        "Service: ai-service, listing-service",
        "Impact: Buyers and sellers may see missing listings or images, and new listings may "
        "fail to save. Search may be slower than usual for buyers.",
        "IC: @alice",
        "War Room: #incidents-prod",
        "ETA for update: 30 min (2026-11-27 03:30 UTC)"]]
    assert runs.at(5, [LISTING_REDIS, AI_REDIS]).deliveries == []
    assert runs.at(25, [LISTING_REDIS, AI_REDIS]).deliveries == []
    due = runs.at(30, [LISTING_REDIS, AI_REDIS])
    assert sent(due) == [[
        "📊 INCIDENT UPDATE - SEV 2",
        "Service: ai-service, listing-service",
        "Status: INVESTIGATING",
        "Actions taken: no change since 2026-11-27 03:00 UTC: 2 check(s) still failing",
        "Next steps: confirm full restoration",
        "Next update: 30 min (2026-11-27 04:00 UTC)"]]
    assert sent(due, "pagerduty") == []  # PagerDuty is paged once; updates go to the chat


def test_a_scheduled_probe_alerts_after_two_failing_runs_and_forgets_a_flap() -> None:
    runs = Runs(replace(POLICY, alert_after=2, resolve_after=2))
    held = runs.at(0, [SAGAS])
    assert held.deliveries == []
    assert held.notes == ["HOLD service:order-service: failing 1 of 2 consecutive runs before "
                          "the alert"]
    flap = runs.at(5, [passed("order.saga-orchestration")])
    assert flap.notes == ["FLAP service:order-service: passed again before alerting; no alert"]
    assert runs.state.incidents == {}
    assert runs.at(10, [SAGAS]).deliveries == []
    alert = runs.at(15, [SAGAS])
    assert [d.kind for d in alert.deliveries] == ["alert", "alert"]
    incident = runs.state.incidents["service:order-service"]
    # The incident began with the first of the two failing runs, not with the alert.
    assert incident.first_failure_at == "2026-11-27T03:10:00+00:00"
    assert alert.deliveries[0].payload["summary"]["incident"]["first_failure_at"] == \
        "2026-11-27T03:10:00+00:00"


def test_a_second_service_failing_for_the_same_cause_is_an_update_of_the_same_incident() -> None:
    runs = Runs()
    first = runs.at(0, [LISTING_REDIS, passed("ai.redis-cache-performance")])
    assert [d.incident_key for d in first.deliveries] == ["service:listing-service"] * 2
    grown = runs.at(10, [LISTING_REDIS, AI_REDIS])
    assert [(d.notifier, d.kind) for d in grown.deliveries] == [("slack", "update")]
    assert grown.deliveries[0].incident_key == "service:listing-service"  # its identity stays
    assert sent(grown)[0][:4] == [
        "📊 INCIDENT UPDATE - SEV 2",
        "Service: ai-service, listing-service",
        "Status: INVESTIGATING",
        "Actions taken: newly failing: ai.redis-cache-performance"]
    incident = runs.state.incidents["service:listing-service"]
    assert incident.title == "redis failing for ai-service, listing-service"
    assert [e.kind for e in incident.events] == ["failing", "alert", "checks", "update"]


def test_the_resolution_tells_the_duration_from_first_failure_to_first_healthy_run() -> None:
    runs = Runs(replace(POLICY, resolve_after=2))
    alert = runs.at(0, [LISTING_REDIS, AI_REDIS])
    runs.at(75, [LISTING_REDIS, AI_REDIS])
    healing = runs.at(83, HEALTHY)
    assert healing.deliveries == []
    assert healing.notes == ["HEALING dependency:redis: passing 1 of 2 runs before the "
                             "resolution"]
    resolved = runs.at(88, HEALTHY)
    assert sent(resolved) == [[
        "✅ INCIDENT RESOLVED - SEV 2",
        "Service: ai-service, listing-service",
        "Resolution: every check of ai-service, listing-service passes again (2 recovered: "
        "ai.redis-cache-performance, listing.related-systems)",
        "Duration: 1 h 23 min (2026-11-27 03:00 UTC → 2026-11-27 04:23 UTC)",
        "Post-mortem: due 2026-12-04 04:23 UTC (within 1 week, Post-Incident Procedures)"]]
    trigger = next(d for d in alert.deliveries if d.notifier == "pagerduty")
    resolve = next(d for d in resolved.deliveries if d.notifier == "pagerduty")
    assert trigger.dedup_key == resolve.dedup_key == dedup_key("production", trigger.incident_id)
    assert runs.state.incidents == {}
    assert runs.state.closed[-1].resolved_at == "2026-11-27T04:23:00+00:00"


def test_a_run_that_did_not_look_neither_heals_nor_prolongs_an_incident() -> None:
    runs = Runs()
    runs.at(0, [SAGAS])
    other = runs.at(5, [passed("auth.postgresql-connectivity")])  # pytest -m auth-service
    assert other.deliveries == []
    # Even when an update is due: a run that did not look has nothing to tell.
    assert runs.at(45, [passed("auth.postgresql-connectivity")]).deliveries == []
    incident = runs.state.incidents["service:order-service"]
    assert incident.checks == ["order.saga-orchestration"] and incident.passing_runs == 0
    assert [d.kind for d in runs.at(10, [passed("order.saga-orchestration")]).deliveries] == \
        ["resolved", "resolved"]


def test_a_check_recovering_is_an_update_at_once_and_a_worse_severity_too() -> None:
    runs = Runs()
    runs.at(0, [LISTING_REDIS, AI_REDIS])
    better = runs.at(5, [passed("listing.related-systems"), AI_REDIS])
    assert sent(better)[0][2:4] == [
        "Status: MITIGATING",
        "Actions taken: recovered: listing.related-systems; severity SEV 2 → SEV 3"]
    assert runs.state.incidents["dependency:redis"].severity == "SEV3"


def test_internal_escalation_when_the_incident_outlives_its_level() -> None:
    forged = failed("auth.jwt-secret-configuration", "auth-service accepts forged tokens",
                    impact="security")
    runs = Runs()
    runs.at(0, [forged])
    assert runs.at(10, [forged]).deliveries == []
    level_2 = runs.at(15, [forged])
    escalations = [d for d in level_2.deliveries if d.kind == "escalation"]
    assert [d.payload["message"]["lines"] for d in escalations] == [[
        "⏫ INCIDENT ESCALATION - SEV 1",
        "Service: auth-service",
        "Escalated to: Level 2 — Senior engineer/Team lead (@bob)",
        "Why: open 15 min at SEV 1; Internal Escalation reaches Level 2 after 15 min",
        "IC: @alice",
        "War Room: #incidents-prod"]]
    assert [d.kind for d in runs.at(20, [forged]).deliveries] == []
    assert runs.state.incidents["service:auth-service"].escalation_level == 2


def test_a_silence_mutes_its_check_until_it_expires() -> None:
    until = T0 + timedelta(minutes=30)
    quiet = Runs(replace(POLICY, mutes=(Mute("known: sagas replayed by hand", until,
                                             check="order.saga-orchestration"),)))
    muted = quiet.at(0, [SAGAS])
    assert muted.deliveries == [] and quiet.state.incidents == {}
    assert muted.silenced == [Silenced(check="order.saga-orchestration", service="order-service",
                                       kind="silence", reason="known: sagas replayed by hand",
                                       until="2026-11-27T03:30:00+00:00")]
    expired = quiet.at(31, [SAGAS])  # an expired silence is ignored
    assert expired.silenced == [] and [d.kind for d in expired.deliveries] == ["alert", "alert"]


def test_a_maintenance_window_mutes_its_services_only_while_it_lasts() -> None:
    window = Mute("order-service database migration", T0 + timedelta(minutes=60),
                  start=T0 + timedelta(minutes=10), service="order-service", kind="maintenance")
    runs = Runs(replace(POLICY, mutes=(window,)))
    before = runs.at(0, [SAGAS])
    assert [d.kind for d in before.deliveries] == ["alert", "alert"]
    inside = runs.at(40, [SAGAS, LISTING_REDIS])
    # The open order-service incident is silenced (no update though one is due); the
    # listing-service failure is outside the window and alerts.
    assert [(d.kind, d.incident_key) for d in inside.deliveries] == [
        ("alert", "service:listing-service"), ("alert", "service:listing-service")]
    assert "SILENCED service:order-service: order-service database migration (until " \
           "2026-11-27 04:00 UTC)" in inside.notes
    assert runs.state.incidents["service:order-service"].events[-1].kind == "silenced"
    after = runs.at(61, [SAGAS, LISTING_REDIS])
    # Over: the update is due, and a SEV2 open an hour reaches Level 2.
    assert [(d.notifier, d.kind, d.incident_key) for d in after.deliveries] == [
        ("slack", "update", "service:order-service"),
        ("slack", "escalation", "service:order-service")]


def test_sev3_updates_on_the_environments_cadence() -> None:
    runs = Runs(replace(POLICY, update_every_minutes={"SEV3": 60}))
    alert = runs.at(0, [AI_REDIS])
    assert sent(alert)[0][-1] == "ETA for update: 1 h (2026-11-27 04:00 UTC)"
    assert runs.at(59, [AI_REDIS]).deliveries == []
    assert sent(runs.at(60, [AI_REDIS]))[0][-1] == "Next update: 1 h (2026-11-27 05:00 UTC)"


def test_a_newer_update_supersedes_one_still_waiting_to_go_out() -> None:
    runs = Runs()
    runs.at(0, [LISTING_REDIS, AI_REDIS])
    first_update = runs.at(30, [LISTING_REDIS, AI_REDIS]).deliveries[0]
    second = runs.at(60, [LISTING_REDIS, AI_REDIS])
    assert [(c.delivery_id, c.status) for c in second.changes] == [
        (first_update.id, "superseded")]


def test_the_store_tells_the_summary_when_the_incident_began() -> None:
    runs = Runs()
    runs.at(0, [SAGAS])
    later = runs.at(45, [SAGAS])
    assert later.deliveries[0].payload["summary"]["incident"]["first_failure_at"] == \
        "2026-11-27T03:00:00+00:00"
    assert first_failure_at(runs.state, ["order.saga-orchestration"]) == T0
    assert first_failure_at(runs.state, ["auth.postgresql-connectivity"]) is None


def test_delivery_ids_are_deterministic_and_distinct() -> None:
    a, b = Runs(), Runs()
    da = a.at(0, [SAGAS]).deliveries
    db = b.at(0, [SAGAS]).deliveries
    assert [d.id for d in da] == [d.id for d in db]
    assert len({d.id for d in da}) == 2
    assert all(isinstance(d, Delivery) for d in da)


def test_a_silenced_checks_severity_and_service_stay_out_of_the_page() -> None:
    # One Redis behind a SEV1 order-service check (silenced) and a SEV3 auth-service one.
    orders = failed("order.saga-orchestration", "sagas stuck on redis", ("redis",),
                    impact="outage")
    logins = failed("auth.rate-limit-legitimate-traffic", "rate limits lost with redis",
                    ("redis",), impact="minor")
    runs = Runs(replace(POLICY, mutes=(Mute("sagas replayed by hand", T0 + timedelta(hours=2),
                                            check="order.saga-orchestration"),)))
    alert = runs.at(0, [orders, logins])
    assert sent(alert)[0][:2] == ["🚨 INCIDENT ALERT - SEV 3", "Service: auth-service"]
    incident = runs.state.incidents["dependency:redis"]
    assert (incident.severity, incident.services, incident.checks) == (
        "SEV3", ["auth-service"], ["auth.rate-limit-legitimate-traffic"])
    trigger = next(d for d in alert.deliveries if d.notifier == "pagerduty")
    assert trigger.payload["incident"]["severity"] == "SEV3"
    assert trigger.payload["summary"]["verdict"]["severity"] == "SEV3"
    assert "order-service" not in str(trigger.payload["message"])


def test_a_silenced_check_makes_no_outage() -> None:
    # Both order-service checks fail: an outage (SEV1) — unless one of them is silenced.
    sagas = failed("order.saga-orchestration", "2 saga(s) stuck past 15 min")
    webhooks = failed("order.payment-provider-webhooks", "webhook secret rejected",
                      impact="minor")
    runs = Runs(replace(POLICY, mutes=(Mute("sagas replayed by hand", T0 + timedelta(hours=2),
                                            check="order.saga-orchestration"),)))
    alert = runs.at(0, [sagas, webhooks])
    assert sent(alert)[0][0] == "🚨 INCIDENT ALERT - SEV 3"
    assert runs.state.incidents["service:order-service"].severity == "SEV3"
    loud = Runs().at(0, [sagas, webhooks])
    assert sent(loud)[0][0] == "🚨 INCIDENT ALERT - SEV 1"


def test_a_run_that_judged_none_of_a_healing_incidents_checks_escalates_nothing() -> None:
    forged = failed("auth.jwt-secret-configuration", "auth-service accepts forged tokens",
                    impact="security")
    runs = Runs(replace(POLICY, resolve_after=2))
    runs.at(0, [forged])
    healing = runs.at(5, [passed("auth.jwt-secret-configuration")])
    assert healing.notes == ["HEALING service:auth-service: passing 1 of 2 runs before the "
                             "resolution"]
    # pytest -m order-service, 40 minutes in: past SEV1's Level 3, but nothing of it is failing.
    other = runs.at(40, [passed("order.saga-orchestration")])
    assert other.deliveries == []
    assert runs.state.incidents["service:auth-service"].escalation_level == 1


def test_a_run_that_did_not_look_escalates_at_the_incidents_own_severity() -> None:
    forged = failed("auth.jwt-secret-configuration", "auth-service accepts forged tokens",
                    impact="security")
    runs = Runs()
    runs.at(0, [forged])
    other = runs.at(16, [passed("order.saga-orchestration")])  # pytest -m order-service
    assert [d.payload["message"]["lines"][:3] for d in other.deliveries] == [[
        "⏫ INCIDENT ESCALATION - SEV 1", "Service: auth-service",
        "Escalated to: Level 2 — Senior engineer/Team lead (@bob)"]]


def test_external_escalation_names_only_the_incidents_own_teams() -> None:
    dynamo = failed("listing.dynamodb-table-status", "table gone", ("dynamodb",))
    forged = failed("auth.jwt-secret-configuration", "accepts forged", impact="security")
    alert = Runs().at(0, [dynamo, forged])
    external = {d.incident_key: d.payload["summary"]["escalation"]["external"]
                for d in alert.deliveries if d.notifier == "slack"}
    assert external == {
        "service:listing-service": [{"team": "AWS Support", "contact": None,
                                     "why": "infrastructure: dynamodb failing"}],
        "service:auth-service": [{"team": "Security Team", "contact": None,
                                  "why": "security incident"}]}
    auth = next(d for d in alert.deliveries
                if d.notifier == "slack" and d.incident_key == "service:auth-service")
    assert not [line for line in auth.payload["message"]["details"] if "AWS" in line]
    # Each team's contact, from the environment's [contacts].
    runs = Runs(replace(POLICY, external_contacts={"aws_support": "https://aws.example/case"}))
    listing = next(d for d in runs.at(0, [dynamo]).deliveries if d.notifier == "slack")
    assert listing.payload["summary"]["escalation"]["external"][0]["contact"] == \
        "https://aws.example/case"
    assert "External: AWS Support (https://aws.example/case) — infrastructure: dynamodb " \
           "failing" in listing.payload["message"]["details"]


def test_pagerduty_hears_a_severity_change_under_the_same_dedup_key() -> None:
    runs = Runs()
    alert = runs.at(0, [LISTING_REDIS, AI_REDIS])
    better = runs.at(5, [passed("listing.related-systems"), AI_REDIS])  # SEV2 → SEV3
    assert [(d.notifier, d.kind) for d in better.deliveries] == [
        ("pagerduty", "update"), ("slack", "update")]
    retrigger = better.deliveries[0]
    assert retrigger.dedup_key == alert.deliveries[0].dedup_key
    assert retrigger.payload["incident"]["severity"] == "SEV3"
    # An update that changes only the checks is for the chat.
    worse = runs.at(10, [LISTING_REDIS, AI_REDIS])  # back to SEV2: PagerDuty again
    same = runs.at(15, [LISTING_REDIS, AI_REDIS, passed("order.saga-orchestration")])
    assert [d.notifier for d in worse.deliveries] == ["pagerduty", "slack"]
    assert same.deliveries == []
    grown = runs.at(20, [LISTING_REDIS, AI_REDIS, passed("ai.embedding-service-health"),
                         failed("ai.end-to-end-search", "search times out", ("redis",),
                                impact="minor")])  # one more check, still SEV2
    assert [(d.notifier, d.kind) for d in grown.deliveries] == [("slack", "update")]


@pytest.mark.parametrize(("thresholds", "level", "minutes", "expected"), [
    ({"SEV1": {1: 0, 2: 5}}, "SEV2", 500, 3),  # SEV2 keeps its defaults: 60 / 240 min
    ({"SEV1": {1: 0, 2: 5}}, "SEV1", 5, 2),
    ({"SEV1": {1: 0, 2: 5}}, "SEV1", 10_000, 2),  # a shorter list: never Level 3 by time
    ({"SEV3": {1: 0}}, "SEV3", 10_000, 1),
    ({}, "SEV3", 240, 2),
])
def test_a_partial_escalation_section_keeps_the_defaults_of_other_severities(
        thresholds: dict[str, dict[int, float]], level: str, minutes: float,
        expected: int) -> None:
    assert internal_level(level, minutes, thresholds) == expected


def test_the_environments_escalation_policy_merges_with_the_defaults(tmp_path: Path) -> None:
    from unibazzar_health.incidents.config import load_environment, policy
    from unibazzar_health.verdict.policy import DEFAULT_ESCALATION_MINUTES

    path = tmp_path / "prod.toml"
    path.write_text('[environment]\nname = "prod"\n\n[escalation]\nSEV1 = [0, 5, 10]\n\n'
                    '[incident_state]\n')
    built = policy(load_environment(path, {}), "oncall", [])
    assert built.escalation_minutes == {**DEFAULT_ESCALATION_MINUTES,
                                        "SEV1": {1: 0.0, 2: 5.0, 3: 10.0}}
