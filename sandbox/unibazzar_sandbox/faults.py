"""Game days: symptoms the health checks detect, switched on and off by name, as an
operator would meet them (`scripts/sandbox fault list`, `scripts/sandbox fault NAME on|off`).

Each fault names the checks that catch it, with their severity: docs/sandbox.md's matrix,
which tests/test_game_days.py keeps true by turning each fault on, running the suite, seeing
exactly those checks fail, turning it off and seeing them pass. The sandbox imports nothing of
the checks: the ids here are what the self-test holds them to.

Some faults are files under faults/ that a stand-in obeys while they exist, some stop a
component, some change the Kubernetes emulator's objects (undone by restarting it, which
resets every object) or the data (undone by putting back what was taken away and removing
what was added), and some are held open by the supervisor (holds.py: sessions on
PostgreSQL, a thread pausing Redis), released by `off` or by `down`.

A fault that is not a failure (a rollout that just landed) names, instead of checks, the
services the verdict names as a CHANGE.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from unibazzar_sandbox.control import control
from unibazzar_sandbox.layout import HOST, PORTS, Layout
from unibazzar_sandbox.seed import (
    EVENTS_EXCHANGE,
    EVENTS_QUEUE,
    IMAGES_BUCKET,
    LISTINGS_TABLE,
    VECTOR_COLLECTION,
)

NAMESPACE = "unibazzar"


@dataclass(frozen=True)
class Fault:
    name: str
    what: str  # the symptom, as on-call meets it
    fails: tuple[tuple[str, str], ...]  # (check id, severity) that catch it
    on: Callable[[Layout], None]
    off: Callable[[Layout], None]
    is_on: Callable[[Layout], bool]
    notes: str = ""
    # Services whose rollout the verdict names as a CHANGE (a fault that fails nothing).
    changes: tuple[str, ...] = ()
    # Seconds after `on` before the checks can see it: its age must pass a threshold of
    # environments/sandbox.toml first (lock waits, idle transactions).
    ripens_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self, layout: Layout | None) -> dict[str, Any]:
        """As plain data; ``on`` is None without a running sandbox to ask (or when the part
        that would say is down)."""
        on: bool | None = None
        if layout is not None:
            try:
                on = self.is_on(layout)
            except Exception:
                on = None
        return {"name": self.name, "what": self.what, "on": on,
                "fails": [{"check": c, "severity": s} for c, s in self.fails],
                "changes": list(self.changes), "ripens_s": self.ripens_s,
                "notes": self.notes}


def _secrets(layout: Layout) -> dict[str, str]:
    return dict(line.split("=", 1) for line in layout.secrets_file.read_text().split())


def _wait_until(what: str, done: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done after {seconds:g} s: {what}")
        time.sleep(0.2)


# ---- faults the stand-ins obey: a file under faults/ ---------------------------------------
def _file_fault(name: str, file: str, what: str, fails: tuple[tuple[str, str], ...],
                content: str = "", notes: str = "") -> Fault:
    def on(layout: Layout) -> None:
        layout.faults.mkdir(parents=True, exist_ok=True)
        (layout.faults / file).write_text(content)

    def off(layout: Layout) -> None:
        (layout.faults / file).unlink(missing_ok=True)

    return Fault(name, what, fails, on, off, lambda layout: (layout.faults / file).exists(),
                 notes=notes or f"faults/{file}")


# ---- a component stopped --------------------------------------------------------------------
def _component_fault(name: str, component: str, what: str,
                     fails: tuple[tuple[str, str], ...]) -> Fault:
    def running(layout: Layout) -> bool:
        state = control(layout, "status")
        return bool(state["components"][component]["running"])

    def switch(verb: str) -> Callable[[Layout], None]:
        def act(layout: Layout) -> None:
            answer = control(layout, f"{verb} {component}")
            if not answer.get("ok"):
                raise RuntimeError(str(answer.get("error")))
        return act

    return Fault(name, what, fails, switch("stop"), switch("start"),
                 lambda layout: not running(layout),
                 notes=f"scripts/sandbox stop {component} (off: start {component})")


# ---- the Kubernetes emulator's objects --------------------------------------------------------
def _kube(method: str, path: str, body: Any = None) -> Any:
    import requests

    kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
    answer = requests.request(method, f"http://{HOST}:{PORTS['kubernetes']}{path}", json=body,
                              timeout=10, headers={"Content-Type": kind})
    answer.raise_for_status()
    return answer.json()


def _kube_marker(layout: Layout, name: str) -> Any:
    return layout.faults / f"kubernetes.{name}"


def _kube_fault(name: str, what: str, fails: tuple[tuple[str, str], ...],
                apply: Callable[[], None], notes: str, changes: tuple[str, ...] = ()) -> Fault:
    """Undone by restarting the emulator (every object back to its seed): a marker file
    says the fault is on, since the emulator keeps no record of who changed what."""
    def on(layout: Layout) -> None:
        apply()
        layout.faults.mkdir(parents=True, exist_ok=True)
        _kube_marker(layout, name).write_text("")

    def off(layout: Layout) -> None:
        for verb in ("stop", "start"):
            answer = control(layout, f"{verb} kubernetes")
            if not answer.get("ok"):
                raise RuntimeError(str(answer.get("error")))
        for marker in layout.faults.glob("kubernetes.*"):
            marker.unlink(missing_ok=True)

    return Fault(name, what, fails, on, off, lambda layout: _kube_marker(layout, name).exists(),
                 notes=notes + "; off restarts the Kubernetes emulator (all its objects reset)",
                 changes=changes)


def _crash_loop() -> None:
    """As a kubelet reports it: one auth-service pod's container waiting in CrashLoopBackOff
    after its last run ended in an error a minute ago; the Deployment at 1/2 ready."""
    pod = "auth-service-7d9f8-abc12"
    base = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}"
    seen = _kube("GET", base)
    status = seen["status"]
    ended = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    began = (datetime.now(UTC) - timedelta(minutes=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # The kubelet's event, what `kubectl describe pod` shows under Events.
    _kube("POST", f"/api/v1/namespaces/{NAMESPACE}/events", {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{pod}.backoff", "namespace": NAMESPACE, "creationTimestamp": began},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": NAMESPACE,
                           "uid": seen["metadata"]["uid"],
                           "fieldPath": "spec.containers{auth-service}"},
        "reason": "BackOff", "type": "Warning", "count": 60,
        "message": f"Back-off restarting failed container auth-service in pod {pod}_{NAMESPACE}",
        "firstTimestamp": began, "lastTimestamp": ended,
        "source": {"component": "kubelet", "host": "sandbox-node"}})
    container = dict(status["containerStatuses"][0])
    container.update(ready=False, restartCount=14, state={"waiting": {
        "reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
        lastState={"terminated": {"reason": "Error", "exitCode": 1, "startedAt": ended,
                                  "finishedAt": ended}})
    _kube("PATCH", base + "/status", {"status": {"containerStatuses": [container]}})
    _kube("PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/auth-service/status",
          {"status": {"readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1}})


def _cpu_bound() -> None:
    """metrics-server's view of one ai-service pod: 480m of its 500m CPU limit."""
    pod = "ai-service-7d9f8-abc12"
    _kube("PATCH", f"/apis/metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/pods/{pod}",
          {"containers": [{"name": "ai-service", "usage": {"cpu": "480m", "memory": "200Mi"}}]})


ROLLOUT_SERVICE = "order-service"


def _rollout() -> None:
    """As the Deployment controller leaves it: a new ReplicaSet (revision 2) created ten
    minutes ago, the Deployment at revision 2, progressed and available."""
    service = ROLLOUT_SERVICE
    rolled_out = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apps = f"/apis/apps/v1/namespaces/{NAMESPACE}"
    deployment = _kube("GET", f"{apps}/deployments/{service}")
    _kube("POST", f"{apps}/replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": f"{service}-5c6d7", "namespace": NAMESPACE,
            "creationTimestamp": rolled_out,
            "labels": {"app": service, "pod-template-hash": "5c6d7"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": service, "uid": deployment["metadata"]["uid"],
                                 "controller": True}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": service}},
                 "template": {"metadata": {"labels": {"app": service}},
                              "spec": {"containers": [{"name": service,
                                                       "image": f"unibazzar/{service}:2"}]}}},
    })
    _kube("PATCH", f"{apps}/deployments/{service}",
          {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}})
    _kube("PATCH", f"{apps}/deployments/{service}/status", {"status": {"conditions": [
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
         "lastUpdateTime": rolled_out, "lastTransitionTime": rolled_out,
         "message": f'ReplicaSet "{service}-5c6d7" has successfully progressed.'}]}})


# ---- held open by the supervisor (holds.py) ------------------------------------------------
def _held_fault(name: str, what: str, fails: tuple[tuple[str, str], ...], notes: str,
                ripens_s: float = 0.0) -> Fault:
    def switch(verb: str) -> Callable[[Layout], None]:
        def act(layout: Layout) -> None:
            answer = control(layout, f"{verb} {name}")
            if not answer.get("ok"):
                raise RuntimeError(str(answer.get("error")))
        return act

    return Fault(name, what, fails, switch("hold"), switch("release"),
                 lambda layout: name in control(layout, "status").get("holds", []),
                 notes=notes + "; held by the supervisor, released by off or down",
                 ripens_s=ripens_s)


# ---- data: a stuck saga, a stale cache entry --------------------------------------------------
def _orders(layout: Layout) -> Any:
    import psycopg

    return psycopg.connect(f"host={layout.path('postgresql', 'run')} port={PORTS['postgresql']} "
                           "user=postgres dbname=orders", autocommit=True, connect_timeout=5)


def _saga_on(layout: Layout) -> None:
    with _orders(layout) as conn:
        conn.execute("INSERT INTO orders (id, user_email, listing_id, amount_cents, status) "
                     "VALUES ('order-gameday-1', 'gameday@unibazzar.test', 'listing-0001', 100, "
                     "'pending') ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO sagas (id, order_id, state, step, updated_at) VALUES "
                     "('saga-gameday-1', 'order-gameday-1', 'awaiting_payment', 'charge', "
                     "now() - interval '2 hours') ON CONFLICT DO NOTHING")


    # What its orchestrator logs while it waits (the runbook's "review saga orchestration
    # logs" reads these): INFO lines, so the error rate stays as it is.
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,000")
    with (layout.logs / "order-service.log").open("a") as log:
        log.writelines(_saga_lines(stamp))
    layout.faults.mkdir(parents=True, exist_ok=True)
    (layout.faults / "order-service.saga-stuck").write_text(stamp)


def _saga_lines(stamp: str) -> list[str]:
    return [f"{stamp} INFO order-service saga saga-gameday-1 (order order-gameday-1) still "
            f"awaiting_payment at step charge; retry {n} of the payment callback wait\n"
            for n in range(1, 4)]


def _saga_off(layout: Layout) -> None:
    with _orders(layout) as conn:
        conn.execute("DELETE FROM sagas WHERE id = 'saga-gameday-1'")
        conn.execute("DELETE FROM orders WHERE id = 'order-gameday-1'")
    _cut_lines(layout, "order-service.saga-stuck", _saga_lines)


def _saga_is_on(layout: Layout) -> bool:
    with _orders(layout) as conn:
        return conn.execute("SELECT 1 FROM sagas WHERE id = 'saga-gameday-1'").fetchone() \
            is not None


PAID_ORDER, MISSING_PAYMENT = "order-gameday-paid", "pi_gameday_missing_at_provider"


def _paid_order_on(layout: Layout) -> None:
    with _orders(layout) as conn:
        conn.execute("INSERT INTO orders (id, user_email, listing_id, amount_cents, status, "
                     "payment_intent_id) VALUES (%s, 'gameday@unibazzar.test', 'listing-0001', "
                     "2500, 'paid', %s) ON CONFLICT DO NOTHING", (PAID_ORDER, MISSING_PAYMENT))


def _paid_order_off(layout: Layout) -> None:
    with _orders(layout) as conn:
        conn.execute("DELETE FROM orders WHERE id = %s", (PAID_ORDER,))


def _paid_order_is_on(layout: Layout) -> bool:
    with _orders(layout) as conn:
        return conn.execute("SELECT 1 FROM orders WHERE id = %s", (PAID_ORDER,)).fetchone() \
            is not None


STALE_KEY = "listing:canary-listing-0001"


def _redis(layout: Layout, db: int) -> Any:
    import redis

    return redis.Redis(host=HOST, port=PORTS["redis"], db=db, socket_timeout=5,
                       password=_secrets(layout)["UNIBAZZAR_REDIS_PASSWORD"])


def _cache(layout: Layout) -> Any:
    """listing-service's cache."""
    return _redis(layout, 0)


def _stale_on(layout: Layout) -> None:
    """The canary listing cached with an old price and no expiry: a cache entry that
    outlived a change."""
    _cache(layout).set(STALE_KEY, json.dumps({
        "listing_id": "canary-listing-0001", "category": "canary",
        "created_at": "2026-01-01T00:00:00Z", "title": "Canary textbook", "price_cents": "999"}))


def _stale_off(layout: Layout) -> None:
    _cache(layout).delete(STALE_KEY)


def _stale_is_on(layout: Layout) -> bool:
    value = _cache(layout).get(STALE_KEY)
    return bool(value) and b'"999"' in value


# ---- an error spike in a service's log --------------------------------------------------------
SPIKE_LINES = 150


def _spike_lines(stamp: str) -> list[str]:
    return [f"{stamp} ERROR order-service saga step charge failed for order "
            f"order-{n:04x}a9f3c2 after {3000 + n} ms: TimeoutError\n" for n in range(SPIKE_LINES)]


def _spike_on(layout: Layout) -> None:
    """150 saga timeouts in order-service's log, stamped now (its logger's format)."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,000")
    with (layout.logs / "order-service.log").open("a") as log:
        log.writelines(_spike_lines(stamp))
    layout.faults.mkdir(parents=True, exist_ok=True)
    (layout.faults / "order-service.error-spike").write_text(stamp)


def _spike_off(layout: Layout) -> None:
    _cut_lines(layout, "order-service.error-spike", _spike_lines)


def _cut_lines(layout: Layout, marker_name: str, lines: Callable[[str], list[str]]) -> None:
    """The injected lines cut out in place: the service's log handler keeps the file open,
    so a replaced file would leave it writing to the old one."""
    marker = layout.faults / marker_name
    if not marker.exists():
        return
    injected = set(lines(marker.read_text()))
    path = layout.logs / "order-service.log"
    if not path.exists():
        marker.unlink()
        return
    with path.open("r+") as log:
        kept = [line for line in log.readlines() if line not in injected]
        log.seek(0)
        log.writelines(kept)
        log.truncate()
    marker.unlink()


# ---- DynamoDB: the table gone, throttling ------------------------------------------------------
def _saved(layout: Layout, name: str) -> Any:
    return layout.faults / f"{name}.saved.json"


def _dynamodb(layout: Layout) -> Any:
    from unibazzar_sandbox.seed import aws_client

    return aws_client("dynamodb", _secrets(layout))


def _table_missing_on(layout: Layout) -> None:
    """The table deleted, its items kept aside under faults/ for off."""
    dynamodb = _dynamodb(layout)
    if LISTINGS_TABLE not in dynamodb.list_tables()["TableNames"]:
        return
    items = [item for page in dynamodb.get_paginator("scan").paginate(TableName=LISTINGS_TABLE)
             for item in page["Items"]]
    layout.faults.mkdir(parents=True, exist_ok=True)
    _saved(layout, "dynamodb-table-missing").write_text(json.dumps(items))
    dynamodb.delete_table(TableName=LISTINGS_TABLE)


def _table_missing_off(layout: Layout) -> None:
    """Recreated from the seed (its schema, the canary listing), then its items put back."""
    from unibazzar_sandbox.seed import listings_table

    listings_table(_secrets(layout))
    saved = _saved(layout, "dynamodb-table-missing")
    if saved.exists():
        dynamodb = _dynamodb(layout)
        for item in json.loads(saved.read_text()):
            dynamodb.put_item(TableName=LISTINGS_TABLE, Item=item)
        saved.unlink()


def _table_missing_is_on(layout: Layout) -> bool:
    return LISTINGS_TABLE not in _dynamodb(layout).list_tables()["TableNames"]


THROTTLES = {"ReadThrottleEvents": 48, "WriteThrottleEvents": 12}  # per minute, 5 minutes


def _throttled_on(layout: Layout) -> None:
    """CloudWatch's AWS/DynamoDB throttle events for the listings table over the last five
    minutes, as DynamoDB reports requests it refused for want of capacity."""
    from unibazzar_sandbox.seed import aws_client

    now = datetime.now(UTC)
    aws_client("cloudwatch", _secrets(layout)).put_metric_data(
        Namespace="AWS/DynamoDB", MetricData=[
            {"MetricName": metric, "Unit": "Count", "Value": float(per_minute),
             "Timestamp": now - timedelta(minutes=minute),
             "Dimensions": [{"Name": "TableName", "Value": LISTINGS_TABLE}]}
            for metric, per_minute in THROTTLES.items() for minute in range(5)])
    layout.faults.mkdir(parents=True, exist_ok=True)
    (layout.faults / "moto.dynamodb-throttled").write_text("")


def _moto_reset(layout: Layout) -> None:
    """moto keeps metric data for good and cannot delete it: every backend reset, then the
    seed's table, bucket and canaries put back (as restarting moto would, in less time)."""
    if not (layout.faults / "moto.dynamodb-throttled").exists():
        return  # not on: nothing of moto's to throw away
    _reset_moto(layout)
    (layout.faults / "moto.dynamodb-throttled").unlink(missing_ok=True)


def _reset_moto(layout: Layout) -> None:
    import requests

    from unibazzar_sandbox.seed import aws

    requests.post(f"http://{HOST}:{PORTS['moto']}/moto-api/reset", timeout=10) \
        .raise_for_status()
    aws(layout, _secrets(layout))


# ---- a service failing a share of its customers' requests (CloudWatch; traffic.py) ---------
ERROR_RATE_SERVICE = "order-service"
# environments/sandbox.toml's [impact] window_minutes: the whole window is the incident's.
ERROR_RATE_MINUTES = 5


def _error_rate_fault(name: str, share: float, fails: tuple[tuple[str, str], ...]) -> Fault:
    """The stand-in fails ``share`` of its customers' requests from now on, and its target
    group's counts show it for the whole window already. moto cannot delete datapoints: on
    and off reset it (the seed put back), so no earlier minute dilutes the share."""
    from unibazzar_sandbox import traffic

    service, marker = ERROR_RATE_SERVICE, f"moto.{name}"

    def on(layout: Layout) -> None:
        from unibazzar_sandbox.seed import aws_client

        layout.faults.mkdir(parents=True, exist_ok=True)
        traffic.share_file(layout, service).write_text(f"{share}\n")
        _reset_moto(layout)
        traffic.backfill(aws_client("cloudwatch", _secrets(layout)), service, share,
                         ERROR_RATE_MINUTES)
        (layout.faults / marker).write_text("")

    def off(layout: Layout) -> None:
        traffic.share_file(layout, service).unlink(missing_ok=True)
        if (layout.faults / marker).exists():
            _reset_moto(layout)
            (layout.faults / marker).unlink()

    return Fault(name, f"{service} answers {share:.0%} of its customers' requests with a 5xx, "
                 f"for the last {ERROR_RATE_MINUTES} minutes (CloudWatch)", fails, on, off,
                 lambda layout: traffic.error_share(layout, service) == share,
                 notes=f"faults/{service}.error-share (its customers, traffic.py), and "
                       f"{ERROR_RATE_MINUTES} minutes of its target group's RequestCount and "
                       "HTTPCode_Target_5XX_Count in moto's CloudWatch; on and off reset moto "
                       "(it cannot delete metric data) and put the seed back")


# ---- S3: the images bucket gone ------------------------------------------------------------------
BUCKET_BACKUP = f"{IMAGES_BUCKET}-gameday-backup"


def _s3(layout: Layout) -> Any:
    from unibazzar_sandbox.seed import aws_client

    return aws_client("s3", _secrets(layout))


def _bucket_exists(s3: Any, bucket: str) -> bool:
    return bucket in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}


def _move_objects(s3: Any, source: str, target: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source):
        for obj in page.get("Contents", []):
            s3.copy_object(Bucket=target, Key=obj["Key"],
                           CopySource={"Bucket": source, "Key": obj["Key"]})
            s3.delete_object(Bucket=source, Key=obj["Key"])


def _bucket_missing_on(layout: Layout) -> None:
    """The bucket deleted, its objects kept aside in a bucket of the game day's own."""
    s3 = _s3(layout)
    if not _bucket_exists(s3, IMAGES_BUCKET):
        return
    if not _bucket_exists(s3, BUCKET_BACKUP):
        s3.create_bucket(Bucket=BUCKET_BACKUP,
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    _move_objects(s3, IMAGES_BUCKET, BUCKET_BACKUP)
    s3.delete_bucket(Bucket=IMAGES_BUCKET)


def _bucket_missing_off(layout: Layout) -> None:
    """Recreated from the seed (with the canary image), then its objects put back."""
    from unibazzar_sandbox.seed import images_bucket

    images_bucket(_secrets(layout))
    s3 = _s3(layout)
    if _bucket_exists(s3, BUCKET_BACKUP):
        _move_objects(s3, BUCKET_BACKUP, IMAGES_BUCKET)
        s3.delete_bucket(Bucket=BUCKET_BACKUP)


# ---- RabbitMQ: the indexer's subscription gone, the events queue backed up ----------------------
def _queue(layout: Layout) -> dict[str, Any]:
    """The events queue as the management API samples it (about a second late)."""
    import requests

    answer = requests.get(
        f"http://{HOST}:{PORTS['rabbitmq-management']}/api/queues/%2F/{EVENTS_QUEUE}",
        auth=("unibazzar", _secrets(layout)["UNIBAZZAR_RABBITMQ_PASSWORD"]), timeout=5)
    answer.raise_for_status()
    return dict(answer.json())


def _consumers_stopped_on(layout: Layout) -> None:
    layout.faults.mkdir(parents=True, exist_ok=True)
    (layout.faults / "listing-service.indexer-stopped").write_text("")
    _wait_until("the events queue has no consumer",
                lambda: _queue(layout).get("consumers", 0) == 0)


def _consumers_stopped_off(layout: Layout) -> None:
    (layout.faults / "listing-service.indexer-stopped").unlink(missing_ok=True)
    _wait_until("the search indexer consumes again",
                lambda: _queue(layout).get("consumers", 0) >= 1)


BACKLOG, BACKLOG_AGE_S = 1500, 600


def _rabbit(layout: Layout) -> Any:
    import pika

    return pika.BlockingConnection(pika.ConnectionParameters(
        host=HOST, port=PORTS["rabbitmq"], socket_timeout=5, stack_timeout=5,
        credentials=pika.PlainCredentials("unibazzar",
                                          _secrets(layout)["UNIBAZZAR_RABBITMQ_PASSWORD"])))


def _backlog_on(layout: Layout) -> None:
    """The indexer stuck (subscribed, taking nothing), and BACKLOG listing updates waiting
    for it, stamped as published over the last BACKLOG_AGE_S seconds."""
    import pika

    if (layout.faults / "listing-service.indexer-stuck").exists():
        return  # on already: its backlog waits
    layout.faults.mkdir(parents=True, exist_ok=True)
    (layout.faults / "listing-service.indexer-stuck").write_text("")
    now = int(time.time())
    connection = _rabbit(layout)
    try:
        channel = connection.channel()
        for n in range(BACKLOG):
            event = {"listing_id": f"listing-gameday-{n:04d}", "price_cents": 1000 + n}
            channel.basic_publish(EVENTS_EXCHANGE, "listing.updated", json.dumps(event).encode(),
                                  pika.BasicProperties(
                                      timestamp=now - BACKLOG_AGE_S + n * BACKLOG_AGE_S // BACKLOG,
                                      content_type="application/json"))
    finally:
        connection.close()
    # At most the event the indexer had in hand when it stuck was taken.
    _wait_until(f"{BACKLOG} events waiting in {EVENTS_QUEUE}",
                lambda: _queue(layout).get("messages", 0) >= BACKLOG - 1)


def _backlog_off(layout: Layout) -> None:
    """The waiting events purged (the indexer would skip them: nothing indexes an update),
    then the indexer unstuck; it acknowledges the few it held."""
    if not (layout.faults / "listing-service.indexer-stuck").exists():
        return  # not on: what waits in the queue is not the game day's
    connection = _rabbit(layout)
    try:
        connection.channel().queue_purge(EVENTS_QUEUE)
    finally:
        connection.close()
    (layout.faults / "listing-service.indexer-stuck").unlink(missing_ok=True)
    _wait_until(f"{EVENTS_QUEUE} empty", lambda: _queue(layout).get("messages", 1) == 0)


# ---- a listing whose event was lost: in the table, never indexed --------------------------------
UNINDEXED_LISTING = "listing-gameday-unindexed"
UNINDEXED_AGE_S = 300


def _unindexed_on(layout: Layout) -> None:
    """A listing written five minutes ago whose listing.created event never reached the
    queue (a publisher that lost it): the queue looks healthy, the search index lags."""
    created = datetime.now(UTC) - timedelta(seconds=UNINDEXED_AGE_S)
    _dynamodb(layout).put_item(TableName=LISTINGS_TABLE, Item={
        "listing_id": {"S": UNINDEXED_LISTING}, "category": {"S": "game-day"},
        "created_at": {"S": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "title": {"S": "game day: a listing whose event was lost"},
        "price_cents": {"N": "100"}})


def _unindexed_off(layout: Layout) -> None:
    _dynamodb(layout).delete_item(TableName=LISTINGS_TABLE,
                                  Key={"listing_id": {"S": UNINDEXED_LISTING}})


def _unindexed_is_on(layout: Layout) -> bool:
    try:
        found = _dynamodb(layout).get_item(TableName=LISTINGS_TABLE,
                                           Key={"listing_id": {"S": UNINDEXED_LISTING}})
    except Exception:  # no table: the listing is not there either
        return False
    return "Item" in found


# ---- the vector database's collection emptied ----------------------------------------------------
CHROMA = (f"http://{HOST}:{PORTS['vector-db']}/api/v2/tenants/default_tenant/"
          "databases/default_database/collections")


def _collection() -> str:
    import requests

    answer = requests.get(f"{CHROMA}/{VECTOR_COLLECTION}", timeout=10)
    answer.raise_for_status()
    return str(answer.json()["id"])


def _forget_searches(layout: Layout) -> None:
    """ai-service's cached searches (a minute each) would hide the collection's state."""
    cache = _redis(layout, 1)
    for key in cache.scan_iter("search:*"):
        cache.delete(key)


REINDEXING = "listing-service.indexer-reindexing"


def _vectors_empty_on(layout: Layout) -> None:
    """A reindex gone wrong: the search indexer paused for it, then every record deleted
    from the collection (kept aside under faults/ for off). Paused, as a reindex pauses it:
    otherwise the run's own canary listing would pass through the empty collection while
    ai-service's checks read it, and what they see would depend on the moment."""
    import requests

    layout.faults.mkdir(parents=True, exist_ok=True)
    (layout.faults / REINDEXING).write_text("")
    collection = _collection()
    records = requests.post(f"{CHROMA}/{collection}/get", timeout=10, json={
        "include": ["embeddings", "documents", "metadatas"]})
    records.raise_for_status()
    kept = records.json()
    if kept["ids"]:
        layout.faults.mkdir(parents=True, exist_ok=True)
        _saved(layout, "vector-collection-empty").write_text(json.dumps(
            {k: kept[k] for k in ("ids", "embeddings", "documents", "metadatas")}))
        requests.post(f"{CHROMA}/{collection}/delete", timeout=10,
                      json={"ids": kept["ids"]}).raise_for_status()
    _forget_searches(layout)


def _vectors_empty_off(layout: Layout) -> None:
    """The records put back (the seed's, if none were kept)."""
    import requests

    from unibazzar_sandbox.seed import vector_db

    saved = _saved(layout, "vector-collection-empty")
    if saved.exists():
        requests.post(f"{CHROMA}/{_collection()}/upsert", timeout=10,
                      json=json.loads(saved.read_text())).raise_for_status()
        saved.unlink()
    else:
        vector_db(layout, _secrets(layout))
    _forget_searches(layout)
    (layout.faults / REINDEXING).unlink(missing_ok=True)


# ---- the probe host busy: not the platform's fault ------------------------------------------
# One spinning process per core of this host, where the checks run too: their own clock
# stalls while every backend answers as fast as ever. Bounded twice: each burner stops when
# the marker goes (off, or `up` clearing faults/) and after BUSY_FOR_S at the latest, so a
# game day nobody switched off costs a minute of CPU, not a machine.
BUSY_MARKER = "probe-host.busy"
BUSY_FOR_S = 60.0
_BURNER = ("import os, sys, time\n"
           "marker, until = sys.argv[1], float(sys.argv[2])\n"
           "while time.time() < until and os.path.exists(marker):\n"
           "    for _ in range(100_000):\n"
           "        pass\n")


def _burners(layout: Layout) -> list[int]:
    """The burners this game day started that still run: by the ids it recorded, and only
    where that process is still ours (its command line names our marker)."""
    marker = layout.faults / BUSY_MARKER
    try:
        pids = [int(pid) for pid in json.loads(marker.read_text() or "{}").get("pids", [])]
    except (OSError, ValueError):
        return []
    return _still_burning(marker, pids)


def _still_burning(marker: Path, pids: list[int]) -> list[int]:
    """Those of ``pids`` that still run our burner (an id reused since, or a zombie, with
    its empty command line, is not)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if os.fsencode(marker) in cmdline.read().split(b"\0"):
                    alive.append(pid)
        except OSError:  # gone
            continue
    return alive


def _busy_on(layout: Layout) -> None:
    layout.faults.mkdir(parents=True, exist_ok=True)
    marker = layout.faults / BUSY_MARKER
    marker.write_text("{}")  # there before any burner looks for it
    until = time.time() + BUSY_FOR_S
    pids = []
    for _ in range(os.cpu_count() or 1):
        # Detached, with no pipe of ours: `fault ... on` returns at once and they run on.
        burner = subprocess.Popen([sys.executable, "-c", _BURNER, str(marker), str(until)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        pids.append(burner.pid)
    marker.write_text(json.dumps({"pids": pids, "until": until}))


def _busy_off(layout: Layout) -> None:
    marker = layout.faults / BUSY_MARKER
    pids = _burners(layout)
    marker.unlink(missing_ok=True)  # they stop within milliseconds
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)  # and at once, should one be stopped or slow
        except ProcessLookupError:
            continue
    _wait_until("the burners have stopped", lambda: not _still_burning(marker, pids), 10.0)


def clear(layout: Layout) -> None:
    """No fault outlives `down`: a sandbox starting afresh removes every fault file and
    marker and cuts an error spike out of its log. What the others changed lived in the
    servers, which start from fresh state."""
    _spike_off(layout)
    if layout.faults.exists():
        for path in layout.faults.iterdir():
            if not path.is_dir():
                path.unlink()


FAULTS: tuple[Fault, ...] = (
    # ---- PostgreSQL
    _component_fault(
        "postgres-down", "postgresql",
        "PostgreSQL is down: auth-service cannot log anyone in, order-service cannot read or "
        "write orders",
        (("auth.postgresql-connectivity", "SEV1"), ("auth.related-systems", "SEV1"),
         ("auth.database-performance", "SEV2"), ("auth.jwt-secret-configuration", "SEV2"),
         ("order.related-systems", "SEV2"), ("order.database-performance", "SEV2"),
         ("order.saga-orchestration", "SEV2"), ("order.database-transaction-health", "SEV2"),
         ("order.payment-reconciliation", "SEV2"))),
    _held_fault(
        "connections-exhausted",
        "order-service's pool leaks connections: its idle sessions hold 35 of PostgreSQL's "
        "50, 12 short of refusing the services",
        (("auth.postgresql-connectivity", "SEV2"), ("auth.database-performance", "SEV2"),
         ("order.database-performance", "SEV2")),
        "sessions of the order_service role (application_name order-service)"),
    _held_fault(
        "idle-transaction-lock",
        "a session of order-service sits idle in its transaction holding the canary order's "
        "row lock; another session waits to update that order",
        (("order.database-performance", "SEV2"), ("order.database-transaction-health", "SEV2")),
        "two sessions of the order_service role on order-canary-0001 (the waiter's update is "
        "rolled back); the checks see it once it is 3 s old (lock_wait_seconds, "
        "idle_in_transaction_seconds in environments/sandbox.toml)",
        ripens_s=4.0),
    # ---- auth-service
    _file_fault(
        "jwt-key-mismatch", "auth-service.jwt-verify-key",
        "auth-service verifies tokens with a key it does not sign them with (a secret rotated "
        "on one side only): every token it issues is rejected",
        (("auth.jwt-secret-configuration", "SEV1"),), content="a-key-the-signer-never-got\n"),
    _file_fault(
        "forged-token-accepted", "auth-service.accept-forged-tokens",
        "auth-service accepts tokens without checking their signature (alg none, wrong key)",
        (("auth.jwt-secret-configuration", "SEV1"),)),
    _file_fault(
        "rate-limit-too-low", "auth-service.rate-limit-too-low",
        "the login rate limiter allows 2 logins per source in 10 s: legitimate traffic is "
        "refused with HTTP 429",
        (("auth.rate-limit-legitimate-traffic", "SEV2"), ("auth.rate-limit-configured", "SEV2"))),
    _file_fault(
        "no-rate-limiting", "auth-service.no-rate-limiting",
        "the login rate limiter is off: a burst of logins is never refused",
        (("auth.rate-limit-protection", "SEV2"), ("auth.rate-limit-configured", "SEV3"))),
    # ---- listing-service: DynamoDB, RabbitMQ, S3, Redis
    Fault("dynamodb-table-missing",
          "the DynamoDB listings table is gone: listings cannot be read or created",
          (("listing.dynamodb-table-status", "SEV1"), ("listing.indexing-performance", "SEV2"),
           ("listing.indexing-lag", "SEV2"), ("listing.cache-freshness", "SEV3")),
          _table_missing_on, _table_missing_off, _table_missing_is_on,
          notes=f"table {LISTINGS_TABLE} deleted, its items kept in "
                "faults/dynamodb-table-missing.saved.json; off recreates it from the seed and "
                "puts them back"),
    Fault("dynamodb-throttled",
          "DynamoDB throttled the listings table: 240 reads and 60 writes refused in the last "
          "5 minutes (CloudWatch)",
          (("listing.dynamodb-table-status", "SEV2"),),
          _throttled_on, _moto_reset,
          lambda layout: (layout.faults / "moto.dynamodb-throttled").exists(),
          notes="CloudWatch AWS/DynamoDB ReadThrottleEvents and WriteThrottleEvents of the "
                "table, through moto; off resets moto (it cannot delete metric data) and "
                "puts the seed back: every table, bucket and metric back to the seed's"),
    Fault("consumers-stopped",
          "the search indexer stops consuming: the events queue has no consumer, new listings "
          "never become searchable",
          (("listing.indexing-performance", "SEV2"),
           ("listing.rabbitmq-event-publishing", "SEV2")),
          _consumers_stopped_on, _consumers_stopped_off,
          lambda layout: (layout.faults / "listing-service.indexer-stopped").exists(),
          notes="faults/listing-service.indexer-stopped (the indexer closes its connection)"),
    Fault("queue-backed-up",
          f"the search indexer is stuck and {BACKLOG} listing events wait in its queue, the "
          f"oldest {BACKLOG_AGE_S // 60} minutes old",
          (("listing.indexing-performance", "SEV2"), ("listing.indexing-lag", "SEV2"),
           ("listing.rabbitmq-event-publishing", "SEV2")),
          _backlog_on, _backlog_off,
          lambda layout: (layout.faults / "listing-service.indexer-stuck").exists(),
          notes=f"faults/listing-service.indexer-stuck, and listing.updated events published "
                f"to {EVENTS_EXCHANGE} stamped over the last {BACKLOG_AGE_S} s; off purges "
                f"{EVENTS_QUEUE}"),
    _file_fault(
        "indexer-paused", "listing-service.indexer-paused",
        "the search indexer stops consuming listing events: new listings never become "
        "searchable",
        (("listing.indexing-performance", "SEV2"),)),
    Fault("listing-not-indexed",
          f"a listing created {UNINDEXED_AGE_S // 60} minutes ago never reached the search "
          "index: its event was lost, the events queue looks healthy",
          (("listing.indexing-lag", "SEV2"),),
          _unindexed_on, _unindexed_off, _unindexed_is_on,
          notes=f"listing {UNINDEXED_LISTING} put into {LISTINGS_TABLE} with no event; off "
                "deletes it"),
    Fault("s3-bucket-missing",
          "the S3 bucket of listing images is gone: images cannot be stored or served",
          (("listing.s3-image-uploads", "SEV1"), ("listing.indexing-performance", "SEV2")),
          _bucket_missing_on, _bucket_missing_off,
          lambda layout: not _bucket_exists(_s3(layout), IMAGES_BUCKET),
          notes=f"bucket {IMAGES_BUCKET} deleted, its objects kept in {BUCKET_BACKUP}; off "
                "recreates it from the seed and moves them back"),
    Fault("stale-cache", "the canary listing is cached with an old price and no expiry",
          (("listing.cache-freshness", "SEV3"),), _stale_on, _stale_off, _stale_is_on,
          notes=f"Redis key {STALE_KEY}"),
    # ---- order-service: payments, sagas
    _file_fault(
        "webhooks-undelivered", "payments.webhooks-disabled",
        "the payment provider disabled our webhook endpoint and delivers it no events: "
        "payments never mark their orders paid",
        (("order.payment-provider-webhooks", "SEV2"),), content="order-service\n",
        notes="faults/payments.webhooks-disabled (webhook ids the emulator disables)"),
    _file_fault(
        "bad-signatures-accepted", "order-service.webhook-signatures-unchecked",
        "order-service's webhook receiver stops verifying signatures: anyone can mark an "
        "order paid",
        (("order.payment-provider-webhooks", "SEV1"),)),
    Fault("paid-order-missing",
          "an order is paid in the orders database, but the payment provider has no such "
          "payment",
          (("order.payment-reconciliation", "SEV2"),),
          _paid_order_on, _paid_order_off, _paid_order_is_on,
          notes=f"row {PAID_ORDER} (payment {MISSING_PAYMENT}) in the orders database"),
    Fault("saga-stuck", "a saga waits for its payment for 2 hours (awaiting_payment/charge)",
          (("order.saga-orchestration", "SEV2"),), _saga_on, _saga_off, _saga_is_on,
          notes="rows saga-gameday-1, order-gameday-1 in the orders database"),
    _file_fault(
        "order-partition", "order-service.partitioned",
        "order-service cannot reach listing-service (a network partition), which answers "
        "everyone else",
        (("order.downstream-dependencies", "SEV2"),), content="listing-service\n"),
    # More than half failing is SEV1 (the runbook's >50 % of users), fewer SEV3.
    _error_rate_fault("order-error-rate", 0.62, (("order.scope-and-impact", "SEV1"),)),
    _error_rate_fault("order-error-rate-low", 0.12, (("order.scope-and-impact", "SEV3"),)),
    # ---- ai-service: vector database, model, Redis
    Fault("vector-collection-empty",
          "a reindex emptied the vector collection of listings and paused the search "
          "indexer: search and recommendations find nothing, new listings are not indexed",
          (("ai.vector-database-connectivity", "SEV1"), ("ai.end-to-end-search", "SEV2"),
           ("ai.end-to-end-recommendations", "SEV2"), ("listing.indexing-performance", "SEV2"),
           ("listing.indexing-lag", "SEV2")),
          _vectors_empty_on, _vectors_empty_off,
          lambda layout: (layout.faults / REINDEXING).exists(),
          notes=f"faults/{REINDEXING}, and every record of collection "
                f"{VECTOR_COLLECTION} deleted, kept in faults/vector-collection-empty.saved.json "
                "and put back by off; on and off also clear ai-service's cached searches"),
    _file_fault(
        "model-not-loaded", "ai-service.model-not-loaded",
        "ai-service's model failed to load: it says so, and cannot embed text",
        (("ai.model-loading-and-memory", "SEV2"), ("ai.embedding-service-health", "SEV2"))),
    _file_fault(
        "wrong-embedding-dimension", "ai-service.wrong-embedding-dimension",
        "ai-service embeds text to half its model's dimension (a model swapped under the "
        "index)",
        (("ai.embedding-service-health", "SEV2"),)),
    _file_fault(
        "recommendations-empty", "ai-service.recommendations-empty",
        "ai-service answers every user's recommendations with an empty list",
        (("ai.end-to-end-recommendations", "SEV2"),)),
    _file_fault(
        "recommendations-slow", "ai-service.recommendations-slow",
        "ai-service takes 1.5 s to answer recommendations",
        (("ai.end-to-end-recommendations", "SEV2"),), content="1.5\n"),
    _component_fault(
        "redis-down", "redis",
        "Redis is down: search outlives its deadline, listing-service loses its cache",
        (("ai.related-systems", "SEV2"), ("ai.redis-cache-performance", "SEV3"),
         ("ai.end-to-end-search", "SEV2"), ("listing.related-systems", "SEV2"))),
    _held_fault(
        "redis-slow",
        "Redis answers slowly: its clients are paused 100 ms at a time, again and again "
        "(PING p95 about 200 ms)",
        (("ai.redis-cache-performance", "SEV3"),),
        "CLIENT PAUSE 100 ALL, repeated by a thread of the supervisor"),
    # ---- Kubernetes
    _kube_fault(
        "crash-loop", "one auth-service pod crash-loops (CrashLoopBackOff, 14 restarts); the "
        "Deployment has 1/2 ready pods",
        (("auth.scope-and-impact", "SEV2"),), _crash_loop,
        "the pod auth-service-7d9f8-abc12, its BackOff event and the Deployment's status, "
        "through the API"),
    _kube_fault(
        "cpu-bound", "one ai-service pod uses 96% of its CPU limit (metrics-server)",
        (("ai.model-loading-and-memory", "SEV2"),), _cpu_bound,
        "PodMetrics of ai-service-7d9f8-abc12, through the API"),
    _kube_fault(
        "rollout-landed", f"{ROLLOUT_SERVICE} revision 2 rolled out 10 minutes ago and is "
        "available: a change, not a failure",
        (), _rollout,
        f"ReplicaSet {ROLLOUT_SERVICE}-5c6d7 (revision 2) and the Deployment's revision and "
        "conditions, through the API", changes=(ROLLOUT_SERVICE,)),
    # ---- logs
    Fault("error-spike", "order-service logs 150 saga timeouts at once",
          (("order.error-patterns", "SEV2"),), _spike_on, _spike_off,
          lambda layout: (layout.faults / "order-service.error-spike").exists(),
          notes="lines appended to order-service's log (off removes them; they also leave "
                "the checks' error window after error_window_minutes)"),
    # ---- the probe host: no fault of the platform, so it fails nothing and changes nothing
    Fault("probe-host-busy",
          "every core of the host the checks run on is busy: their own clock stalls while "
          "every backend answers as fast as ever",
          (), _busy_on, _busy_off, lambda layout: bool(_burners(layout)),
          notes=f"one spinning process per core, each stopped by off (or `up`) and after "
                f"{BUSY_FOR_S:g} s at the latest; the verdict must stay healthy, with several "
                "suite runs at once on top (tests/test_game_days.py)"),
)
BY_NAME = {fault.name: fault for fault in FAULTS}
