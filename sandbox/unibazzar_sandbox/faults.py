"""Game days: symptoms the health checks detect, switched on and off by name, as an
operator would meet them (`scripts/sandbox fault list`, `scripts/sandbox fault NAME on|off`).

Each fault names the checks that catch it, with their severity: docs/sandbox.md's matrix,
which tests/test_game_days.py keeps true by turning each fault on, running the suite, seeing
exactly those checks fail, turning it off and seeing them pass. The sandbox imports nothing of
the checks: the ids here are what the self-test holds them to.

Some faults are files under faults/ that a stand-in obeys while they exist, some stop a
component, some change the Kubernetes emulator's objects (undone by restarting it, which
resets every object) or the data (undone by removing what was added).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from unibazzar_sandbox.layout import HOST, PORTS, Layout

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
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self, layout: Layout | None) -> dict[str, Any]:
        """As plain data; ``on`` is None without a running sandbox to ask."""
        return {"name": self.name, "what": self.what,
                "on": None if layout is None else self.is_on(layout),
                "fails": [{"check": c, "severity": s} for c, s in self.fails],
                "notes": self.notes}


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
    from unibazzar_sandbox.cli import control

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

    answer = requests.request(method, f"http://{HOST}:{PORTS['kubernetes']}{path}", json=body,
                              timeout=10,
                              headers={"Content-Type": "application/merge-patch+json"})
    answer.raise_for_status()
    return answer.json()


def _kube_marker(layout: Layout, name: str) -> Any:
    return layout.faults / f"kubernetes.{name}"


def _kube_fault(name: str, what: str, fails: tuple[tuple[str, str], ...],
                apply: Callable[[], None], notes: str) -> Fault:
    """Undone by restarting the emulator (every object back to its seed): a marker file
    says the fault is on, since the emulator keeps no record of who changed what."""
    from unibazzar_sandbox.cli import control

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
                 notes=notes + "; off restarts the Kubernetes emulator (all its objects reset)")


def _crash_loop() -> None:
    """As a kubelet reports it: one auth-service pod's container waiting in CrashLoopBackOff
    after its last run ended in an error a minute ago; the Deployment at 1/2 ready."""
    pod = "auth-service-7d9f8-abc12"
    base = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}"
    status = _kube("GET", base)["status"]
    ended = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
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


def _saga_off(layout: Layout) -> None:
    with _orders(layout) as conn:
        conn.execute("DELETE FROM sagas WHERE id = 'saga-gameday-1'")
        conn.execute("DELETE FROM orders WHERE id = 'order-gameday-1'")


def _saga_is_on(layout: Layout) -> bool:
    with _orders(layout) as conn:
        return conn.execute("SELECT 1 FROM sagas WHERE id = 'saga-gameday-1'").fetchone() \
            is not None


STALE_KEY = "listing:canary-listing-0001"


def _cache(layout: Layout) -> Any:
    import redis

    secrets = dict(line.split("=", 1) for line in layout.secrets_file.read_text().split())
    return redis.Redis(host=HOST, port=PORTS["redis"], db=0, socket_timeout=5,
                       password=secrets["UNIBAZZAR_REDIS_PASSWORD"])


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
    """The injected lines cut out in place: the service's log handler keeps the file open,
    so a replaced file would leave it writing to the old one."""
    marker = layout.faults / "order-service.error-spike"
    if not marker.exists():
        return
    injected = set(_spike_lines(marker.read_text()))
    path = layout.logs / "order-service.log"
    with path.open("r+") as log:
        kept = [line for line in log.readlines() if line not in injected]
        log.seek(0)
        log.writelines(kept)
        log.truncate()
    marker.unlink()


FAULTS: tuple[Fault, ...] = (
    _component_fault(
        "postgres-down", "postgresql",
        "PostgreSQL is down: auth-service cannot log anyone in, order-service cannot read or "
        "write orders",
        (("auth.postgresql-connectivity", "SEV1"), ("auth.related-systems", "SEV1"),
         ("auth.database-performance", "SEV2"), ("auth.jwt-secret-configuration", "SEV2"),
         ("order.related-systems", "SEV2"), ("order.database-performance", "SEV2"),
         ("order.saga-orchestration", "SEV2"), ("order.database-transaction-health", "SEV2"),
         ("order.payment-reconciliation", "SEV2"))),
    _component_fault(
        "redis-down", "redis",
        "Redis is down: search outlives its deadline, listing-service loses its cache",
        (("ai.related-systems", "SEV2"), ("ai.redis-cache-performance", "SEV3"),
         ("ai.end-to-end-search", "SEV2"), ("listing.related-systems", "SEV2"))),
    _kube_fault(
        "crash-loop", "one auth-service pod crash-loops (CrashLoopBackOff, 14 restarts); the "
        "Deployment has 1/2 ready pods",
        (("auth.scope-and-impact", "SEV2"),), _crash_loop,
        "the pod auth-service-7d9f8-abc12 and the Deployment's status, through the API"),
    _kube_fault(
        "cpu-bound", "one ai-service pod uses 96% of its CPU limit (metrics-server)",
        (("ai.model-loading-and-memory", "SEV2"),), _cpu_bound,
        "PodMetrics of ai-service-7d9f8-abc12, through the API"),
    _file_fault(
        "forged-token-accepted", "auth-service.accept-forged-tokens",
        "auth-service accepts tokens without checking their signature (alg none, wrong key)",
        (("auth.jwt-secret-configuration", "SEV1"),)),
    _file_fault(
        "rate-limit-too-low", "auth-service.rate-limit-too-low",
        "the login rate limiter allows 2 logins per source in 10 s: legitimate traffic is "
        "refused with HTTP 429",
        (("auth.rate-limit-legitimate-traffic", "SEV2"),)),
    _file_fault(
        "no-rate-limiting", "auth-service.no-rate-limiting",
        "the login rate limiter is off: a burst of logins is never refused",
        (("auth.rate-limit-protection", "SEV1"),)),
    _file_fault(
        "indexer-paused", "listing-service.indexer-paused",
        "the search indexer stops consuming listing events: new listings never become "
        "searchable",
        (("listing.indexing-performance", "SEV2"),)),
    Fault("stale-cache", "the canary listing is cached with an old price and no expiry",
          (("listing.cache-freshness", "SEV3"),), _stale_on, _stale_off, _stale_is_on,
          notes=f"Redis key {STALE_KEY}"),
    _file_fault(
        "order-partition", "order-service.partitioned",
        "order-service cannot reach listing-service (a network partition), which answers "
        "everyone else",
        (("order.downstream-dependencies", "SEV2"),), content="listing-service\n"),
    Fault("saga-stuck", "a saga waits for its payment for 2 hours (awaiting_payment/charge)",
          (("order.saga-orchestration", "SEV2"),), _saga_on, _saga_off, _saga_is_on,
          notes="rows saga-gameday-1, order-gameday-1 in the orders database"),
    Fault("error-spike", "order-service logs 150 saga timeouts at once",
          (("order.error-patterns", "SEV2"),), _spike_on, _spike_off,
          lambda layout: (layout.faults / "order-service.error-spike").exists(),
          notes="lines appended to order-service's log (off removes them; they also leave "
                "the checks' error window after error_window_minutes)"),
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
)
BY_NAME = {fault.name: fault for fault in FAULTS}
