"""AWS clients (boto3) with the deadline as connect and read timeout and one attempt."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from unibazzar_health.probes import (
    DeadlineExceeded,
    FailureKind,
    ProbeError,
    Stopwatch,
    bounded,
    connection_failure,
)

T = TypeVar("T")


@dataclass(frozen=True)
class AwsTarget:
    region: str
    endpoint_url: str | None
    access_key_id: str | None = field(repr=False)  # None: boto3's own credential chain
    secret_access_key: str | None = field(repr=False)
    deadline: float


# One boto3 session per set of credentials, so its loader parses endpoints and service models
# once for all checks, and one client per service, endpoint and deadline: clients are
# thread-safe, and making one costs tens of milliseconds of CPU that forty starting checks
# would otherwise spend at once. Sessions are not thread-safe: both are made under the lock.
_sessions: dict[tuple[str | None, str | None, str], Any] = {}
_clients: dict[tuple[Any, ...], Any] = {}
_sessions_lock = threading.Lock()


def client(service: str, target: AwsTarget) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=target.deadline,
        read_timeout=target.deadline,
        # total_max_attempts=1 is one try; max_attempts=1 would be two.
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    key = (target.access_key_id, target.secret_access_key, target.region)

    def make() -> Any:
        with _sessions_lock:
            made = _clients.get((service, key, target.endpoint_url, target.deadline))
            if made is not None:
                return made
            session = _sessions.get(key)
            if session is None:
                session = _sessions[key] = boto3.session.Session(
                    aws_access_key_id=target.access_key_id,
                    aws_secret_access_key=target.secret_access_key,
                    region_name=target.region,
                )
            made = _clients[(service, key, target.endpoint_url, target.deadline)] = \
                session.client(service, endpoint_url=target.endpoint_url, config=config)
            return made

    # Without keys, boto3's credential chain may call STS or run a credential_process, with
    # its own (long) timeouts: building the client is bounded like any probe step.
    return bounded(make, target.deadline, service, target.endpoint_url or target.region)


def call(service: str, target: AwsTarget, backend: str, where: str,
         fn: Callable[[Any], T], *, timer: Stopwatch | None = None) -> T:
    """``fn(client)``, the client's making and the call within one deadline. Making a client
    is CPU work (boto3 reads its service models), which a busy host slows (0.7 s seen), and
    the call's own timeouts start only after it: a backend that never answers would cost
    the probe that much more than its deadline. ``timer`` is restarted as ``fn`` starts:
    the call's own time, not the client's making."""
    started = time.monotonic()
    made = client(service, target)

    def run() -> T:
        if timer is not None:
            timer.restart()
        return fn(made)

    return bounded(run, target.deadline, backend, where, spent=time.monotonic() - started)


def explain(exc: Exception, backend: str, where: str, target: AwsTarget) -> ProbeError:
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return DeadlineExceeded(backend, where, target.deadline)
    if isinstance(exc, EndpointConnectionError):
        cause = str(exc.kwargs.get("error", ""))
        kind = connection_failure(exc)
        why = "connection refused" if kind is FailureKind.REFUSED else cause.split(": ")[-1]
        endpoint = exc.kwargs.get("endpoint_url") or target.endpoint_url or "endpoint"
        return ProbeError(backend, where, f"{endpoint} unreachable: {why or 'no answer'}",
                          target.deadline, kind=kind)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return ProbeError(backend, where, f"{error.get('Code')}: {error.get('Message')}",
                          target.deadline, kind=error_kind(str(error.get("Code")), status))
    kind = (FailureKind.AUTH_REJECTED if isinstance(exc, NoCredentialsError)
            else FailureKind.UNEXPECTED_ANSWER)
    return ProbeError(backend, where, f"{type(exc).__name__}: {exc}", target.deadline,
                      kind=kind)


# AWS error codes (DynamoDB's JSON API, S3's XML API and its bare HTTP statuses for HEAD).
MISSING_CODES = {"ResourceNotFoundException", "TableNotFoundException", "NoSuchBucket",
                 "NoSuchKey", "NotFound", "404"}
AUTH_CODES = {"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
              "InvalidSignatureException", "SignatureDoesNotMatch", "InvalidAccessKeyId",
              "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
              "MissingAuthenticationTokenException", "AuthFailure", "401", "403"}


def error_kind(code: str, status: int | None = None) -> FailureKind:
    """The kind of an AWS error answer, by its code (its HTTP status when the code is new)."""
    if code in MISSING_CODES:
        return FailureKind.MISSING_OBJECT
    if code in AUTH_CODES or status in (401, 403):
        return FailureKind.AUTH_REJECTED
    return FailureKind.UNEXPECTED_ANSWER
