"""The runbook's Incident Classification as the checks apply it, without a platform: each
check's observe function over fake probes, then its test function's verdict.

- reconciliation: a mismatch is a payment processing issue (SEV2); money lost (a charge
  with no order, an order charged twice) is data loss (SEV1);
- authentication logs: a brute-force attack under way that nothing stops is the runbook's
  security breach (SEV1; SEV3 while it is being blocked), above a rate limiter merely off
  (SEV2); the canary logging in from an unknown source is one too (SEV1);
- JWT: auth-service answering the canary with a 5xx is auth-service failing (SEV2), with
  the failure that picks its fixes.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from unibazzar_health.config.environment import Environment, load_environment
from unibazzar_health.config.platform import AuthLogs
from unibazzar_health.judges.authlogs import LoginActivity, login_activity
from unibazzar_health.judges.runbook import CheckContext, Finding
from unibazzar_health.probes import FailureKind, ProbeFailure
from unibazzar_health.probes.payments import PaymentIntent, _intent
from unibazzar_health.verdict.catalog import load_catalog

from conftest import check_module

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()

ENV = """
[environment]
name = "rules"

[thresholds]
reconcile_window_minutes = 1440
reconcile_grace_minutes = 5

[services.auth-service]
url = "http://auth.internal:8080"

[postgresql.orders]
dsn = "postgresql://health@db.internal:5432/orders"

[payments]
api_url = "https://api.stripe.com"
api_key_env = "STRIPE_API_KEY"
webhook_url = "https://orders.unibazzar.example/webhooks/stripe"
webhook_secret_env = "STRIPE_WEBHOOK_SECRET"

[canary]
email = "canary@unibazzar.test"
password_env = "CANARY_PASSWORD"
known_sources = ["10.0.0.5"]

[auth_logs]
failed_min = 10
"""




orders_checks = check_module("order_service/test_order_service.py", "rules")
auth_checks = check_module("auth_service/test_auth_service.py", "rules")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    path: Path = tmp_path_factory.mktemp("env") / "rules.toml"
    path.write_text(ENV)
    secrets = ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "CANARY_PASSWORD")
    return load_environment(path, environ=dict.fromkeys(secrets, "s3cr3t"))


def verdict(test: Any, *args: Any) -> Finding | None:
    """What a check's test function concluded: its Finding, or None when it passed."""
    try:
        test(*args)
    except Finding as finding:
        return finding
    return None


# ---- reconciliation ---------------------------------------------------------------------
NOW = time.time()
OLD = int(NOW - 3600)  # past the grace period


def paid(order_id: str, intent_id: str, amount: int = 500) -> tuple[Any, ...]:
    return (order_id, "paid", intent_id, amount, NOW - 3600)


def payment(intent_id: str, order_id: str | None, amount: int = 500, *,
            status: str = "succeeded", created: int = OLD, refunded: int = 0) -> PaymentIntent:
    return PaymentIntent(intent_id, status, amount, "eur", created, order_id, refunded)


def reconcile(monkeypatch: pytest.MonkeyPatch, env: Environment, orders: list[tuple[Any, ...]],
              page: list[PaymentIntent], *, pending: tuple[str, ...] = ()) -> Finding | None:
    """Reconciliation over a database holding ``orders`` (plus ``pending`` orders that have
    no payment recorded) and a provider holding ``page``."""
    from unibazzar_health.probes import payments, postgresql

    statuses = {row[0]: row[1] for row in orders} | dict.fromkeys(pending, "pending")

    def fetch(target: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if "ANY(%s)" in sql:
            return [(o, statuses[o]) for o in params[0] if o in statuses]
        return orders

    # The check's clock is this module's NOW: its ages read the same whenever it runs.
    monkeypatch.setattr(orders_checks, "time", SimpleNamespace(time=lambda: NOW))
    monkeypatch.setattr(postgresql, "fetch", fetch)
    monkeypatch.setattr(payments, "recent_payment_intents", lambda target, limit: page)
    monkeypatch.setattr(payments, "payment_intent",
                        lambda target, intent_id: {i.id: i for i in page}.get(intent_id))
    observed = orders_checks.observe_reconciliation(CheckContext(env))
    return verdict(orders_checks.test_orders_and_payments_reconcile, observed)


def test_orders_and_payments_that_agree_pass(monkeypatch: pytest.MonkeyPatch,
                                             env: Environment) -> None:
    assert reconcile(monkeypatch, env, [paid("o-1", "pi_1")], [payment("pi_1", "o-1")]) is None


def test_a_mismatch_without_money_lost_is_a_payment_processing_issue(
        monkeypatch: pytest.MonkeyPatch, env: Environment) -> None:
    """Paid in the database but unknown to the provider, a failed payment, an amount that
    differs, a lost webhook (charged, the order still pending): SEV2 payments."""
    finding = reconcile(
        monkeypatch, env,
        [paid("o-1", "pi_missing"), paid("o-2", "pi_2"), paid("o-3", "pi_3", 900)],
        [payment("pi_2", "o-2", status="requires_payment_method"), payment("pi_3", "o-3"),
         payment("pi_4", "o-4")], pending=("o-4",))
    assert finding is not None
    assert finding.impact == "payments"
    assert CATALOG.severity_of("payments").level == "SEV2"
    assert str(finding) == (
        "4 order(s) disagree with the payment provider: order o-1 is paid in the database, "
        "but the provider has no payment pi_missing; order o-2 is paid in the database, but "
        "its payment pi_2 is requires_payment_method; order o-3 is 900 cents, its payment "
        "pi_3 500; payment pi_4 (created 60 min ago) succeeded for order o-4, which is "
        "'pending' in the orders database")


def test_a_charge_with_no_order_is_money_lost(monkeypatch: pytest.MonkeyPatch,
                                              env: Environment) -> None:
    finding = reconcile(monkeypatch, env, [], [payment("pi_9", "o-gone")])
    assert finding is not None
    assert finding.impact == "data"
    assert CATALOG.severity_of("data").level == "SEV1"
    assert str(finding) == (
        "1 order(s) disagree with the payment provider (1 with money lost): payment pi_9 "
        "(created 60 min ago) succeeded for order o-gone, which does not exist in the orders "
        "database")


def test_an_order_charged_twice_is_money_lost_and_named_first(
        monkeypatch: pytest.MonkeyPatch, env: Environment) -> None:
    finding = reconcile(
        monkeypatch, env, [paid("o-1", "pi_1"), paid("o-2", "pi_missing")],
        [payment("pi_1", "o-1"), payment("pi_1b", "o-1", created=OLD + 30)])
    assert finding is not None
    assert finding.impact == "data"
    assert str(finding) == (
        "2 order(s) disagree with the payment provider (1 with money lost): order o-1 was "
        "charged 2 times: payments pi_1, pi_1b succeeded; order o-2 is paid in the database, "
        "but the provider has no payment pi_missing")


def test_no_money_is_lost_by_a_refunded_or_recent_payment(
        monkeypatch: pytest.MonkeyPatch, env: Environment) -> None:
    """A duplicate refunded in full took nothing; a payment within the grace period may
    still have its webhook in flight."""
    recent = int(NOW - 60)
    assert reconcile(monkeypatch, env, [paid("o-1", "pi_1")], [
        payment("pi_1", "o-1"), payment("pi_1b", "o-1", refunded=500),
        payment("pi_new", "o-new", created=recent)]) is None


def test_a_payments_refunds_are_read_from_its_charges() -> None:
    """Stripe lists them on the charge: latest_charge (expanded, or API versions that
    inline it) or, before 2022-11-15, the charges list; an id alone says nothing."""
    base = {"id": "pi_1", "status": "succeeded", "amount": 500, "created": OLD}
    assert _intent(base | {"latest_charge": {"amount_refunded": 500}}).amount_refunded == 500
    assert _intent(base | {"charges": {"data": [{"amount_refunded": 200}]}}).amount_refunded \
        == 200
    assert _intent(base | {"latest_charge": "ch_1"}).amount_refunded == 0


# ---- authentication logs ----------------------------------------------------------------
RULES = AuthLogs()
STAMP = "2026-11-27 02:50:31,429"  # milliseconds 429: not a rate limiter's 429


def activity(lines: list[str]) -> LoginActivity:
    return login_activity(lines, RULES.success, RULES.failure, RULES.source,
                          blocked=RULES.blocked, email=RULES.email,
                          canary="canary@unibazzar.test")


def failed(source: str) -> str:
    return f"{STAMP} WARNING auth-service login failed: bad credentials source={source}"


def blocked(source: str) -> str:
    return f"{STAMP} WARNING auth-service login blocked: rate limited source={source}"


def logged_in(email: str, source: str) -> str:
    return f"{STAMP} INFO auth-service login ok email={email} source={source}"


def judge_logs(lines: list[str], env: Environment) -> Finding | None:
    return verdict(auth_checks.test_step3_authentication_logs, activity(lines), env)


def test_a_brute_force_that_nothing_stops_is_sev1_above_a_limiter_that_is_off(
        env: Environment) -> None:
    """An attack under way and not blocked is the higher one (SEV1); the rate limiter found
    off with no attack seen is a weakness (SEV2)."""
    finding = judge_logs([failed("10.6.6.6")] * 12, env)
    assert finding is not None
    assert (finding.impact, finding.mode) == ("security-attempt", "brute-force")
    assert CATALOG.severity_of("security-attempt").level == "SEV1"
    limiter_off = CATALOG.check("auth.rate-limit-protection").impact
    assert (limiter_off, CATALOG.severity_of(limiter_off).level) == ("security-weakness", "SEV2")
    assert str(finding) == ("brute-force attempt: 12 of 12 failed logins in the last 15 min "
                            "come from 10.6.6.6, 0 of them blocked")


def test_a_brute_force_attempt_being_blocked_is_sev3(env: Environment) -> None:
    finding = judge_logs([failed("10.6.6.6")] * 3 + [blocked("10.6.6.6")] * 9, env)
    assert finding is not None
    assert finding.impact == "security-attempt-blocked"
    assert CATALOG.severity_of("security-attempt-blocked").level == "SEV3"
    assert str(finding) == ("brute-force attempt, being blocked: 12 of 12 failed logins in "
                            "the last 15 min come from 10.6.6.6, 9 of them blocked")


def test_half_blocked_is_not_being_blocked(env: Environment) -> None:
    finding = judge_logs([failed("10.6.6.6")] * 6 + [blocked("10.6.6.6")] * 6, env)
    assert finding is not None and finding.impact == "security-attempt"


def test_the_canary_logging_in_from_an_unknown_source_is_a_breach(env: Environment) -> None:
    finding = judge_logs([logged_in("canary@unibazzar.test", "10.0.0.5"),
                          logged_in("canary@unibazzar.test", "203.0.113.9")] * 2, env)
    assert finding is not None
    assert finding.impact == "security"
    assert CATALOG.severity_of("security").level == "SEV1"
    assert str(finding) == (
        "canary account canary@unibazzar.test logged in from an unknown source in the last "
        "15 min: 203.0.113.9 (2 login(s)); it logs in only from 10.0.0.5")


def test_the_canary_from_its_known_source_or_no_known_sources_passes(
        env: Environment, tmp_path: Path) -> None:
    assert judge_logs([logged_in("canary@unibazzar.test", "10.0.0.5")] * 3, env) is None
    unjudged = tmp_path / "unjudged.toml"
    unjudged.write_text(ENV.replace('known_sources = ["10.0.0.5"]\n', ""))
    without = load_environment(unjudged, environ=dict.fromkeys(
        ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "CANARY_PASSWORD"), "s3cr3t"))
    assert judge_logs([logged_in("canary@unibazzar.test", "203.0.113.9")], without) is None


# ---- JWT: a 5xx is auth-service failing -------------------------------------------------
def observe_jwt_against(monkeypatch: pytest.MonkeyPatch, env: Environment,
                        answers: dict[str, tuple[int, Any]]) -> Any:
    from unibazzar_health.probes import http

    def request(backend: str, method: str, url: str, deadline: float,
                **kwargs: Any) -> http.HttpAnswer:
        status, body = answers[url.rsplit("/", 1)[-1]]
        return http.HttpAnswer(status=status, elapsed_ms=1.0, body=body)

    monkeypatch.setattr(http, "request", request)
    return auth_checks.observe_jwt(CheckContext(env))


def test_a_canary_login_answered_with_a_5xx_is_a_degradation_of_auth_service(
        monkeypatch: pytest.MonkeyPatch, env: Environment) -> None:
    observed = observe_jwt_against(monkeypatch, env,
                                   {"login": (503, {"error": "database unavailable"})})
    finding = verdict(auth_checks.test_step2_jwt_secret_configuration, observed)
    assert finding is not None
    assert finding.impact == "degradation"
    assert str(finding) == ("auth-service is failing: canary login answered HTTP 503 "
                            "(database unavailable)")
    assert finding.failures == (ProbeFailure(
        "auth-service", "http://auth.internal:8080/login", FailureKind.UNEXPECTED_ANSWER,
        "canary login answered HTTP 503 (database unavailable)"),)


def test_a_genuine_token_answered_with_a_5xx_is_a_degradation_too(
        monkeypatch: pytest.MonkeyPatch, env: Environment) -> None:
    import jwt

    token = jwt.encode({"sub": "canary@unibazzar.test"}, "k" * 32, algorithm="HS256")
    observed = observe_jwt_against(monkeypatch, env, {"login": (200, {"token": token}),
                                                      "verify": (502, "Bad Gateway")})
    finding = verdict(auth_checks.test_step2_jwt_secret_configuration, observed)
    assert finding is not None and finding.impact == "degradation"
    assert [f.target for f in finding.failures] == ["http://auth.internal:8080/verify"]


def test_a_refused_canary_login_is_a_degradation_as_a_5xx_is_not_an_outage(
        monkeypatch: pytest.MonkeyPatch, env: Environment) -> None:
    """One canary refused (HTTP 401) is rated as one canary answered 5xx: a degradation
    (SEV2), not the catalog's outage (SEV1); whether every login fails is scope-and-impact's
    share, or every auth-service check failing (severity.service_outages)."""
    observed = observe_jwt_against(monkeypatch, env,
                                   {"login": (401, {"error": "invalid credentials"})})
    finding = verdict(auth_checks.test_step2_jwt_secret_configuration, observed)
    assert finding is not None
    assert (finding.impact, CATALOG.severity_of(finding.impact).level) == ("degradation",
                                                                            "SEV2")
    assert str(finding) == ("canary login failed: HTTP 401, no token issued (one canary: not "
                            "an outage unless auth-service is down)")
    server_error = verdict(auth_checks.test_step2_jwt_secret_configuration,
                           observe_jwt_against(monkeypatch, env, {"login": (503, {})}))
    assert server_error is not None and server_error.impact == finding.impact


def test_a_brute_force_attempt_calls_the_security_team_too() -> None:
    """The runbook's External Escalation: Security Team for security incidents, an attempt
    included."""
    from unibazzar_health.verdict.policy import external_teams

    for impact in ("security", "security-attempt", "security-attempt-blocked"):
        assert [team for team, _ in external_teams([impact], [])] == ["security_team"]
    assert external_teams(["degradation"], []) == []
