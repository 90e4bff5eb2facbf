"""RabbitMQ: a confirmed canary publish through pika, queue state from the management API."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from unibazzar_health.probes import (
    DeadlineExceeded,
    FailureKind,
    ProbeError,
    bounded,
    connection_failure,
    status_failure,
    timed,
)
from unibazzar_health.probes.http import reason

CANARY_ROUTING_KEY = "health-check.canary"


@dataclass(frozen=True)
class BrokerTarget:
    url: str  # amqp://user@host:port/vhost, no password
    password: str | None = field(repr=False)
    management_url: str
    deadline: float

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 5672}"

    @property
    def user(self) -> str:
        return unquote(urlsplit(self.url).username or "guest")

    @property
    def vhost(self) -> str:
        path = urlsplit(self.url).path
        return unquote(path[1:]) if len(path) > 1 else "/"


@dataclass(frozen=True)
class PublishResult:
    exchange: str
    routing_key: str
    confirmed: bool
    elapsed_ms: float
    # The broker returned it as unroutable, as it should: no queue holds the canary. False
    # means some binding caught it and a consumer may receive it.
    unrouted: bool = True


@dataclass(frozen=True)
class QueueState:
    queue: str
    exists: bool
    messages: int
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    # The first waiting message's timestamp property (Unix seconds; only where publishers
    # set it), when the queue last saw any activity (None while busy), and its consumers'
    # acknowledgements per second, all as the management API last sampled them.
    head_message_timestamp: float | None = None
    idle_since: float | None = None
    ack_rate: float | None = None


def _parameters(target: BrokerTarget) -> Any:
    import pika

    return pika.ConnectionParameters(
        host=urlsplit(target.url).hostname,
        port=urlsplit(target.url).port or 5672,
        virtual_host=target.vhost,
        credentials=pika.PlainCredentials(target.user, target.password or ""),
        socket_timeout=target.deadline,
        stack_timeout=target.deadline,
        blocked_connection_timeout=target.deadline,
        connection_attempts=1,
        heartbeat=0,
    )


def _over_amqp(target: BrokerTarget, use: Callable[[Any], None]) -> float:
    """Open a connection, ``use`` it, close it; milliseconds taken. Bounded by one deadline."""
    import pika
    from pika.adapters.utils.connection_workflow import (
        AMQPConnectorException,
        AMQPConnectorStackTimeout,
    )
    from pika.exceptions import AMQPError

    # pika logs every failed attempt at ERROR with a traceback; the ProbeError below says it
    # once, readably, and the engineer's screen stays clear.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    params = _parameters(target)

    def run() -> None:
        connection = pika.BlockingConnection(params)
        try:
            use(connection)
        finally:
            if connection.is_open:
                connection.close()

    try:
        with timed() as t:
            # stack_timeout bounds only the bring-up: past the handshake, BlockingConnection
            # waits for the broker without any limit (heartbeats are off, and would take
            # heartbeat + 5 s anyway), so the whole exchange is bounded here.
            bounded(run, target.deadline, "rabbitmq", target.where)
    except pika.exceptions.ChannelClosedByBroker as exc:
        # 404 NOT_FOUND: no such exchange; 403 ACCESS_REFUSED: our user may not use it.
        kind = {404: FailureKind.MISSING_OBJECT, 403: FailureKind.AUTH_REJECTED}.get(
            exc.reply_code, FailureKind.UNEXPECTED_ANSWER)
        raise ProbeError("rabbitmq", target.where, f"broker refused: {exc.reply_text}",
                         target.deadline, kind=kind) from None
    except pika.exceptions.ProbableAuthenticationError:
        raise ProbeError("rabbitmq", target.where,
                         f"login refused for user {target.user!r} (ACCESS_REFUSED): wrong "
                         "user or password", target.deadline,
                         kind=FailureKind.AUTH_REJECTED) from None
    except pika.exceptions.ProbableAccessDeniedError:
        raise ProbeError("rabbitmq", target.where,
                         f"user {target.user!r} may not open virtual host {target.vhost!r}",
                         target.deadline, kind=FailureKind.AUTH_REJECTED) from None
    except (pika.exceptions.AMQPConnectionError, AMQPConnectorException) as exc:
        # stack_timeout bounds the whole bring-up (TCP connect and AMQP handshake); when it
        # fires, BlockingConnection raises pika's connector exception itself, unwrapped.
        text = repr(exc)
        if isinstance(exc, AMQPConnectorStackTimeout) or "timeout" in text.lower():
            raise DeadlineExceeded("rabbitmq", target.where, target.deadline) from None
        kind = connection_failure(exc)
        problem = ("connection refused" if kind is FailureKind.REFUSED
                   else f"cannot connect: {text[:200]}")
        raise ProbeError("rabbitmq", target.where, problem, target.deadline,
                         kind=kind) from None
    except AMQPError as exc:
        raise ProbeError("rabbitmq", target.where, repr(exc)[:200], target.deadline,
                         kind=FailureKind.UNEXPECTED_ANSWER) from None
    except OSError as exc:
        # pika resolves the host itself, before its own exceptions wrap anything: a name
        # that does not resolve comes out as the bare socket.gaierror.
        raise ProbeError("rabbitmq", target.where, f"cannot connect: {exc}", target.deadline,
                         kind=connection_failure(exc)) from None
    return t.ms


def reachable(target: BrokerTarget) -> float:
    """Milliseconds to open (TCP, AMQP handshake, login) and close a connection."""
    return _over_amqp(target, lambda connection: None)


def publish_canary(target: BrokerTarget, exchange: str) -> PublishResult:
    """Publish with publisher confirms to ``exchange`` under a routing key no consumer binds,
    so the broker's path is exercised without feeding real consumers. Mandatory: the broker
    says whether any queue took it."""
    import pika
    from pika.exceptions import UnroutableError

    unrouted = []

    def publish(connection: Any) -> None:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(exchange, passive=True)
        try:
            channel.basic_publish(
                exchange, CANARY_ROUTING_KEY, b'{"type": "health-check.canary"}',
                pika.BasicProperties(content_type="application/json", delivery_mode=1),
                mandatory=True,
            )
        except UnroutableError:  # returned, then confirmed: the expected outcome
            unrouted.append(True)

    elapsed = _over_amqp(target, publish)
    return PublishResult(exchange, CANARY_ROUTING_KEY, True, elapsed, bool(unrouted))


def queue_state(target: BrokerTarget, queue: str) -> QueueState:
    import requests

    url = (f"{target.management_url.rstrip('/')}/api/queues/"
           f"{quote(target.vhost, safe='')}/{quote(queue, safe='')}")
    try:
        response = requests.get(url, auth=(target.user, target.password or ""),
                                timeout=(target.deadline, target.deadline))
    except requests.Timeout:
        raise DeadlineExceeded("rabbitmq-management", url, target.deadline) from None
    except requests.RequestException as exc:
        raise ProbeError("rabbitmq-management", url, reason(exc), target.deadline,
                         kind=connection_failure(exc)) from None
    if response.status_code == 404:
        return QueueState(queue, False, 0, 0, 0, 0)
    if response.status_code != 200:
        raise ProbeError("rabbitmq-management", url, f"HTTP {response.status_code}",
                         target.deadline, kind=status_failure(response.status_code))
    data: dict[str, Any] = json.loads(response.text)
    return QueueState(
        queue=queue,
        exists=True,
        messages=int(data.get("messages", 0)),
        messages_ready=int(data.get("messages_ready", 0)),
        messages_unacknowledged=int(data.get("messages_unacknowledged", 0)),
        consumers=int(data.get("consumers", 0)),
        head_message_timestamp=(float(data["head_message_timestamp"])
                                if isinstance(data.get("head_message_timestamp"), int | float)
                                else None),
        idle_since=_management_time(data.get("idle_since")),
        ack_rate=_rate(data.get("message_stats"), "ack_details"),
    )


def _management_time(value: Any) -> float | None:
    """A management API time: "2026-11-27T14:00:47.646+00:00" (3.12 and later) or
    "2026-11-27 14:00:47" (UTC, before)."""
    from datetime import UTC, datetime

    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _rate(stats: Any, name: str) -> float | None:
    details = stats.get(name) if isinstance(stats, dict) else None
    rate = details.get("rate") if isinstance(details, dict) else None
    return float(rate) if isinstance(rate, int | float) else None
