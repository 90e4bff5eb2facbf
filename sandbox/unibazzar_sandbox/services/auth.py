"""auth-service: issues and verifies JWTs for users in PostgreSQL."""

from __future__ import annotations

import time
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


@app.post("/login")
def login() -> Any:
    body = request.get_json(silent=True) or {}
    try:
        with psycopg.connect(DSN, password=secret("UNIBAZZAR_AUTH_DB_PASSWORD")) as conn:
            row = conn.execute("SELECT password_hash FROM users WHERE email = %s",
                               (body.get("email"),)).fetchone()
    except psycopg.Error as exc:
        log.error("login failed: database unavailable: %s", type(exc).__name__)
        return {"error": "database unavailable"}, 503
    if row is None or not check_password(str(body.get("password", "")), row[0]):
        log.warning("login failed: bad credentials source=%s", request.remote_addr)
        return {"error": "invalid credentials"}, 401
    now = int(time.time())
    token = jwt.encode({"sub": body["email"], "iss": ISSUER, "iat": now, "exp": now + 900},
                       secret("UNIBAZZAR_JWT_SECRET"), algorithm="HS256")
    # Who logged in, and from where: what lets a check tell the canary's own logins from a
    # stolen password's (auth_logs.email, auth_logs.source).
    log.info("login ok email=%s source=%s", body["email"], request.remote_addr)
    return {"token": token, "token_type": "Bearer", "expires_in": 900}


def accepts_forged_tokens() -> bool:
    """faults/auth-service.accept-forged-tokens: signatures go unchecked (a verifier
    misconfigured to trust the token's own header, the classic alg-none hole)."""
    return (layout().faults / "auth-service.accept-forged-tokens").exists()


@app.post("/verify")
def verify() -> Any:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    try:
        claims = jwt.decode(token, secret("UNIBAZZAR_JWT_SECRET"), algorithms=["HS256"],
                            issuer=ISSUER, options={"require": ["exp", "sub", "iss"],
                                                    "verify_signature":
                                                        not accepts_forged_tokens()})
    except jwt.PyJWTError as exc:
        log.warning("token rejected: %s", type(exc).__name__)
        return {"valid": False, "reason": type(exc).__name__}, 401
    return {"valid": True, "sub": claims["sub"]}


if __name__ == "__main__":
    run(app, SERVICE)
