"""auth-service: issues and verifies JWTs for users in PostgreSQL, behind a login rate
limiter (per source, and per account from one source)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import jwt
import psycopg
from flask import request

from unibazzar_sandbox.layout import HOST, PORTS
from unibazzar_sandbox.seed import check_password
from unibazzar_sandbox.services.common import app_for, layout, make_logger, run, secret

SERVICE = "auth-service"
ISSUER = "unibazzar-auth"
log = make_logger(SERVICE)
app = app_for(SERVICE)
DSN = f"host={HOST} port={PORTS['postgresql']} dbname=auth user=auth_service connect_timeout=2"


# ---- rate limiting and DDoS protection ------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """Login attempts allowed within a sliding window: from one source (flood protection),
    and on one account from one source (brute force; a successful login clears it)."""

    enabled: bool = True
    window_s: float = 10.0
    per_source: int = 1000
    per_account: int = 20


def configured_limits() -> Limits:
    """The limits in force, as the faults say (see docs/sandbox.md):
    faults/auth-service.no-rate-limiting: the limiter is off (no protection at all);
    faults/auth-service.rate-limit-too-low: 2 logins per source per window (legitimate
    traffic blocked)."""
    faults = layout().faults
    if (faults / "auth-service.no-rate-limiting").exists():
        return Limits(enabled=False)
    if (faults / "auth-service.rate-limit-too-low").exists():
        return Limits(per_source=2)
    return Limits()


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: Limits | None = None
        self._by_source: dict[str, deque[float]] = {}
        self._by_account: dict[tuple[str, str], deque[float]] = {}

    def allow(self, source: str, account: str) -> bool:
        """Counts the attempt; False once either window is full."""
        limits, now = configured_limits(), time.monotonic()
        with self._lock:
            if limits != self._limits:
                # New limits start with empty windows, as a redeployed limiter would.
                self._limits = limits
                self._by_source.clear()
                self._by_account.clear()
            if not limits.enabled:
                return True
            windows = (self._by_source.setdefault(source, deque()),
                       self._by_account.setdefault((source, account), deque()))
            for window in windows:
                while window and window[0] <= now - limits.window_s:
                    window.popleft()
            full = (len(windows[0]) >= limits.per_source
                    or len(windows[1]) >= limits.per_account)
            for window in windows:
                window.append(now)
            if len(self._by_account) > 10_000:  # a stand-in: forget idle accounts wholesale
                self._by_account = {k: v for k, v in self._by_account.items() if v}
            return not full

    def headers(self, source: str, account: str) -> dict[str, str]:
        """The limits in force and what is left of them, as IETF's RateLimit-Policy and
        RateLimit headers say it (draft-ietf-httpapi-ratelimit-headers); none while off."""
        limits = self._limits or configured_limits()
        if not limits.enabled:
            return {}
        with self._lock:
            left = {"per-source": limits.per_source - len(self._by_source.get(source, ())),
                    "per-account": (limits.per_account
                                    - len(self._by_account.get((source, account), ())))}
        tightest = min(left, key=lambda name: left[name])
        window = f"{limits.window_s:g}"
        return {"RateLimit-Policy": f'"per-source";q={limits.per_source};w={window}, '
                                    f'"per-account";q={limits.per_account};w={window}',
                "RateLimit": f'"{tightest}";r={max(0, left[tightest])};t={window}'}

    def succeeded(self, source: str, account: str) -> None:
        with self._lock:
            self._by_account.pop((source, account), None)


limiter = RateLimiter()


@app.post("/login")
def login() -> Any:
    body = request.get_json(silent=True) or {}
    email, source = str(body.get("email", "")), str(request.remote_addr)
    allowed = limiter.allow(source, email)
    limits = limiter.headers(source, email)
    if not allowed:
        log.warning("login blocked: rate limited email=%s source=%s", email, source)
        return {"error": "too many login attempts"}, 429, {"Retry-After": "10", **limits}
    answer, status = _login(body, email, source)
    return answer, status, limits


def _login(body: dict[str, Any], email: str, source: str) -> tuple[dict[str, Any], int]:
    try:
        with psycopg.connect(DSN, password=secret("UNIBAZZAR_AUTH_DB_PASSWORD")) as conn:
            row = conn.execute("SELECT password_hash FROM users WHERE email = %s",
                               (body.get("email"),)).fetchone()
    except psycopg.Error as exc:
        log.error("login failed: database unavailable: %s", type(exc).__name__)
        return {"error": "database unavailable"}, 503
    if row is None or not check_password(str(body.get("password", "")), row[0]):
        log.warning("login failed: bad credentials email=%s source=%s", email, source)
        return {"error": "invalid credentials"}, 401
    limiter.succeeded(source, email)
    now = int(time.time())
    token = jwt.encode({"sub": body["email"], "iss": ISSUER, "iat": now, "exp": now + 900},
                       secret("UNIBAZZAR_JWT_SECRET"), algorithm="HS256")
    # Who logged in, and from where: what lets a check tell the canary's own logins from a
    # stolen password's (auth_logs.email, auth_logs.source).
    log.info("login ok email=%s source=%s", email, source)
    return {"token": token, "token_type": "Bearer", "expires_in": 900}, 200


def accepts_forged_tokens() -> bool:
    """faults/auth-service.accept-forged-tokens: signatures go unchecked (a verifier
    misconfigured to trust the token's own header, the classic alg-none hole)."""
    return (layout().faults / "auth-service.accept-forged-tokens").exists()


def verification_key() -> str:
    """faults/auth-service.jwt-verify-key: the verifier's key is the file's, not the one
    tokens are signed with (a secret rotated on one side only)."""
    rotated = layout().faults / "auth-service.jwt-verify-key"
    if rotated.exists():
        return rotated.read_text().strip() or "a-key-the-signer-never-got"
    return secret("UNIBAZZAR_JWT_SECRET")


@app.post("/verify")
def verify() -> Any:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    try:
        claims = jwt.decode(token, verification_key(), algorithms=["HS256"],
                            issuer=ISSUER, options={"require": ["exp", "sub", "iss"],
                                                    "verify_signature":
                                                        not accepts_forged_tokens()})
    except jwt.PyJWTError as exc:
        log.warning("token rejected: %s", type(exc).__name__)
        return {"valid": False, "reason": type(exc).__name__}, 401
    return {"valid": True, "sub": claims["sub"]}


if __name__ == "__main__":
    run(app, SERVICE)
