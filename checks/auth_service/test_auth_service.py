"""auth-service — login failures, 401 errors, JWT validation failures."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.authlogs import LoginActivity
from unibazzar_health.probes import FailureKind, ProbeFailure
from unibazzar_health.probes.postgresql import Activity
from unibazzar_health.runbook import CheckContext, Finding, runbook_check
from unibazzar_health.settings import Environment, Thresholds


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


def observe_jwt(ctx: CheckContext) -> JwtObservation:
    from unibazzar_health.probes import http

    email, password = ctx.canary_login()
    deadline = ctx.env.deadline("http")
    login_url = ctx.service_url("auth-service", "/login")
    verify_url = ctx.service_url("auth-service", "/verify")
    login = http.request("auth-service", "POST", login_url, deadline,
                         json={"email": email, "password": password})
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
        raise Finding(f"auth-service accepts forged tokens: {', '.join(accepted)}",
                      impact="security")
    failing = _server_error(observed)
    if failing:
        # auth-service itself is failing, not its secrets: restart or roll it back (the
        # catalog's auth-service.unexpected_answer), never "rotate JWT secrets". Degradation,
        # not outage: one canary login cannot say every login fails (scope-and-impact judges
        # the service as a whole).
        raise Finding(f"auth-service is failing: {failing.problem}", impact="degradation",
                      failures=(failing,))
    assert observed.token_issued, (
        f"canary login failed: HTTP {observed.login_status}, no token issued")
    assert observed.genuine_token_verify_status == 200, (
        f"a freshly issued token does not verify: HTTP {observed.genuine_token_verify_status}")


# ---- 3. Review authentication logs for patterns -------------------------------------------
def observe_auth_logs(ctx: CheckContext) -> LoginActivity:
    from unibazzar_health.authlogs import login_activity
    from unibazzar_health.probes import kubernetes

    rules = ctx.env.spec.auth_logs
    canary = ctx.env.spec.canary
    logs = kubernetes.pod_logs(ctx.kube(), ctx.deployment("auth-service"),
                               since_seconds=int(rules.window_minutes * 60))
    lines = (line for text in logs.values() for line in text.splitlines())
    return login_activity(lines, rules.success, rules.failure, rules.source,
                          blocked=rules.blocked, email=rules.email,
                          canary=canary.email if canary else None)


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
                impact="security")
    if observed.failures < rules.failed_min:
        return  # too few failed logins in the window to call it a pattern
    top = observed.top_source()
    if top and top[1] / observed.failures >= rules.one_source_share:
        source, attempts = top
        blocked = observed.blocked_by_source.get(source, 0)
        # An attempt is not a breach (a login that worked is, as the canary's above): SEV2,
        # and SEV3 while the rate limiter refuses most of it.
        held = blocked * 2 > attempts
        raise Finding(f"brute-force attempt{', being blocked' if held else ''}: {attempts} of "
                      f"{observed.failures} failed logins in the last {window} come from "
                      f"{source}, {blocked} of them blocked",
                      impact="security-attempt-blocked" if held else "security-attempt")
    if observed.failed_share >= rules.failed_share:
        raise Finding(f"failed-login spike: {observed.failures} of "
                      f"{observed.failures + observed.successes} logins failed in the last "
                      f"{window} ({observed.failed_share:.0%})", impact="degradation")
