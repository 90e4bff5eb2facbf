"""The suite against the real sandbox, run as a user runs it: healthy, then with faults
injected (a backend stopped, a saga stuck), then healthy again."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.results import BACKEND_DEPENDENCY

from conftest import (
    SANDBOX_STATE,
    admin_dsn,
    environment_with,
    fault,
    run_checks,
    sandbox,
    sandbox_secrets,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]

CATALOG = load_catalog()
# Which catalog dependencies each sandbox component stands for.
# moto serves the sandbox's AWS: its tables, its bucket and its CloudWatch ([impact]).
STANDS_FOR = {"moto": {"dynamodb", "s3", "cloudwatch"}}


def outcomes(summary: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in summary["checks"]}


# What a scope-and-impact message ends with in the sandbox ([impact]): the share of the
# service's (simulated) requests that failed, none but in the order-error-rate game days, or
# none counted yet right after moto was reset (tests/test_impact_share.py judges it).
SHARE = re.compile(r"; (0 % of [a-z]+-service requests failed in the last 5 min \(0 of \d+, "
                   r"CloudWatch AWS/ApplicationELB\)|impact share unknown: no [a-z]+-service "
                   r"requests counted in the last 5 min \(CloudWatch AWS/ApplicationELB\); "
                   r"judged from [a-z ]+)$")


def without_share(message: str) -> str:
    """A scope-and-impact message without its share of failing requests (asserted there)."""
    assert SHARE.search(message), message
    return SHARE.sub("", message)


def dependents(component: str) -> set[str]:
    names = STANDS_FOR.get(component, {component})
    found = {cid for cid, entry in CATALOG.checks.items() if names & set(entry.depends_on)}
    if "cloudwatch" in names:
        # The sandbox's [impact] reads each service's requests from it: scope-and-impact
        # cannot measure the share (a blind spot, SEV3) while it is gone.
        found |= {cid for cid in CATALOG.checks if cid.endswith(".scope-and-impact")}
    return found


@pytest.fixture
def stopped(request: pytest.FixtureRequest) -> Iterator[str]:
    component = request.param
    sandbox("stop", component)
    try:
        yield component
    finally:
        sandbox("start", component)


def test_the_healthy_sandbox_passes_every_check(tmp_path: Path) -> None:
    result, summary = run_checks(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(outcomes(summary).values()) == {"passed"}
    assert set(outcomes(summary)) == set(CATALOG.checks)
    assert summary["verdict"]["status"] == "healthy"
    assert f"VERDICT HEALTHY: all {len(CATALOG.checks)} checks passed in sandbox" in result.stdout


def test_the_healthy_sandbox_passes_under_xdist(tmp_path: Path) -> None:
    result, summary = run_checks(tmp_path, "-n", "2")
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(outcomes(summary).values()) == {"passed"}
    assert len(summary["checks"]) == len(CATALOG.checks)


@pytest.mark.parametrize("mode", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_checks_that_judge_one_measurement_share_one_reading(tmp_path: Path,
                                                             mode: list[str]) -> None:
    """Connection usage judged by two checks is read once per run: sampled at two moments it
    once read 44/50 (passed) and 46/50 (failed) in one run. With xdist too: both checks
    belong to one service, so one worker."""
    result, summary = run_checks(tmp_path, *mode)
    assert result.returncode == 0, result.stdout[-3000:]
    evidence = {c["id"]: c["evidence"] for c in summary["checks"]}
    assert evidence["auth.postgresql-connectivity"]["activity"] == \
        evidence["auth.database-performance"]
    assert evidence["order.database-performance"]["sessions"] is not None
    assert evidence["order.database-performance"]["connections"] >= 1


@pytest.mark.parametrize("service", ["auth-service", "listing-service", "order-service",
                                     "ai-service"])
def test_a_service_marker_selects_that_services_checks_only(tmp_path: Path,
                                                            service: str) -> None:
    result, summary = run_checks(tmp_path, "-m", service)
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(outcomes(summary)) == {cid for cid, e in CATALOG.checks.items()
                                      if e.service == service}


@pytest.mark.parametrize("stopped", ["redis", "postgresql", "moto", "auth-service"],
                         indirect=True)
def test_a_stopped_backend_fails_exactly_its_dependents(tmp_path: Path, stopped: str) -> None:
    result, summary = run_checks(tmp_path)
    assert result.returncode == 1
    failed = {cid for cid, outcome in outcomes(summary).items() if outcome == "failed"}
    assert failed == dependents(stopped)
    assert {o for cid, o in outcomes(summary).items() if cid not in failed} == {"passed"}
    for check in summary["checks"]:
        if check["outcome"] == "failed":
            entry = CATALOG.checks[check["id"]]
            assert check["severity"] == CATALOG.severity_of(check["impact"]).level
            if check["id"] == "auth.jwt-secret-configuration" and stopped == "postgresql":
                # auth-service, its database gone, answers the canary's login with 503:
                # auth-service failing (its logs say why), not its JWT secrets; the database
                # that explains it is brought back first.
                assert (check["impact"], check["fixes"]) == ("degradation", [
                    *CATALOG.fix_for("postgresql", "refused").fixes,
                    *CATALOG.fix_for("auth-service", "unexpected_answer").fixes]), check
            elif stopped in ("postgresql", "redis"):
                # A database that refuses is no exhausted pool, stuck transaction or saga to
                # retry, nor a Redis that refuses a stale cache or a search to scale: bring
                # it back first (a symptom of it too: ai.end-to-end-search timing out).
                down = list(CATALOG.fix_for(stopped, "refused").fixes)
                shown = (check["message"], check.get("failures"), check["fixes"])
                assert check["fixes"][:len(down)] == down, shown
                assert check["fixes"][0].startswith("Bring "), shown
            elif stopped == "moto" and check["id"].endswith(".scope-and-impact"):
                # Its CloudWatch gone, the share of failing requests cannot be read: a blind
                # spot of the checks, with the fix that restores their view.
                assert check["fixes"] == list(entry.modes["metrics-unreadable"].fixes), check
            else:
                assert check["fixes"] == list(entry.fixes)
            assert check["commands"], check["id"]
            assert check["message"]
            assert f"FAIL {check['severity']} {check['service']} · {check['step']}" \
                in result.stdout
    assert summary["verdict"]["severity"] == min(
        c["severity"] for c in summary["checks"] if c["outcome"] == "failed")
    # Each failure pinned on the stopped component says how it failed: nothing listens.
    names = STANDS_FOR.get(stopped, {stopped})
    kinds = {f["kind"] for c in summary["checks"] for f in c["failures"]
             if BACKEND_DEPENDENCY.get(f["backend"], f["backend"]) in names}
    assert kinds == {"refused"}, [c["failures"] for c in summary["checks"]]
    # Escalation: a stopped dependency behind several services' failures is one incident.
    shared = {}
    for name in STANDS_FOR.get(stopped, {stopped}):
        services = {CATALOG.checks[c].service for c in failed
                    if name in CATALOG.checks[c].depends_on}
        if len(services) >= 2:
            shared[name] = sorted(services)
    assert {i["dependency"]: i["services"] for i in summary["incidents"]} == shared
    for name, services in shared.items():
        assert f"  INCIDENT {name} failing for {', '.join(services)}: one incident" \
            in result.stdout
    assert summary["outages"] == []


def test_a_deleted_table_or_bucket_and_a_refused_webhook_signature_get_their_own_fixes(
        tmp_path: Path) -> None:
    """Names that do not exist in the sandbox stand for a deleted table and bucket (nothing
    real is deleted), and a signing secret that is not the provider's for a receiver whose
    secret went out of sync: the check's own fixes (scale capacity, reconcile payments) would
    be wrong; the fix and commands for that kind of failure are shown instead."""
    env_file = environment_with(
        tmp_path, listings_table='"unibazzar-health-no-such-table"',
        images_bucket='"unibazzar-health-no-such-bucket"',
        webhook_secret_env='"UNIBAZZAR_HEALTH_SELFTEST_WRONG_SECRET"')
    result, summary = run_checks(
        tmp_path, "-m", "listing-service or order-service", env_file=env_file,
        extra_env={"UNIBAZZAR_HEALTH_SELFTEST_WRONG_SECRET": "whsec_not_the_providers"})
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"listing.dynamodb-table-status", "listing.cache-freshness",
                           "listing.s3-image-uploads", "order.payment-provider-webhooks"}, \
        result.stdout[-3000:]
    for check_id in ("listing.dynamodb-table-status", "listing.cache-freshness"):
        check = failed[check_id]
        assert [f["kind"] for f in check["failures"]] == ["missing_object"], check
        assert check["fixes"] == list(CATALOG.fix_for("dynamodb", "missing_object").fixes)
        assert check["commands"] == [
            "aws --endpoint-url 'http://127.0.0.1:25000' dynamodb describe-table --table-name "
            "unibazzar-health-no-such-table "
            "--region eu-west-1",
            "aws --endpoint-url 'http://127.0.0.1:25000' dynamodb list-backups --table-name "
            "unibazzar-health-no-such-table "
            "--region eu-west-1"]
    bucket = failed["listing.s3-image-uploads"]
    assert bucket["fixes"] == list(CATALOG.fix_for("s3", "missing_object").fixes)
    assert ("aws --endpoint-url 'http://127.0.0.1:25000' s3api head-bucket --bucket "
            "unibazzar-health-no-such-bucket --region eu-west-1"
            in bucket["commands"])
    webhook = failed["order.payment-provider-webhooks"]
    assert webhook["message"] == ("our webhook receiver rejects a correctly signed event: "
                                  "HTTP 400 (its webhook signing secret does not match the "
                                  "provider's)")
    assert webhook["fixes"] == [
        "Sync the webhook signing secret between the payment provider and order-service"]
    assert webhook["commands"][0] == (
        "curl -s -u \"${UNIBAZZAR_STRIPE_API_KEY}:\" "
        "'http://127.0.0.1:25420/v1/webhook_endpoints?limit=100'")
    assert webhook["failed_dependencies"] == ["order-service"]


def test_an_unresolvable_host_and_a_stalled_redis_get_their_own_fixes(
        tmp_path: Path, hang_listener: tuple[str, int]) -> None:
    """The AWS endpoint under a name that does not resolve, and Redis behind a listener that
    never answers (a paused or blocked server), in a copy of the sandbox environment."""
    host, port = hang_listener
    text = environment_with(tmp_path, endpoint_url='"http://nonexistent.invalid:25000"') \
        .read_text()
    assert text.count('"redis://127.0.0.1:26379/1"') == 1
    env_file = tmp_path / "stalled.toml"
    env_file.write_text(text.replace('"redis://127.0.0.1:26379/1"',
                                     f'"redis://{host}:{port}/1"'))
    result, summary = run_checks(tmp_path, "-m", "listing-service or ai-service",
                                 env_file=env_file)
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert {"listing.dynamodb-table-status", "listing.s3-image-uploads",
            "listing.related-systems", "ai.redis-cache-performance",
            "ai.related-systems"} <= set(failed), result.stdout[-3000:]
    for check_id in ("listing.dynamodb-table-status", "listing.s3-image-uploads",
                     "listing.related-systems"):
        check = failed[check_id]
        assert {f["kind"] for f in check["failures"]} == {"unreachable"}, check
        assert check["fixes"] == list(CATALOG.fix_for("*", "unreachable").fixes)
        assert check["commands"] == ["getent hosts nonexistent.invalid"]
    for check_id in ("ai.redis-cache-performance", "ai.related-systems"):
        check = failed[check_id]
        assert [f["kind"] for f in check["failures"]] == ["timeout"], check
        assert check["fixes"] == list(CATALOG.fix_for("redis", "timeout").fixes)
        assert [c.rsplit(" ", 2)[-2:] for c in check["commands"]] == [
            ["info", "clients"], ["client", "list"], ["get", "10"]]


def test_the_sandbox_recovers_after_faults(tmp_path: Path) -> None:
    """Runs after the fault tests: every stopped component came back healthy."""
    result, summary = run_checks(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(outcomes(summary).values()) == {"passed"}


def test_a_stuck_saga_is_named_in_the_verdict(tmp_path: Path) -> None:
    import psycopg

    admin = admin_dsn("orders")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (id, user_email, listing_id, amount_cents, status) "
                     "VALUES ('order-stuck-1', 'x@unibazzar.test', 'l-1', 100, 'pending')")
        conn.execute("INSERT INTO sagas (id, order_id, state, step, updated_at) VALUES "
                     "('saga-stuck-1', 'order-stuck-1', 'awaiting_payment', 'charge', "
                     "now() - interval '2 hours')")
    try:
        result, summary = run_checks(tmp_path, "-m", "order-service")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DELETE FROM sagas WHERE id = 'saga-stuck-1'")
            conn.execute("DELETE FROM orders WHERE id = 'order-stuck-1'")
    saga = next(c for c in summary["checks"] if c["id"] == "order.saga-orchestration")
    assert saga["outcome"] == "failed"
    assert saga["severity"] == "SEV2"
    assert saga["message"] == ("1 saga(s) stuck past 15 min: saga-stuck-1 "
                               "(awaiting_payment/charge, order order-stuck-1, idle 120 min)")
    assert saga["fixes"] == ["Retry failed saga steps manually"]
    assert "saga-stuck-1" in result.stdout
    # The saga orchestration logs the runbook asks for, read for its id, and its retry
    # through order-service's admin endpoint (the sandbox names saga_retry_path).
    assert saga["evidence"]["logs"]["since_s"] == 122 * 60, saga["evidence"]
    assert ("kubectl --server 'http://127.0.0.1:25443' logs -l app=order-service -n unibazzar "
            "--since=122m --tail=-1 --prefix | grep -E -e 'saga-stuck-1|order-stuck-1'"
            in saga["commands"]), saga["commands"]
    assert ("for saga in saga-stuck-1; do curl -s -X POST "
            "'http://127.0.0.1:28003/admin/sagas/'\"$saga\"'/retry' -w '\\n'; done"
            in saga["commands"]), saga["commands"]


def test_lock_waits_long_queries_and_idle_transactions_are_named(tmp_path: Path) -> None:
    """Real sessions on the sandbox's PostgreSQL: one holds a lock inside its transaction,
    one waits for it (a query whose literal must not reach any output), one sits idle in a
    transaction on the orders database. Thresholds lowered to 1 s in a copy of the sandbox
    environment."""
    import threading

    import psycopg

    env_file = environment_with(tmp_path, lock_wait_seconds="1", long_query_seconds="1",
                                idle_in_transaction_seconds="1")
    literal = "sekrit-literal-never-shown"
    with psycopg.connect(admin_dsn("auth"), autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS health_selftest_lock (x int)")
    holder = psycopg.connect(admin_dsn("auth"))
    waiter = psycopg.connect(admin_dsn("auth"), autocommit=True)
    idler = psycopg.connect(admin_dsn("orders"))
    holder_pid, waiter_pid, idler_pid = (c.info.backend_pid for c in (holder, waiter, idler))
    try:
        holder.execute("LOCK TABLE health_selftest_lock IN ACCESS EXCLUSIVE MODE")
        idler.execute("SELECT 1")
        waiting = threading.Thread(target=lambda: waiter.execute(
            f"SELECT count(*) FROM health_selftest_lock WHERE '{literal}' <> ''"), daemon=True)
        waiting.start()
        time.sleep(1.5)
        result, summary = run_checks(tmp_path, "-m", "auth-service or order-service",
                                     env_file=env_file)
    finally:
        holder.rollback()
        holder.close()
        idler.rollback()
        idler.close()
        waiting.join(10)
        waiter.close()
        with psycopg.connect(admin_dsn("auth"), autocommit=True) as setup:
            setup.execute("DROP TABLE IF EXISTS health_selftest_lock")
    checks = {c["id"]: c for c in summary["checks"]}
    auth = checks["auth.database-performance"]
    assert auth["outcome"] == "failed", auth
    assert auth["severity"] == "SEV2"
    assert auth["message"].startswith("auth database: 1 session(s) waiting on a lock >= 1 s: "
                                      f"pid {waiter_pid} ("), auth["message"]
    assert f"blocked by pid {holder_pid}" in auth["message"]
    assert "1 query(ies) running >= 1 s" in auth["message"]
    assert auth["fixes"] == ["Restart service if connection pool exhausted",
                             "Clear stuck transactions"]
    transactions = checks["order.database-transaction-health"]
    assert transactions["outcome"] == "failed", transactions
    assert f"1 idle in transaction: pid {idler_pid}" in transactions["message"]
    # Idle in a transaction is neither a long query nor a lock wait.
    assert checks["order.database-performance"]["outcome"] == "passed"
    everything = result.stdout + result.stderr + json.dumps(summary)
    assert literal not in everything
    assert "'…'" in json.dumps(auth["evidence"], ensure_ascii=False)


@pytest.fixture
def kube_apps() -> Iterator[Any]:
    """The sandbox's Kubernetes API, as an operator would change it; reset afterwards (the
    emulator restarts with its seeded objects)."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:25443"
    try:
        yield client.AppsV1Api(client.ApiClient(configuration))
    finally:
        sandbox("stop", "kubernetes")
        sandbox("start", "kubernetes")


def test_a_recent_rollout_is_named_and_a_stuck_one_fails(tmp_path: Path, kube_apps: Any) -> None:
    from datetime import UTC, datetime, timedelta

    rolled_out = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    deployment = kube_apps.read_namespaced_deployment("auth-service", "unibazzar")
    kube_apps.create_namespaced_replica_set("unibazzar", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": "auth-service-5c6d7", "namespace": "unibazzar",
            "creationTimestamp": rolled_out,
            "labels": {"app": "auth-service", "pod-template-hash": "5c6d7"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": "auth-service", "uid": deployment.metadata.uid,
                                 "controller": True}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "auth-service"}},
                 "template": {"metadata": {"labels": {"app": "auth-service"}},
                              "spec": {"containers": [{"name": "auth-service",
                                                       "image": "unibazzar/auth-service:2"}]}}},
    })
    kube_apps.patch_namespaced_deployment("auth-service", "unibazzar", {
        "metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}})
    kube_apps.patch_namespaced_deployment_status("auth-service", "unibazzar", {"status": {
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "lastUpdateTime": rolled_out, "lastTransitionTime": rolled_out,
             "message": 'ReplicaSet "auth-service-5c6d7" has successfully progressed.'}]}})

    # A rollout that landed and progressed: named, not a failure.
    result, summary = run_checks(tmp_path, "-m", "auth-service")
    assert result.returncode == 0, result.stdout[-3000:]
    [change] = summary["recent_changes"]
    assert (change["service"], change["revision"], change["replica_set"]) == (
        "auth-service", 2, "auth-service-5c6d7")
    assert 9.5 <= change["age_minutes"] <= 12
    assert "CHANGE auth-service: deployment auth-service revision 2 rolled out 10 min ago" \
        in result.stdout
    assert "rollout undo" not in result.stdout

    # The same rollout, stuck past its progress deadline: a failure, with the rollback.
    kube_apps.patch_namespaced_deployment_status("auth-service", "unibazzar", {"status": {
        "unavailableReplicas": 1, "updatedReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "auth-service-5c6d7" has timed out progressing.'}]}})
    result, summary = run_checks(tmp_path, "-m", "auth-service")
    assert result.returncode == 1
    checks = {c["id"]: c for c in summary["checks"]}
    stuck = checks["auth.recent-deployments"]
    assert stuck["outcome"] == "failed" and stuck["severity"] == "SEV2"
    assert stuck["message"] == (
        'rollout of auth-service revision 2 is stuck: ProgressDeadlineExceeded: ReplicaSet '
        '"auth-service-5c6d7" has timed out progressing. (1/2 updated, 1 unavailable)')
    assert stuck["fixes"] == ["Roll back the latest deployment if it preceded the failures"]
    assert ("kubectl --server 'http://127.0.0.1:25443' rollout undo deployment/auth-service "
            "-n unibazzar") in stuck["commands"]
    assert {c["id"] for c in summary["checks"] if c["outcome"] == "failed"} == {
        "auth.recent-deployments"}
    assert ("       if it preceded the failures: kubectl --server 'http://127.0.0.1:25443' "
            "rollout undo deployment/auth-service -n unibazzar") in result.stdout.splitlines()


def test_an_oom_killed_pod_and_memory_pressure_are_named(tmp_path: Path, kube_apps: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from kubernetes import client

    api = kube_apps.api_client
    pod = "ai-service-7d9f8-abc12"
    killed_at = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = client.CoreV1Api(api).read_namespaced_pod_status(pod, "unibazzar").status
    container = api.sanitize_for_serialization(status.container_statuses[0])
    container.update(restartCount=3, lastState={"terminated": {
        "reason": "OOMKilled", "exitCode": 137, "startedAt": killed_at, "finishedAt": killed_at}})
    client.CoreV1Api(api).patch_namespaced_pod_status(
        pod, "unibazzar", {"status": {"containerStatuses": [container]}})
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", "unibazzar", "pods", pod,
        {"containers": [{"name": "ai-service", "usage": {"cpu": "50m", "memory": "500Mi"}}]})

    result, summary = run_checks(tmp_path, "-m", "ai-service")
    assert result.returncode == 1
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    # The restart is the scope check's (every service's); memory is ai-service step 2's.
    assert set(failed) == {"ai.model-loading-and-memory", "ai.scope-and-impact"}
    assert without_share(failed["ai.scope-and-impact"]["message"]) == (
        f"ai-service is degraded: {pod} was OOMKilled 5 min ago (3 restarts)")
    check = failed["ai.model-loading-and-memory"]
    assert check["severity"] == "SEV2"
    assert check["message"] == (f"{pod} was OOMKilled 5 min ago (3 restarts); "
                                f"{pod} uses 98% of its memory limit (>= 90%)")
    assert check["fixes"] == ["Restart service to reload models",
                              "Scale up instances if CPU/memory bound"]
    assert ("kubectl --server 'http://127.0.0.1:25443' top pods -l app=ai-service "
            "-n unibazzar") in check["commands"]


def crash_loop(api: Any, service: str, pods: tuple[str, ...], restarts: int = 14) -> None:
    """As a kubelet reports it: the pods' container waiting in CrashLoopBackOff after its last
    run ended in an error a minute ago, and the Deployment short of those replicas."""
    from datetime import UTC, datetime, timedelta

    from kubernetes import client

    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ended = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for pod in pods:
        status = core.read_namespaced_pod_status(pod, "unibazzar").status
        container = api.sanitize_for_serialization(status.container_statuses[0])
        container.update(ready=False, restartCount=restarts, state={"waiting": {
            "reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
            lastState={"terminated": {"reason": "Error", "exitCode": 1, "startedAt": ended,
                                      "finishedAt": ended}})
        core.patch_namespaced_pod_status(pod, "unibazzar",
                                         {"status": {"containerStatuses": [container]}})
    ready = 2 - len(pods)
    apps.patch_namespaced_deployment_status(service, "unibazzar", {"status": {
        "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": len(pods)}})


@pytest.mark.parametrize("service", ["auth-service", "listing-service", "order-service",
                                     "ai-service"])
def test_a_crash_looping_pod_degrades_its_service(tmp_path: Path, kube_apps: Any,
                                                  service: str) -> None:
    """One pod of two in CrashLoopBackOff with 14 restarts, the Deployment at 1/2 ready: a
    degradation (SEV2) for every service, never a healthy verdict."""
    pod = f"{service}-7d9f8-abc12"
    crash_loop(kube_apps.api_client, service, (pod,))
    result, summary = run_checks(tmp_path, "-m", service)
    assert result.returncode == 1, result.stdout[-3000:]
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    prefix = service.split("-")[0]
    check = failed[f"{prefix}.scope-and-impact"]
    assert without_share(check["message"]) == (
        f"{service} is degraded: deployment {service} has 1/2 ready pods; {pod} is in "
        "CrashLoopBackOff (14 restarts)")
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    kubectl = "kubectl --server 'http://127.0.0.1:25443'"
    assert f"{kubectl} describe pod {pod} -n unibazzar" in check["commands"]
    assert f"{kubectl} logs {pod} -n unibazzar --previous --tail=200" in check["commands"]
    assert summary["verdict"]["status"] == "failing"


def test_a_service_whose_every_pod_crash_loops_is_down(tmp_path: Path, kube_apps: Any) -> None:
    pods = ("order-service-7d9f8-abc12", "order-service-7d9f8-def34")
    crash_loop(kube_apps.api_client, "order-service", pods, restarts=7)
    _, summary = run_checks(tmp_path, "-m", "order-service")
    check = {c["id"]: c for c in summary["checks"]}["order.scope-and-impact"]
    assert without_share(check["message"]) == (
        "order-service is down: deployment order-service has 0/2 ready pods; "
        f"{pods[0]} is in CrashLoopBackOff (7 restarts); {pods[1]} is in CrashLoopBackOff "
        "(7 restarts)")
    assert (check["impact"], check["severity"]) == ("outage", "SEV1")


def test_a_partition_between_order_service_and_a_dependency_is_told_apart(
        tmp_path: Path) -> None:
    """listing-service answers us, but order-service's own view says it cannot reach it."""
    with fault("order-service.partitioned", "listing-service\n"):
        result, summary = run_checks(tmp_path, "-m", "order-service")
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"order.downstream-dependencies"}, result.stdout[-2000:]
    assert failed["order.downstream-dependencies"]["message"] == (
        "order-service cannot reach listing-service (ConnectionRefusedError), though it "
        "answers from here: the path between them is broken")
    assert failed["order.downstream-dependencies"]["severity"] == "SEV2"


def test_a_search_that_misses_its_canary_fails_end_to_end(tmp_path: Path) -> None:
    env_file = environment_with(tmp_path, search_expect_id='"listing-9999"')
    result, summary = run_checks(tmp_path, "-m", "ai-service", env_file=env_file)
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"ai.end-to-end-search"}, result.stdout[-2000:]
    assert failed["ai.end-to-end-search"]["message"] == (
        "canary search 'canary health check listing' did not return listing-9999: "
        "['listing-0007', 'listing-0003', 'listing-0001'] (search 1 of 5)")
    assert failed["ai.end-to-end-search"]["severity"] == "SEV2"


def test_a_slow_search_is_a_major_performance_finding(tmp_path: Path) -> None:
    import re

    env_file = environment_with(tmp_path, search_p95_ms="0.001")
    _, summary = run_checks(tmp_path, "-m", "ai-service", env_file=env_file)
    check = next(c for c in summary["checks"] if c["id"] == "ai.end-to-end-search")
    assert check["outcome"] == "failed"
    assert (check["impact"], check["severity"]) == ("performance-major", "SEV2")
    # Judged as ai-service answered; what our own clock read is added where our host stalled.
    assert re.fullmatch(r"canary search p95 \d+ ms > 0\.001 ms over [2-5] requests( as this "
                        r"host received it \(our clock read \d+ ms; our own stall left out\))?",
                        check["message"]), check["message"]


@pytest.fixture
def payments_reset() -> Iterator[None]:
    """Payments made at the provider by a test cannot be deleted: the emulator restarts
    empty afterwards, and its seed pays the canary order again."""
    try:
        yield
    finally:
        sandbox("stop", "payments")
        sandbox("start", "payments")


def test_orders_and_payments_that_disagree_are_named(tmp_path: Path,
                                                     payments_reset: None) -> None:

    import psycopg
    import requests

    api, auth = "http://127.0.0.1:25420/v1", (sandbox_secrets()["UNIBAZZAR_STRIPE_API_KEY"], "")
    admin = admin_dsn("orders")
    with psycopg.connect(admin, autocommit=True) as conn:
        # Paid in the database, unknown to the provider.
        conn.execute("INSERT INTO orders (id, user_email, listing_id, amount_cents, status, "
                     "payment_intent_id) VALUES ('order-selftest-paid', 'x@unibazzar.test', "
                     "'l-1', 500, 'paid', 'pi_selftest_missing')")
        # Charged at the provider, its webhook lost: the order is still pending.
        conn.execute("INSERT INTO orders (id, user_email, listing_id, amount_cents, status) "
                     "VALUES ('order-selftest-lost', 'x@unibazzar.test', 'l-1', 700, 'pending')")
    try:
        method = requests.post(f"{api}/payment_methods", auth=auth, timeout=10, data={
            "type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
            "card[exp_year]": "2030", "card[cvc]": "123"}).json()["id"]
        intent = requests.post(f"{api}/payment_intents", auth=auth, timeout=10, data={
            "amount": "700", "currency": "eur", "payment_method": method, "confirm": "true",
            "metadata[order_id]": "order-selftest-lost"}).json()
        assert intent["status"] == "succeeded"
        env_file = environment_with(tmp_path, reconcile_grace_minutes="0")
        result, summary = run_checks(tmp_path, "-m", "order-service", env_file=env_file)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DELETE FROM orders WHERE id LIKE 'order-selftest-%'")
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"order.payment-reconciliation"}, result.stdout[-2000:]
    check = failed["order.payment-reconciliation"]
    # No money lost (the order exists and can be put right): a payment processing issue.
    assert (check["impact"], check["severity"]) == ("payments", "SEV2")
    assert check["message"] == (
        "2 order(s) disagree with the payment provider: order order-selftest-paid is paid in "
        "the database, but the provider has no payment pi_selftest_missing; payment "
        f"{intent['id']} (created 0 min ago) succeeded for order order-selftest-lost, which "
        "is 'pending' in the orders database")
    assert check["fixes"] == ["Reconcile payment provider state"]


def test_money_taken_with_no_order_or_twice_is_data_loss(tmp_path: Path,
                                                         payments_reset: None) -> None:
    """A customer charged for an order the database does not have, and one charged twice
    for one order: money lost, SEV1."""
    import psycopg
    import requests

    api, auth = "http://127.0.0.1:25420/v1", (sandbox_secrets()["UNIBAZZAR_STRIPE_API_KEY"], "")

    def charge(order_id: str, amount: int) -> dict[str, Any]:
        method = requests.post(f"{api}/payment_methods", auth=auth, timeout=10, data={
            "type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
            "card[exp_year]": "2030", "card[cvc]": "123"}).json()["id"]
        intent = requests.post(f"{api}/payment_intents", auth=auth, timeout=10, data={
            "amount": str(amount), "currency": "eur", "payment_method": method,
            "confirm": "true", "metadata[order_id]": order_id}).json()
        assert intent["status"] == "succeeded", intent
        return dict(intent)

    admin = admin_dsn("orders")
    try:
        gone = charge("order-selftest-gone", 300)
        twice = sorted((charge("order-selftest-twice", 900) for _ in range(2)),
                       key=lambda i: (i["created"], i["id"]))
        with psycopg.connect(admin, autocommit=True) as conn:
            # Paid, with the first payment: the second took the money again.
            conn.execute("INSERT INTO orders (id, user_email, listing_id, amount_cents, status, "
                         "payment_intent_id) VALUES ('order-selftest-twice', "
                         "'x@unibazzar.test', 'l-1', 900, 'paid', %s)", (twice[0]["id"],))
        env_file = environment_with(tmp_path, reconcile_grace_minutes="0")
        result, summary = run_checks(tmp_path, "-m", "order-service", env_file=env_file)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DELETE FROM orders WHERE id LIKE 'order-selftest-%'")
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"order.payment-reconciliation"}, result.stdout[-2000:]
    check = failed["order.payment-reconciliation"]
    assert (check["impact"], check["severity"]) == ("data", "SEV1")
    assert check["message"] == (
        "2 order(s) disagree with the payment provider (2 with money lost): payment "
        f"{gone['id']} (created 0 min ago) succeeded for order order-selftest-gone, which does "
        "not exist in the orders database; order order-selftest-twice was charged 2 times: "
        f"payments {twice[0]['id']}, {twice[1]['id']} succeeded")
    assert check["evidence"]["payment_issues"] == []
    assert check["fixes"] == ["Reconcile payment provider state"]


def test_a_stuck_search_indexer_fails_indexing_and_the_canary_is_cleaned_up(
        tmp_path: Path) -> None:
    import requests

    with fault("listing-service.indexer-paused"):
        result, summary = run_checks(tmp_path, "-m", "listing-service")
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"listing.indexing-performance"}, result.stdout[-2000:]
    check = failed["listing.indexing-performance"]
    listing_id = check["evidence"]["listing_id"]
    assert check["message"] == (f"canary listing {listing_id} not searchable after 3 s "
                                "(the search indexer is behind or stopped)")
    assert check["severity"] == "SEV2"
    assert check["evidence"]["delete_status"] == 200
    # Deleted at the source; once the indexer catches up, nothing of it is searchable.
    assert requests.get(f"http://127.0.0.1:28002/listings/{listing_id}", timeout=5).status_code \
        == 404
    result, summary = run_checks(tmp_path, "-m", "listing-service")
    assert result.returncode == 0, result.stdout[-2000:]


def test_stale_cached_data_is_named_with_the_fix(tmp_path: Path) -> None:
    """A cache entry that outlived a change (no expiry): the API serves it, DynamoDB holds
    something else."""
    import redis

    cache = redis.Redis(host="127.0.0.1", port=26379, db=0,
                        password=sandbox_secrets()["UNIBAZZAR_REDIS_PASSWORD"], socket_timeout=5)
    key = "listing:canary-listing-0001"
    cache.set(key, json.dumps({"listing_id": "canary-listing-0001", "category": "canary",
                               "created_at": "2026-01-01T00:00:00Z",
                               "title": "Canary textbook", "price_cents": "999"}))
    try:
        result, summary = run_checks(tmp_path, "-m", "listing-service")
    finally:
        cache.delete(key)
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"listing.cache-freshness"}, result.stdout[-2000:]
    check = failed["listing.cache-freshness"]
    assert check["message"] == (
        "stale data: listing-service serves canary listing canary-listing-0001 from its cache "
        "unlike DynamoDB (price_cents: '999' served, '1999' stored)")
    assert (check["impact"], check["severity"]) == ("minor", "SEV3")
    assert check["fixes"] == ["Clear Redis cache if stale data"]


def test_a_brute_force_on_login_is_an_attempt_not_a_breach(tmp_path: Path) -> None:
    """Failed logins from one source, read back from auth-service's pod logs; the log is
    cut back afterwards, so later runs see the window as it was."""
    import requests

    log = SANDBOX_STATE / "logs" / "auth-service.log"
    size = log.stat().st_size
    try:
        for _ in range(15):
            answer = requests.post("http://127.0.0.1:28001/login", timeout=5, json={
                "email": "canary@unibazzar.test", "password": "not-the-password"})
            assert answer.status_code == 401
        result, summary = run_checks(tmp_path, "-m", "auth-service")
    finally:
        with log.open("r+") as handle:
            handle.truncate(size)
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"auth.authentication-logs"}, result.stdout[-2000:]
    check = failed["auth.authentication-logs"]
    # Both pods of the emulated Deployment serve the same log file: each attempt counts twice.
    assert check["message"] == ("brute-force attempt: 30 of 30 failed logins in the last 15 "
                                "min come from 127.0.0.1, 0 of them blocked")
    # An attack under way that nothing stops: SEV1, above a rate limiter merely off (SEV2).
    assert (check["impact"], check["severity"]) == ("security-attempt", "SEV1")
    assert check["fixes"] == list(CATALOG.check("auth.authentication-logs")
                                  .mode("brute-force").fixes)
    assert len(check["evidence"]["last_failures"]) == 20
    result, _ = run_checks(tmp_path, "-m", "auth-service")
    assert result.returncode == 0, result.stdout[-2000:]


@contextmanager
def auth_log_lines(*lines: str) -> Iterator[None]:
    """Lines in auth-service's log as its logger writes them (local time, the level, the
    service), stamped now; the log is cut back afterwards, so later runs see the window as
    it was. For what the stand-in never logs itself: a rate limiter, another host."""
    from datetime import datetime

    log = SANDBOX_STATE / "logs" / "auth-service.log"
    size = log.stat().st_size
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,000")
    try:
        with log.open("a") as handle:
            handle.writelines(f"{stamp} {line}\n" for line in lines)
        yield
    finally:
        with log.open("r+") as handle:
            handle.truncate(size)


def test_a_brute_force_the_rate_limiter_blocks_is_sev3(tmp_path: Path) -> None:
    source = "198.51.100.7"
    with auth_log_lines(
            *[f"WARNING auth-service login failed: bad credentials source={source}"] * 4,
            *[f"WARNING auth-service login blocked: rate limited source={source}"] * 16):
        result, summary = run_checks(tmp_path, "-m", "auth-service")
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"auth.authentication-logs"}, result.stdout[-2000:]
    check = failed["auth.authentication-logs"]
    # Both pods serve the same log file: each line counts twice.
    assert check["message"] == ("brute-force attempt, being blocked: 40 of 40 failed logins "
                                f"in the last 15 min come from {source}, 32 of them blocked")
    assert (check["impact"], check["severity"]) == ("security-attempt-blocked", "SEV3")
    assert check["evidence"]["blocked_by_source"] == {source: 32}


def test_the_canary_logging_in_from_an_unknown_source_is_a_breach(tmp_path: Path) -> None:
    """The sandbox's canary logs in from 127.0.0.1 only (canary.known_sources): its password
    used anywhere else is out."""
    with auth_log_lines(
            "INFO auth-service login ok email=canary@unibazzar.test source=203.0.113.9"):
        result, summary = run_checks(tmp_path, "-m", "auth-service")
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"auth.authentication-logs"}, result.stdout[-2000:]
    check = failed["auth.authentication-logs"]
    assert check["message"] == (
        "canary account canary@unibazzar.test logged in from an unknown source in the last 15 "
        "min: 203.0.113.9 (2 login(s)); it logs in only from 127.0.0.1")
    assert (check["impact"], check["severity"]) == ("security", "SEV1")


def test_a_canary_login_answered_with_a_5xx_is_auth_service_failing(tmp_path: Path) -> None:
    """auth-service refused by its own database answers logins with 503: auth-service is
    failing (restart it, roll it back), not its JWT secrets (the check's own fix)."""
    import psycopg

    admin = admin_dsn("auth")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER ROLE auth_service NOLOGIN")
    try:
        result, summary = run_checks(tmp_path, "-m", "auth-service")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER ROLE auth_service LOGIN")
    failed = {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"auth.jwt-secret-configuration"}, result.stdout[-2000:]
    check = failed["auth.jwt-secret-configuration"]
    assert check["message"] == ("auth-service is failing: canary login answered HTTP 503 "
                                "(database unavailable)")
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    assert [(f["backend"], f["kind"], f["target"]) for f in check["failures"]] == [
        ("auth-service", "unexpected_answer", "http://127.0.0.1:28001/login")]
    assert "Rotate JWT secrets if compromised" not in check["fixes"]
    assert check["fixes"] == list(CATALOG.fix_for("auth-service", "unexpected_answer").fixes)
    assert any(c.endswith(" logs deployment/auth-service -n unibazzar --tail=100")
               for c in check["commands"]), check["commands"]
    assert any(c.endswith(" rollout status deployment/auth-service -n unibazzar")
               for c in check["commands"]), check["commands"]
    result, _ = run_checks(tmp_path, "-m", "auth-service")
    assert result.returncode == 0, result.stdout[-2000:]
