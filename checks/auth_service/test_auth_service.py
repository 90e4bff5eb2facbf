"""auth-service — login failures, 401 errors, JWT validation failures."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.authlogs import LoginActivity
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
    login = http.request("auth-service", "POST", ctx.service_url("auth-service", "/login"),
                         deadline, json={"email": email, "password": password})
    token = login.body.get("token") if isinstance(login.body, dict) else None
    seen = JwtObservation(login_status=login.status, token_issued=bool(token))
    if not token:
        return seen

    def verify(candidate: str) -> int:
        return http.request("auth-service", "POST", ctx.service_url("auth-service", "/verify"),
                            deadline, headers={"Authorization": f"Bearer {candidate}"}).status

    seen.genuine_token_verify_status = verify(token)
    seen.forged_token_verify_status = {name: verify(t) for name, t in _forgeries(token).items()}
    return seen


@runbook_check("auth.jwt-secret-configuration", observe=observe_jwt)
def test_step2_jwt_secret_configuration(observed: JwtObservation) -> None:
    accepted = [name for name, status in observed.forged_token_verify_status.items()
                if status == 200]
    if accepted:
        raise Finding(f"auth-service accepts forged tokens: {', '.join(accepted)}",
                      impact="security")
    assert observed.token_issued, (
        f"canary login failed: HTTP {observed.login_status}, no token issued")
    assert observed.genuine_token_verify_status == 200, (
        f"a freshly issued token does not verify: HTTP {observed.genuine_token_verify_status}")


# ---- 3. Review authentication logs for patterns -------------------------------------------
def observe_auth_logs(ctx: CheckContext) -> LoginActivity:
    from unibazzar_health.authlogs import login_activity
    from unibazzar_health.probes import kubernetes

    rules = ctx.env.spec.auth_logs
    logs = kubernetes.pod_logs(ctx.kube(), ctx.deployment("auth-service"),
                               since_seconds=int(rules.window_minutes * 60))
    lines = (line for text in logs.values() for line in text.splitlines())
    return login_activity(lines, rules.success, rules.failure, rules.source)


@runbook_check("auth.authentication-logs", observe=observe_auth_logs)
def test_step3_authentication_logs(observed: LoginActivity, env: Environment) -> None:
    rules = env.spec.auth_logs
    if observed.failures < rules.failed_min:
        return  # too few failed logins in the window to call it a pattern
    window = f"{rules.window_minutes:g} min"
    top = observed.top_source()
    if top and top[1] / observed.failures >= rules.one_source_share:
        raise Finding(f"brute force? {top[1]} of {observed.failures} failed logins in the last "
                      f"{window} come from {top[0]}", impact="security")
    if observed.failed_share >= rules.failed_share:
        raise Finding(f"failed-login spike: {observed.failures} of "
                      f"{observed.failures + observed.successes} logins failed in the last "
                      f"{window} ({observed.failed_share:.0%})", impact="degradation")
