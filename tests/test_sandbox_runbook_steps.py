"""The runbook steps issue #10 added, against the real sandbox: each passes on the healthy
sandbox (test_sandbox_e2e.py's healthy runs) and fails, with its severity, under its own
fault, and exactly that check fails. Faults the stand-ins obey are files under the sandbox's
faults/ (docs/sandbox.md); what a fault makes a service log is cut back afterwards."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import URI_DEFAULT
from receivers import LoopbackServer
from werkzeug import Request, Response

from unibazzar_health.config.platform import ErrorLogs
from unibazzar_health.verdict.catalog import load_catalog

from conftest import (
    SANDBOX_STATE,
    environment_with,
    fault,
    run_checks,
    sandbox,
    sandbox_logs_kept,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("running_sandbox")]

CATALOG = load_catalog()
KUBECTL = "kubectl --server 'http://127.0.0.1:25443'"


def failed_checks(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in summary["checks"] if c["outcome"] == "failed"}


# ---- auth-service 4. Check rate limiting and DDoS protection ---------------------------------
def test_legitimate_traffic_rate_limited_is_a_degradation(tmp_path: Path) -> None:
    """The limiter set too low (2 logins per source in 10 s): the canary's third login in a
    row is refused. Its first went through, so step 2 still judges its token."""
    with sandbox_logs_kept(), fault("auth-service.rate-limit-too-low"):
        result, summary = run_checks(tmp_path, "-m", "auth-service")
    failed = failed_checks(summary)
    assert set(failed) == {"auth.rate-limit-legitimate-traffic", "auth.rate-limit-configured"}, \
        result.stdout[-3000:]
    # Read-only, the limits auth-service states say the same before any 429 is met.
    stated = failed["auth.rate-limit-configured"]
    assert stated["message"] == (
        "login rate limit set below legitimate traffic: per-source: 2 per 10 s is fewer than "
        "the canary's normal 3 logins in a row (stated: per-source: 2 per 10 s; per-account: "
        "20 per 10 s)")
    assert (stated["impact"], stated["severity"]) == ("degradation", "SEV2")
    check = failed["auth.rate-limit-legitimate-traffic"]
    assert check["message"] == ("legitimate traffic is rate-limited: the canary's login 3 of 3 "
                                "in a row was answered HTTP 429 (too many requests)")
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    assert check["fixes"] == ["Adjust rate limits if legitimate traffic blocked"]
    assert check["commands"] == [
        f"{KUBECTL} logs -l app=auth-service -n unibazzar --since=15m --tail=-1 --prefix | "
        "grep -E -e 'login blocked|rate limited|(status|HTTP)[ =:]*429\\b'",
        f"{KUBECTL} describe deployment/auth-service -n unibazzar"]
    result, _ = run_checks(tmp_path, "-m", "auth-service")
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_rate_limiting_is_a_security_finding(tmp_path: Path) -> None:
    """The limiter off: the whole burst (30 logins for an account that does not exist) is
    answered 401, never 429. The burst's own failed logins are no brute force for step 3."""
    with sandbox_logs_kept(), fault("auth-service.no-rate-limiting"):
        result, summary = run_checks(tmp_path, "-m", "auth-service")
    failed = failed_checks(summary)
    assert set(failed) == {"auth.rate-limit-protection", "auth.rate-limit-configured"}, \
        result.stdout[-3000:]
    # Read-only, the limits gone from the answers: worth a look, not a page.
    stated = failed["auth.rate-limit-configured"]
    assert stated["message"].startswith("auth-service's logins state no rate limit: none of "
                                        "the canary's 3 logins carried"), stated["message"]
    assert (stated["impact"], stated["severity"]) == ("non-critical", "SEV3")
    check = failed["auth.rate-limit-protection"]
    assert re.fullmatch(r"no rate limiting: a burst of 30 logins from one source in \d+\.\d s "
                        r"was never answered HTTP 429 \(30 x HTTP 401\)", check["message"]), \
        check["message"]
    # A control that is off with no attack seen: a weakness (SEV2); an attack under way that
    # nothing stops is the authentication logs' SEV1.
    assert (check["impact"], check["severity"]) == ("security-weakness", "SEV2")
    assert check["fixes"] == list(CATALOG.check("auth.rate-limit-protection").fixes)
    assert check["evidence"]["account"] == "canary+rate-limit-probe@unibazzar.test"
    result, _ = run_checks(tmp_path, "-m", "auth-service")
    assert result.returncode == 0, result.stdout[-3000:]


def test_limits_neither_stated_nor_declared_skip_the_read_only_check(tmp_path: Path) -> None:
    """An auth-service that sends no RateLimit headers, in an environment that does not say it
    does: nothing to read, so skipped with the key to set, not failed."""
    env_file = environment_with(tmp_path, rate_limit_headers="false")
    with sandbox_logs_kept(), fault("auth-service.no-rate-limiting"):
        result, summary = run_checks(tmp_path, "-m", "auth-service and not canary_write",
                                     env_file=env_file)
    check = {c["id"]: c for c in summary["checks"]}["auth.rate-limit-configured"]
    assert check["outcome"] == "skipped", result.stdout[-3000:]
    assert "services.auth-service.rate_limit_headers" in check["message"], check["message"]


def test_the_burst_is_limited_on_the_healthy_sandbox_and_read_only_skips_it(
        tmp_path: Path) -> None:
    with sandbox_logs_kept():
        result, summary = run_checks(tmp_path, "-m", "auth-service")
        assert result.returncode == 0, result.stdout[-3000:]
        checks = {c["id"]: c for c in summary["checks"]}
        burst = checks["auth.rate-limit-protection"]["evidence"]
        assert burst["limited_after"] is not None and burst["sent"] <= 30, burst
        assert checks["auth.rate-limit-legitimate-traffic"]["evidence"]["statuses"] == [200] * 3
        result, summary = run_checks(tmp_path, "-m", "auth-service", "--read-only")
    checks = {c["id"]: c for c in summary["checks"]}
    assert checks["auth.rate-limit-protection"]["outcome"] == "skipped"
    assert checks["auth.rate-limit-protection"]["message"].startswith("read-only run: writes ")
    assert checks["auth.rate-limit-legitimate-traffic"]["outcome"] == "passed"
    # Production's answer when no burst is allowed: the limits the answers state.
    stated = checks["auth.rate-limit-configured"]
    assert stated["outcome"] == "passed", stated
    assert stated["evidence"]["policies"] == [
        {"name": "per-source", "quota": 1000, "window_s": 10.0},
        {"name": "per-account", "quota": 20, "window_s": 10.0}]
    # The canary's own logins were counted by the per-account window; no other header kept.
    assert stated["evidence"]["remaining_after"] is not None
    assert all(set(h) == {"ratelimit-policy", "ratelimit"} for h in stated["evidence"]["headers"])


# ---- Investigation: analyze error patterns and rates -----------------------------------------
@contextmanager
def service_log_lines(service: str, lines: list[str], minutes_ago: float) -> Iterator[None]:
    """Lines in a service's log as its logger writes them (local time), stamped that long
    ago; every log is cut back afterwards."""
    stamp = (datetime.now() - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%d %H:%M:%S,000")
    with sandbox_logs_kept():
        with (SANDBOX_STATE / "logs" / f"{service}.log").open("a") as log:
            log.writelines(f"{stamp} {line}\n" for line in lines)
        yield


def saga_timeouts(count: int) -> list[str]:
    return [f"ERROR order-service saga step charge failed for order order-{n:04x}a9f3c2 "
            f"after {3000 + n} ms: TimeoutError (payment token=tok_{n}secret)"
            for n in range(count)]


def test_an_error_spike_is_a_degradation_with_its_signature(tmp_path: Path) -> None:
    """150 saga timeouts logged a minute ago (both pods serve the log: 300 lines), none
    before: a spike, its signature with ids, numbers and the token normalised."""
    with service_log_lines("order-service", saga_timeouts(150), minutes_ago=1):
        result, summary = run_checks(tmp_path, "-m", "order-service")
    failed = failed_checks(summary)
    assert set(failed) == {"order.error-patterns"}, result.stdout[-3000:]
    check = failed["order.error-patterns"]
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    signature = ("ERROR order-service saga step charge failed for order order-<hex> after <n> "
                 "ms: TimeoutError (payment token=***)")
    assert check["message"].startswith(
        "error spike in order-service's logs (pods of deployment/order-service): "), \
        check["message"]
    assert f"; top: 300 x {signature!r}" in check["message"], check["message"]
    # The log file ([error_logs] files) is judged on its own: each line once.
    for source, count in (("pods", 300), ("file", 150)):
        [top] = check["evidence"][source]["signatures"]
        assert (top["signature"], top["count"]) == (signature, count)
        assert "secret" not in top["example"] and "token=***" in top["example"]
    log_file = SANDBOX_STATE / "logs" / "order-service.log"
    assert check["evidence"]["file"]["source"] == str(log_file)
    assert check["commands"][:2] == [
        f"{KUBECTL} logs -l app=order-service -n unibazzar --since=5m --tail=-1 --prefix | "
        "grep -E -e " + shlex.quote(ErrorLogs().pattern),
        f"grep -E -e {shlex.quote(ErrorLogs().pattern)} {log_file} | tail -100"]
    result, _ = run_checks(tmp_path, "-m", "order-service")
    assert result.returncode == 0, result.stdout[-3000:]


def test_a_standing_error_rate_is_minor(tmp_path: Path) -> None:
    """As many errors in the window before: not a spike, a standing rate (SEV3)."""
    with service_log_lines("order-service", saga_timeouts(100), minutes_ago=7), \
            service_log_lines("order-service", saga_timeouts(100), minutes_ago=2):
        result, summary = run_checks(tmp_path, "-m", "order-service")
    failed = failed_checks(summary)
    assert set(failed) == {"order.error-patterns"}, result.stdout[-3000:]
    check = failed["order.error-patterns"]
    assert (check["impact"], check["severity"]) == ("minor", "SEV3")
    assert check["message"].startswith(
        "standing error rate in order-service's logs (pods of deployment/order-service): 40.0 "
        "error lines/min over the 5 min before the run (200 lines), as high as the 5 min "
        "before that (40.0/min)"), check["message"]


def test_errors_a_run_causes_are_not_judged_by_it(tmp_path: Path) -> None:
    """Lines stamped after the run started belong to the next run's window, not this one's:
    the window ends at the run's start."""
    with service_log_lines("order-service", saga_timeouts(150), minutes_ago=-1):
        result, summary = run_checks(tmp_path, "-m", "order-service")
    assert result.returncode == 0, result.stdout[-3000:]
    evidence = {c["id"]: c for c in summary["checks"]}["order.error-patterns"]["evidence"]
    assert evidence["pods"]["errors"] == evidence["file"]["errors"] == 0


def test_without_kubernetes_the_log_file_alone_finds_the_spike(tmp_path: Path) -> None:
    """An environment with no cluster access but the services' log files ([error_logs]
    files, the runbook's /var/log/unibazzar/{service}.log): the step is judged, not skipped."""
    from test_partial_environment import without_section

    env_file = without_section(tmp_path, "kubernetes")
    with service_log_lines("order-service", saga_timeouts(150), minutes_ago=1):
        result, summary = run_checks(tmp_path, "-m", "order-service", env_file=env_file)
    check = {c["id"]: c for c in summary["checks"]}["order.error-patterns"]
    assert check["outcome"] == "failed", result.stdout[-3000:]
    assert check["message"].startswith(
        f"error spike in order-service's logs ({SANDBOX_STATE}/logs/order-service.log): 30.0 "
        "error lines/min"), check["message"]
    assert set(check["evidence"]) == {"file"}
    result, summary = run_checks(tmp_path, "-m", "order-service", env_file=env_file)
    check = {c["id"]: c for c in summary["checks"]}["order.error-patterns"]
    assert check["outcome"] == "passed", result.stdout[-3000:]


def test_a_log_file_that_cannot_be_read_is_never_a_pass(tmp_path: Path) -> None:
    """A configured file that is not there leaves the service's errors unjudged: a failure
    naming the file, pinned on the logs, whatever the pods' logs say."""
    env_file = environment_with(tmp_path, files='"/tmp/unibazzar-sandbox/nowhere/{service}.log"')
    result, summary = run_checks(tmp_path, "-m", "order-service", env_file=env_file)
    failed = failed_checks(summary)
    assert set(failed) == {"order.error-patterns"}, result.stdout[-3000:]
    check = failed["order.error-patterns"]
    assert check["message"] == (
        "order-service's error lines could not be read: logs at "
        "/tmp/unibazzar-sandbox/nowhere/order-service.log: no such file (deadline 2 s)")
    assert check["evidence"]["pods"]["errors"] == 0
    assert check["commands"][1] == ("grep -E -e " + shlex.quote(ErrorLogs().pattern)
                                    + " /tmp/unibazzar-sandbox/nowhere/order-service.log"
                                    " | tail -100"), check["commands"]


# ---- ai-service: recommendation failures ------------------------------------------------------
def test_empty_recommendations_fail_end_to_end(tmp_path: Path) -> None:
    with sandbox_logs_kept(), fault("ai-service.recommendations-empty"):
        result, summary = run_checks(tmp_path, "-m", "ai-service")
    failed = failed_checks(summary)
    assert set(failed) == {"ai.end-to-end-recommendations"}, result.stdout[-3000:]
    check = failed["ai.end-to-end-recommendations"]
    assert check["message"] == ("recommendations for the canary user canary@unibazzar.test "
                                "are empty (none returned)")
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    # Nothing says ai-service is CPU- or memory-bound: no "Scale up instances"; its cached
    # searches cleared by prefix, with the command.
    assert check["fixes"] == ["Restart service to reload models", "Clear vector database cache"]
    assert ("REDISCLI_AUTH=\"${UNIBAZZAR_REDIS_PASSWORD}\" redis-cli -u "
            "'redis://127.0.0.1:26379/1' --scan --pattern 'search:*' | "
            "REDISCLI_AUTH=\"${UNIBAZZAR_REDIS_PASSWORD}\" xargs -r redis-cli -u "
            "'redis://127.0.0.1:26379/1' unlink") in check["commands"], check["commands"]


def test_slow_recommendations_are_a_major_performance_finding(tmp_path: Path) -> None:
    with sandbox_logs_kept(), fault("ai-service.recommendations-slow", "1.2"):
        result, summary = run_checks(tmp_path, "-m", "ai-service")
    failed = failed_checks(summary)
    assert set(failed) == {"ai.end-to-end-recommendations"}, result.stdout[-3000:]
    check = failed["ai.end-to-end-recommendations"]
    assert re.fullmatch(r"recommendations for the canary user took 1\d{3} ms > 1000 ms",
                        check["message"]), check["message"]
    assert (check["impact"], check["severity"]) == ("performance-major", "SEV2")


# ---- ai-service 2: CPU against limits; Investigation: gather logs and metrics -----------------
@pytest.fixture
def kube_api() -> Iterator[Any]:
    """The sandbox's Kubernetes API client; the emulator restarts with its seeded objects
    afterwards."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:25443"
    try:
        yield client.ApiClient(configuration)
    finally:
        sandbox("stop", "kubernetes")
        sandbox("start", "kubernetes")


def test_a_cpu_bound_pod_is_named_with_the_scale_command_and_the_services_context(
        tmp_path: Path, kube_api: Any) -> None:
    from kubernetes import client

    pod = "ai-service-7d9f8-abc12"
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", "unibazzar", "pods", pod,
        {"containers": [{"name": "ai-service", "usage": {"cpu": "480m", "memory": "200Mi"}}]})
    result, summary = run_checks(tmp_path, "-m", "ai-service")
    failed = failed_checks(summary)
    assert set(failed) == {"ai.model-loading-and-memory"}, result.stdout[-3000:]
    check = failed["ai.model-loading-and-memory"]
    assert check["message"] == f"{pod} uses 96% of its CPU limit (480m of 500m, >= 90%)"
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    assert "Scale up instances if CPU/memory bound" in check["fixes"]
    # Two replicas, half as many again.
    assert f"{KUBECTL} scale deployment/ai-service --replicas=3 -n unibazzar" \
        in check["commands"]
    # The runbook's "Gather logs and metrics from affected services", on the failed check.
    context = check["context"]
    assert context["problems"] == [] and context["metrics_available"] is True
    usage = {c["pod"]: (c["cpu_millicores"], c["cpu_limit_millicores"], c["memory_usage"])
             for c in context["pods"]}
    assert usage[pod] == (480.0, 500.0, round(200 / 512, 4))
    assert set(context["last_log_lines"]) == {pod, "ai-service-7d9f8-def34"}
    assert all(len(lines) <= 50 for lines in context["last_log_lines"].values())
    passed = [c for c in summary["checks"] if c["outcome"] == "passed"]
    assert passed and all(c["context"] is None for c in passed)


# ---- listing-service 1. Check DynamoDB table status and capacity ------------------------------
@pytest.fixture
def provisioned_table() -> Iterator[tuple[str, Any]]:
    """A provisioned copy of the listings table (5 RCU / 5 WCU, the canary listing in it)
    under a name of its own, so the CloudWatch metrics a test puts for it (moto keeps them)
    never reach another test; deleted afterwards."""
    import secrets

    import boto3

    from conftest import sandbox_secrets

    keys = sandbox_secrets()
    aws = {"endpoint_url": "http://127.0.0.1:25000", "region_name": "eu-west-1",
           "aws_access_key_id": keys["AWS_ACCESS_KEY_ID"],
           "aws_secret_access_key": keys["AWS_SECRET_ACCESS_KEY"]}
    dynamodb = boto3.client("dynamodb", **aws)
    name = f"unibazzar-health-provisioned-{secrets.token_hex(3)}"
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "listing_id", "AttributeType": "S"},
                              {"AttributeName": "category", "AttributeType": "S"},
                              {"AttributeName": "created_at", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "listing_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "by-category",
            "KeySchema": [{"AttributeName": "category", "KeyType": "HASH"},
                          {"AttributeName": "created_at", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}}],
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    canary = dynamodb.get_item(TableName="unibazzar-listings",
                               Key={"listing_id": {"S": "canary-listing-0001"}})["Item"]
    dynamodb.put_item(TableName=name, Item=canary)
    try:
        yield name, boto3.client("cloudwatch", **aws)
    finally:
        dynamodb.delete_table(TableName=name)


def test_a_throttled_table_near_its_capacity_is_named_with_the_scale_command(
        tmp_path: Path, provisioned_table: tuple[str, Any]) -> None:
    table, cloudwatch = provisioned_table

    def metric(name: str, value: float, index: str | None = None) -> dict[str, Any]:
        dimensions = [{"Name": "TableName", "Value": table}]
        if index:
            dimensions.append({"Name": "GlobalSecondaryIndexName", "Value": index})
        return {"MetricName": name, "Dimensions": dimensions, "Value": value,
                "Timestamp": datetime.now() - timedelta(minutes=2)}

    cloudwatch.put_metric_data(Namespace="AWS/DynamoDB", MetricData=[
        metric("ConsumedReadCapacityUnits", 288),  # 4.8 units/s over that minute, of 5
        metric("ConsumedWriteCapacityUnits", 30),
        metric("WriteThrottleEvents", 12),
        metric("ReadThrottleEvents", 3, "by-category")])
    env_file = environment_with(tmp_path, listings_table=f'"{table}"')
    result, summary = run_checks(tmp_path, "-m", "listing-service", env_file=env_file)
    failed = failed_checks(summary)
    assert set(failed) == {"listing.dynamodb-table-status"}, result.stdout[-3000:]
    check = failed["listing.dynamodb-table-status"]
    assert check["message"] == (
        f"DynamoDB table {table} (provisioned) is short of capacity: index by-category "
        f"throttled 3 reads in the last 15 min; table {table} throttled 12 writes in the last "
        f"15 min; table {table} consumed 4.8 of 5 provisioned read units/s at its busiest minute "
        "(96% >= 80%)")
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    assert check["fixes"] == ["Scale DynamoDB read/write capacity"]
    assert (f"aws --endpoint-url 'http://127.0.0.1:25000' dynamodb update-table --table-name "
            f"{table} --region eu-west-1 --provisioned-throughput "
            "ReadCapacityUnits=10,WriteCapacityUnits=10") in check["commands"]


class CloudWatchDenied:
    """A loopback proxy in front of the sandbox's AWS (moto) that passes every request on
    but CloudWatch's GetMetricData, answered HTTP 403 AccessDenied: the checks' identity
    lacking cloudwatch:GetMetricData, DynamoDB itself fine."""

    DROPPED = ("connection", "content-length", "transfer-encoding")

    def __init__(self, upstream: str = "127.0.0.1:25000") -> None:
        self.denied = 0
        self.upstream = upstream
        self.server = LoopbackServer()
        self.server.expect_request(URI_DEFAULT).respond_with_handler(self.forward)
        self.server.start()
        self.url = self.server.base

    def forward(self, request: Request) -> Response:
        import http.client

        path, body = request.environ["RAW_URI"], request.get_data()
        asked = path + str(request.headers.get("X-Amz-Target", "")) + body.decode("latin-1")
        if "GetMetricData" in asked:
            self.denied += 1
            return Response(b"", 403, [("x-amzn-query-error", "AccessDenied;Sender")])
        host, port = self.upstream.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request(request.method, path, body=body or None,
                     headers={k: v for k, v in request.headers.items()
                              if k.lower() not in self.DROPPED})
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        return Response(data, answer.status, [(k, v) for k, v in answer.getheaders()
                                              if k.lower() not in self.DROPPED])

    def close(self) -> None:
        self.server.close()


def test_capacity_that_cannot_be_read_is_no_silent_pass_and_no_outage(
        tmp_path: Path) -> None:
    """CloudWatch refusing the checks (no cloudwatch:GetMetricData): the table is ACTIVE but
    throttling would go unseen. The checks' own AWS identity refused is their configuration,
    not the platform's: the check is broken (the verdict incomplete, exit 6, nobody paged),
    with the fix for a refused identity, not "scale the table"."""
    proxy = CloudWatchDenied()
    try:
        env_file = environment_with(tmp_path, endpoint_url=f'"{proxy.url}"')
        result, summary = run_checks(tmp_path, "-m", "listing-service", env_file=env_file)
    finally:
        proxy.close()
    assert proxy.denied, "the check never asked CloudWatch"
    assert failed_checks(summary) == {}, result.stdout[-3000:]
    assert result.returncode == 6, result.stdout[-3000:]
    broken = {c["id"]: c for c in summary["checks"] if c["outcome"] == "broken"}
    # (scope-and-impact reads its request counts from CloudWatch too, where [impact] says so)
    assert "listing.dynamodb-table-status" in broken, result.stdout[-3000:]
    check = broken["listing.dynamodb-table-status"]
    assert check["message"].startswith(
        "DynamoDB table unibazzar-listings is ACTIVE, but its capacity could not be judged: "
        "cloudwatch at CloudWatch AWS/DynamoDB metrics of table unibazzar-listings "
        "(eu-west-1): "), check["message"]
    assert check["severity"] is None
    assert [r["dependency"] for r in summary["refused_credentials"]] == ["cloudwatch"]
    [cloudwatch] = check["failures"]
    assert (cloudwatch["backend"], cloudwatch["kind"]) == ("cloudwatch", "auth_rejected")
    assert check["fixes"] == list(CATALOG.fix_for("cloudwatch", "auth_rejected").fixes)
    assert check["commands"][0] == f"aws --endpoint-url '{proxy.url}' sts get-caller-identity"
    assert any("--metric-name ReadThrottleEvents" in c for c in check["commands"])


# ---- listing-service 2. Review indexing performance, read-only --------------------------------
def events_queue() -> dict[str, Any]:
    import requests

    from conftest import sandbox_secrets

    auth = ("unibazzar", sandbox_secrets()["UNIBAZZAR_RABBITMQ_PASSWORD"])
    answer = requests.get("http://127.0.0.1:25673/api/queues/%2F/search-indexer", auth=auth,
                          timeout=5)
    answer.raise_for_status()
    return dict(answer.json())


def wait_for_queue(ready: Any, seconds: float = 20) -> dict[str, Any]:
    """The management API samples every few seconds: wait for the state the test needs."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        queue = events_queue()
        if ready(queue) or time.monotonic() > deadline:
            return queue
        time.sleep(0.5)


def test_a_lagging_indexer_is_found_without_writing_a_canary(tmp_path: Path) -> None:
    """As in production (no canary writes): the indexer stuck, three events of two minutes
    ago waiting on its queue. Their routing key means nothing to the indexer, which acks
    them once it runs again."""
    import time

    import requests

    from conftest import sandbox_secrets

    auth = ("unibazzar", sandbox_secrets()["UNIBAZZAR_RABBITMQ_PASSWORD"])
    stamp = int(time.time()) - 120
    env_file = environment_with(tmp_path, listing_writes="false")
    try:
        with fault("listing-service.indexer-paused"):
            for _ in range(3):
                requests.post(
                    "http://127.0.0.1:25673/api/exchanges/%2F/listing.events/publish", auth=auth,
                    timeout=5, json={"properties": {"timestamp": stamp}, "payload": "{}",
                                     "routing_key": "listing.health-selftest",
                                     "payload_encoding": "string"}).raise_for_status()
            wait_for_queue(lambda q: q.get("messages", 0) >= 3)
            result, summary = run_checks(tmp_path, "-m", "listing-service", env_file=env_file)
    finally:
        wait_for_queue(lambda q: q.get("messages", 0) == 0)
    failed = failed_checks(summary)
    assert set(failed) == {"listing.indexing-lag"}, result.stdout[-3000:]
    check = failed["listing.indexing-lag"]
    assert re.fullmatch(r"the search indexer lags behind search-indexer: \d+ events waiting; "
                        r"the oldest waiting event is 1[2-5]\d s old \(> 60 s\)",
                        check["message"]), check["message"]
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    assert check["fixes"] == list(CATALOG.check("listing.indexing-lag").fixes)
    assert check["fixes"][0] == "Restart RabbitMQ consumers if backed up"
    assert f"{KUBECTL} rollout restart deployment/listing-service -n unibazzar" \
        in check["commands"]
    skipped = {c["id"]: c for c in summary["checks"]}["listing.indexing-performance"]
    assert skipped["outcome"] == "skipped"


def test_a_listing_whose_event_was_lost_is_found_without_writing_a_canary(
        tmp_path: Path) -> None:
    """The queue healthy and empty, yet a listing of five minutes ago is not searchable: only
    the newest indexed listing against the newest tells (as in production: no canary)."""
    env_file = environment_with(tmp_path, listing_writes="false")
    sandbox("fault", "listing-not-indexed", "on")
    try:
        result, summary = run_checks(tmp_path, "-m", "listing-service", env_file=env_file)
    finally:
        sandbox("fault", "listing-not-indexed", "off")
    failed = failed_checks(summary)
    assert set(failed) == {"listing.indexing-lag"}, result.stdout[-3000:]
    check = failed["listing.indexing-lag"]
    assert re.fullmatch(
        r"the search index lags behind the listings: 1 of the 2 newest listings are not in "
        r"the search index, the oldest, listing-gameday-unindexed, created [5-7] min ago; the "
        r"newest indexed listing \(canary-listing-0001\) is (\d+ s|\d+ (d|h|min)( \d+ h| \d+ "
        r"min)*) older than the newest \(listing-gameday-unindexed\) \(> 60 s\)",
        check["message"]), check["message"]
    assert (check["impact"], check["severity"]) == ("degradation", "SEV2")
    index = check["evidence"]["index"]
    assert index["newest_id"] == "listing-gameday-unindexed" and index["not_indexed"] == 1
    assert check["evidence"]["queue"]["waiting"] == 0
    result, summary = run_checks(tmp_path, "-m", "listing-service", env_file=env_file)
    assert result.returncode == 0, result.stdout[-3000:]
