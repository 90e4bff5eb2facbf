"""auth-service — login failures, 401 errors, JWT validation failures."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.config.environment import Environment
from unibazzar_health.config.platform import Thresholds
from unibazzar_health.judges.authlogs import LoginActivity
from unibazzar_health.judges.runbook import CheckContext, Finding, NotConfigured, runbook_check
from unibazzar_health.probes import FailureKind, ProbeFailure
from unibazzar_health.probes.http import HttpAnswer
from unibazzar_health.probes.postgresql import Activity


# ---- 1. Check database connectivity to PostgreSQL -----------------------------------------
def observe_auth_database(ctx: CheckContext) -> dict[str, Any]:
    from unibazzar_health.probes import postgresql

    connected = postgresql.connectivity(ctx.postgres("auth"))
    # Connection usage as the database-performance check reads it: one reading per run.
    return {"connectivity": connected, "activity": ctx.database_activity("auth")}


@runbook_check("auth.postgresql-connectivity", observe=observe_auth_database)
def test_step1_database_connectivity_to_postgresql(observed: dict[str, Any],
                                                   thresholds: Thresholds) -> None:
    activity: Activity = observed["activity"]
    if activity.connection_usage >= thresholds.db_connection_usage:
        raise Finding(
            f"auth database connections near exhaustion: {activity.connections}/"
            f"{activity.max_connections} ({activity.connection_usage:.0%} >= "
            f"{thresholds.db_connection_usage:.0%})", impact="degradation")


# ---- 2. Verify JWT secret configuration ---------------------------------------------------
@dataclass
class JwtObservation:
    login_status: int
    token_issued: bool
    login_url: str = ""
    verify_url: str = ""
    login_error: str | None = None  # the login answer's "error", as auth-service words it
    genuine_token_verify_status: int | None = None
    # forgery -> HTTP status the verifier answered; 200 would mean it was accepted
    forged_token_verify_status: dict[str, int] = field(default_factory=dict)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forgeries(token: str) -> dict[str, str]:
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    header, _, signature = token.split(".")
    tampered = {**claims, "sub": "admin@unibazzar.test"}
    return {
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "wrong-key": jwt.encode(claims, secrets.token_hex(32), algorithm="HS256"),
        "tampered-claims": f"{header}.{_b64(tampered)}.{signature}",
    }


# The canary's normal rate: a few logins in a row, as a user signing in on a few devices.
CANARY_LOGINS = 3


def canary_logins(ctx: CheckContext) -> list[HttpAnswer]:
    """The canary's logins of this run, made once for every check that judges them (its
    token in step 2, its rate in step 4), and always before step 4's burst: our own burst
    must never be what refuses the canary."""
    from unibazzar_health.probes import http

    def log_in() -> list[HttpAnswer]:
        email, password = ctx.canary_login()
        url, deadline = ctx.service_url("auth-service", "/login"), ctx.env.deadline("http")
        return [http.request("auth-service", "POST", url, deadline,
                             json={"email": email, "password": password})
                for _ in range(CANARY_LOGINS)]

    return ctx.shared("auth.canary-logins", log_in)


def observe_jwt(ctx: CheckContext) -> JwtObservation:
    from unibazzar_health.probes import http

    deadline = ctx.env.deadline("http")
    login_url = ctx.service_url("auth-service", "/login")
    verify_url = ctx.service_url("auth-service", "/verify")
    answers = canary_logins(ctx)
    # A refusal by the rate limiter is step 4's: the first login it let through is judged.
    login = next((a for a in answers if a.status != 429), answers[0])
    body = login.body if isinstance(login.body, dict) else {}
    token = body.get("token")
    error = body.get("error")
    seen = JwtObservation(login_status=login.status, token_issued=bool(token),
                          login_url=login_url, verify_url=verify_url,
                          login_error=str(error)[:200] if error else None)
    if not token:
        return seen

    def verify(candidate: str) -> int:
        return http.request("auth-service", "POST", verify_url, deadline,
                            headers={"Authorization": f"Bearer {candidate}"}).status

    seen.genuine_token_verify_status = verify(token)
    seen.forged_token_verify_status = {name: verify(t) for name, t in _forgeries(token).items()}
    return seen


def _server_error(observed: JwtObservation) -> ProbeFailure | None:
    """A 5xx from auth-service for the canary's login, or for verifying its genuine token."""
    if observed.login_status >= 500:
        error = f" ({observed.login_error})" if observed.login_error else ""
        return ProbeFailure("auth-service", observed.login_url, FailureKind.UNEXPECTED_ANSWER,
                            f"canary login answered HTTP {observed.login_status}{error}")
    status = observed.genuine_token_verify_status
    if status is not None and status >= 500:
        return ProbeFailure("auth-service", observed.verify_url, FailureKind.UNEXPECTED_ANSWER,
                            f"verifying a freshly issued token answered HTTP {status}")
    return None


@runbook_check("auth.jwt-secret-configuration", observe=observe_jwt)
def test_step2_jwt_secret_configuration(observed: JwtObservation) -> None:
    accepted = [name for name, status in observed.forged_token_verify_status.items()
                if status == 200]
    if accepted:
        # A verifier bug, not a leaked secret: fix and redeploy the verifier, then revoke what
        # it let through (the mode's fixes), never "rotate JWT secrets" alone.
        raise Finding(f"auth-service accepts forged tokens: {', '.join(accepted)}",
                      impact="security", mode="forged-token-accepted")
    if observed.login_status == 429:
        raise Finding("every canary login was rate-limited (HTTP 429): its token could not be "
                      "checked (auth.rate-limit-legitimate-traffic judges the limits)",
                      impact="degradation")
    failing = _server_error(observed)
    if failing:
        # auth-service itself is failing, not its secrets: restart or roll it back (the
        # catalog's auth-service.unexpected_answer), never "rotate JWT secrets". Degradation,
        # not outage: one canary login cannot say every login fails (scope-and-impact judges
        # the service as a whole).
        raise Finding(f"auth-service is failing: {failing.problem}", impact="degradation",
                      failures=(failing,))
    if not observed.token_issued:
        # One canary refused (its own password as likely as every login): a degradation, as
        # a 5xx above, never the catalog's outage; scope-and-impact's share, or every check
        # of auth-service failing, says whether logins fail for everyone.
        raise Finding(f"canary login failed: HTTP {observed.login_status}, no token issued "
                      "(one canary: not an outage unless auth-service is down)",
                      impact="degradation")
    if observed.genuine_token_verify_status != 200:
        # Its own token refused: signer and verifier hold different keys.
        raise Finding(f"a freshly issued token does not verify: HTTP "
                      f"{observed.genuine_token_verify_status}", mode="token-rejected")


# ---- 3. Review authentication logs for patterns -------------------------------------------
def observe_auth_logs(ctx: CheckContext) -> LoginActivity:
    from unibazzar_health.judges.authlogs import login_activity
    from unibazzar_health.probes import kubernetes

    rules = ctx.env.spec.auth_logs
    canary = ctx.env.spec.canary
    logs = kubernetes.pod_logs(ctx.kube(), ctx.deployment("auth-service"),
                               since_seconds=int(rules.window_minutes * 60))
    lines = (line for text in logs.values() for line in text.splitlines())
    return login_activity(lines, rules.success, rules.failure, rules.source,
                          blocked=rules.blocked, email=rules.email,
                          canary=canary.email if canary else None,
                          ignore=canary.probe_account if canary else None)


@runbook_check("auth.authentication-logs", observe=observe_auth_logs)
def test_step3_authentication_logs(observed: LoginActivity, env: Environment) -> None:
    rules = env.spec.auth_logs
    window = f"{rules.window_minutes:g} min"
    canary = env.spec.canary
    if canary and canary.known_sources:
        # Only our checks know the canary's password: a login from elsewhere means it is
        # out, whatever the numbers below say.
        strangers = {source: n for source, n in observed.canary_logins.items()
                     if source not in canary.known_sources}
        if strangers:
            raise Finding(
                f"canary account {canary.email} logged in from an unknown source in the last "
                f"{window}: " + ", ".join(f"{s} ({n} login(s))" for s, n in strangers.items())
                + f"; it logs in only from {', '.join(canary.known_sources)}",
                impact="security", mode="canary-compromised")
    if observed.failures < rules.failed_min:
        return  # too few failed logins in the window to call it a pattern
    top = observed.top_source()
    if top and top[1] / observed.failures >= rules.one_source_share:
        source, attempts = top
        blocked = observed.blocked_by_source.get(source, 0)
        # An attack under way that nothing stops is the runbook's security breach (SEV1),
        # higher than a limiter merely off (auth.rate-limit-protection, SEV2); SEV3 while
        # the rate limiter refuses most of it.
        held = blocked * 2 > attempts
        raise Finding(f"brute-force attempt{', being blocked' if held else ''}: {attempts} of "
                      f"{observed.failures} failed logins in the last {window} come from "
                      f"{source}, {blocked} of them blocked",
                      impact="security-attempt-blocked" if held else "security-attempt",
                      mode="brute-force")
    if observed.failed_share >= rules.failed_share:
        raise Finding(f"failed-login spike: {observed.failures} of "
                      f"{observed.failures + observed.successes} logins failed in the last "
                      f"{window} ({observed.failed_share:.0%})", impact="degradation")


# ---- 4. Check rate limiting and DDoS protection -------------------------------------------
def observe_canary_rate(ctx: CheckContext) -> dict[str, Any]:
    return {"url": ctx.service_url("auth-service", "/login"),
            "statuses": [answer.status for answer in canary_logins(ctx)]}


@runbook_check("auth.rate-limit-legitimate-traffic", observe=observe_canary_rate)
def test_step4_legitimate_traffic_is_not_rate_limited(observed: dict[str, Any]) -> None:
    statuses = observed["statuses"]
    # Only 429 is this step's: any other refusal is step 2's to judge.
    blocked = [n for n, status in enumerate(statuses, 1) if status == 429]
    if blocked:
        raise Finding(f"legitimate traffic is rate-limited: the canary's login {blocked[0]} of "
                      f"{len(statuses)} in a row was answered HTTP 429 (too many requests)",
                      impact="degradation")


def observe_stated_limits(ctx: CheckContext) -> dict[str, Any]:
    """Read-only: the login limits auth-service states in the headers of the canary's own
    logins (no request of its own), so an environment that sends no burst gets an answer."""
    from dataclasses import asdict

    from unibazzar_health.judges.ratelimits import stated_limits

    service = ctx.require("services.auth-service", ctx.env.spec.service("auth-service"))
    answers = canary_logins(ctx)
    stated = next((limits for limits in map(stated_limits, (a.headers for a in answers))
                   if limits), None)
    if stated is None and not service.rate_limit_headers:
        raise NotConfigured("services.auth-service.rate_limit_headers")
    return {"url": ctx.service_url("auth-service", "/login"), "logins": len(answers),
            "statuses": [a.status for a in answers],
            "headers": [a.headers for a in answers],
            "policies": [asdict(p) for p in stated.policies] if stated else [],
            "remaining_after": (stated_limits(answers[-1].headers) or stated).remaining
            if stated else None}


@runbook_check("auth.rate-limit-configured", observe=observe_stated_limits)
def test_step4_login_limits_are_stated_and_let_legitimate_traffic_through(
        observed: dict[str, Any]) -> None:
    from unibazzar_health.judges.ratelimits import RateLimitPolicy, StatedLimits

    if any(status >= 500 for status in observed["statuses"]):
        return  # auth-service itself failing is step 2's finding (and the scope check's)
    stated = StatedLimits(tuple(RateLimitPolicy(**p) for p in observed["policies"]),
                          observed["remaining_after"])
    policies, tightest = stated.policies, stated.tightest
    if tightest is None:
        # Headers gone can be a proxy that strips them as well as a limiter switched off:
        # worth a look by day, not a page at night (auth.rate-limit-protection's burst,
        # where allowed, proves the limiter off).
        raise Finding(f"auth-service's logins state no rate limit: none of the canary's "
                      f"{observed['logins']} logins carried RateLimit-Policy, RateLimit-Limit "
                      f"or X-RateLimit-Limit, which the environment says it sends "
                      f"(services.auth-service.rate_limit_headers): its rate limiter may be "
                      f"off", impact="non-critical")
    if tightest.quota < observed["logins"]:
        raise Finding(f"login rate limit set below legitimate traffic: {tightest.describe()} "
                      f"is fewer than the canary's normal {observed['logins']} logins in a row "
                      f"(stated: {'; '.join(p.describe() for p in policies)})",
                      impact="degradation")


# The burst stops after this many 5xx answers in a row: auth-service is failing, and its
# limiter cannot be judged.
SERVER_ERRORS_STOP = 3


def _failing(statuses: list[int]) -> bool:
    last = statuses[-SERVER_ERRORS_STOP:]
    return len(last) == SERVER_ERRORS_STOP and all(status >= 500 for status in last)


def observe_rate_limit_burst(ctx: CheckContext) -> dict[str, Any]:
    """A bounded burst of logins from this host for an account that does not exist, until
    the first HTTP 429: a write-like probe (it fills that account's limiter window and the
    auth log), only where the environment sets canary.rate_limit_probe."""
    import secrets
    import time

    from unibazzar_health.probes import DeadlineExceeded, http

    canary = ctx.require("canary", ctx.env.spec.canary)
    if not canary.rate_limit_probe:
        raise NotConfigured("canary.rate_limit_probe")
    url, deadline = ctx.service_url("auth-service", "/login"), ctx.env.deadline("http")
    # First, and its failure is this check's too: an auth-service that does not answer the
    # canary cannot be judged by a burst (which would only wait for it again).
    canary_logins(ctx)
    # Within about two deadlines, whatever the size of the burst.
    budget, started = 2 * deadline, time.monotonic()
    statuses: list[int] = []
    password = secrets.token_urlsafe(16)
    while len(statuses) < canary.rate_limit_burst:
        if time.monotonic() - started > budget:
            raise DeadlineExceeded("auth-service", url, budget,
                                   f"answer a burst of {canary.rate_limit_burst} logins")
        answer = http.request("auth-service", "POST", url, deadline,
                              json={"email": canary.probe_account, "password": password})
        statuses.append(answer.status)
        if answer.status == 429 or _failing(statuses):
            break
    failing = _failing(statuses)
    return {"url": url, "account": canary.probe_account, "burst": canary.rate_limit_burst,
            "sent": len(statuses), "seconds": round(time.monotonic() - started, 3),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "limited_after": statuses.index(429) if 429 in statuses else None,
            # Failing logins say nothing of the limiter (and each would log an error).
            "not_judged": "auth-service answers logins with 5xx" if failing else None}


@runbook_check("auth.rate-limit-protection", observe=observe_rate_limit_burst)
def test_step4_a_burst_from_one_source_is_rate_limited(observed: dict[str, Any]) -> None:
    if observed["not_judged"]:
        return  # auth-service itself failing is step 2's finding (and the scope check's)
    if observed["limited_after"] is None:
        answers = ", ".join(f"{n} x HTTP {s}" for s, n in observed["statuses"].items())
        # A control that is off, with no attack seen: the catalog's security-weakness (SEV2).
        raise Finding(f"no rate limiting: a burst of {observed['sent']} logins from one source "
                      f"in {observed['seconds']:.1f} s was never answered HTTP 429 ({answers})")
