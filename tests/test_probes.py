"""Probes against the real servers of the sandbox, against a listener that accepts and never
answers, against a closed port, an unresolvable host, and servers that stop answering after
their handshake; every failure says its kind (FailureKind).

Targets are built the way the checks build them (CheckContext over environments/sandbox.toml)
and re-aimed with dataclasses.replace.
"""

from __future__ import annotations

import importlib
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from pytest_httpserver import URI_DEFAULT
from receivers import LoopbackServer
from werkzeug import Request, Response

from unibazzar_health.config.environment import load_environment
from unibazzar_health.judges.runbook import CheckContext
from unibazzar_health.probes import (
    DeadlineExceeded,
    FailureKind,
    ProbeError,
    dynamodb,
    http,
    kubernetes,
    payments,
    postgresql,
    rabbitmq,
    redis,
    s3,
    vectordb,
)
from unibazzar_health.probes.aws import client as aws_client

from conftest import admin_dsn, named_variables

ROOT = Path(__file__).resolve().parent.parent

DEADLINE = 1.0
# Every probe is bounded by ONE deadline against these dead servers (k = 1):
# - postgresql: connect (and statements) run under probes.bounded, since libpq's
#   connect_timeout counts whole seconds with a 2 s floor;
# - redis: socket_timeout on the first PING (the listener accepts at once, so
#   socket_connect_timeout is not spent);
# - rabbitmq publish: pika's stack_timeout covers TCP + AMQP handshake, and probes.bounded
#   the exchange after it;
# - requests (management API, http, payments, vector-db), boto3 and the kubernetes client:
#   a (connect, read) timeout pair, so up to 2 deadlines against a host that drops SYNs; a
#   listener that accepts costs only the read timeout, i.e. one deadline.
# MARGIN covers what happens outside the clocks: boto3 building its client (~0.2 s),
# thread start-up, scheduling.
MARGIN = 0.5


@pytest.fixture(scope="module")
def ctx(running_sandbox: None) -> CheckContext:
    return CheckContext(load_environment(ROOT / "environments" / "sandbox.toml"))


@pytest.fixture(scope="module")
def aim_ctx(tmp_path_factory: pytest.TempPathFactory) -> CheckContext:
    """The sandbox's environment without the sandbox: its targets only, for probes aimed at
    dead addresses (no server that checks a secret is reached), so these tests run beside
    the ones that stand on the sandbox. Every secret is a stand-in."""
    text = (ROOT / "environments" / "sandbox.toml").read_text()
    path = tmp_path_factory.mktemp("aim") / "environment.toml"
    path.write_text(re.sub(r"(?m)^secrets_file = .*\n", "", text))
    return CheckContext(load_environment(path, dict.fromkeys(named_variables(text),
                                                             "stand-in")))


@pytest.fixture(scope="module", autouse=True)
def clients_imported() -> None:
    """Import the clients once, so a stopwatch measures I/O, not a first import."""
    for name in ("psycopg", "redis", "pika", "requests", "boto3", "kubernetes.client"):
        importlib.import_module(name)


@pytest.fixture
def closed_port() -> Iterator[tuple[str, int]]:
    """A port bound but not listening: connections are refused, and nobody can take it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield ("127.0.0.1", sock.getsockname()[1])
    sock.close()


# ---- every probe, aimed at an address ----------------------------------------------------
Aimed = Callable[[CheckContext, str, float], object]  # (context, "host:port", deadline)


def _broker(ctx: CheckContext, at: str, deadline: float) -> rabbitmq.BrokerTarget:
    return replace(ctx.broker(), url=f"amqp://unibazzar@{at}/%2F",
                   management_url=f"http://{at}", deadline=deadline)


def _postgres(ctx: CheckContext, at: str, deadline: float) -> postgresql.PostgresTarget:
    return replace(ctx.postgres("auth"), dsn=f"postgresql://unibazzar_health@{at}/auth",
                   deadline=deadline)


def _provider(ctx: CheckContext, at: str, deadline: float) -> payments.ProviderTarget:
    spec = ctx.require("payments", ctx.env.spec.payments)
    return payments.ProviderTarget(f"http://{at}", ctx.env.secret(spec.api_key_env) or "",
                                   deadline)


# probe -> (the backend its errors must name, the probe aimed at an address)
PROBES: dict[str, tuple[str, Aimed]] = {
    "postgresql.connectivity": ("postgresql", lambda ctx, at, d: postgresql.connectivity(
        _postgres(ctx, at, d))),
    "postgresql.activity": ("postgresql", lambda ctx, at, d: postgresql.activity(
        _postgres(ctx, at, d))),
    "postgresql.fetch": ("postgresql", lambda ctx, at, d: postgresql.fetch(
        _postgres(ctx, at, d), "SELECT 1")),
    "redis.cache_performance": ("redis", lambda ctx, at, d: redis.cache_performance(
        replace(ctx.redis("ai-cache"), url=f"redis://{at}/1", deadline=d))),
    "redis.ping": ("redis", lambda ctx, at, d: redis.ping(
        replace(ctx.redis("ai-cache"), url=f"redis://{at}/1", deadline=d))),
    "rabbitmq.publish_canary": ("rabbitmq", lambda ctx, at, d: rabbitmq.publish_canary(
        _broker(ctx, at, d), "listing.events")),
    "rabbitmq.reachable": ("rabbitmq", lambda ctx, at, d: rabbitmq.reachable(
        _broker(ctx, at, d))),
    "rabbitmq.queue_state": ("rabbitmq-management", lambda ctx, at, d: rabbitmq.queue_state(
        _broker(ctx, at, d), "search-indexer")),
    "dynamodb.describe_table": ("dynamodb", lambda ctx, at, d: dynamodb.describe_table(
        replace(ctx.aws("dynamodb"), endpoint_url=f"http://{at}", deadline=d),
        "unibazzar-listings")),
    "s3.canary_round_trip": ("s3", lambda ctx, at, d: s3.canary_round_trip(
        replace(ctx.aws("s3"), endpoint_url=f"http://{at}", deadline=d),
        "unibazzar-listing-images", "health-checks/canary/")),
    "s3.head_bucket": ("s3", lambda ctx, at, d: s3.head_bucket(
        replace(ctx.aws("s3"), endpoint_url=f"http://{at}", deadline=d),
        "unibazzar-listing-images")),
    "kubernetes.rollout_history": ("kubernetes", lambda ctx, at, d: kubernetes.rollout_history(
        replace(ctx.kube(), api_url=f"http://{at}", deadline=d), "auth-service")),
    "kubernetes.pods_health": ("kubernetes", lambda ctx, at, d: kubernetes.pods_health(
        replace(ctx.kube(), api_url=f"http://{at}", deadline=d), "ai-service")),
    "kubernetes.pod_logs": ("kubernetes", lambda ctx, at, d: kubernetes.pod_logs(
        replace(ctx.kube(), api_url=f"http://{at}", deadline=d), "ai-service", 600)),
    "http.request": ("auth-service", lambda ctx, at, d: http.request(
        "auth-service", "GET", f"http://{at}/health", d)),
    "payments.provider_state": ("payments", lambda ctx, at, d: payments.provider_state(
        _provider(ctx, at, d))),
    "payments.recent_payment_intents": ("payments", lambda ctx, at, d:
                                        payments.recent_payment_intents(_provider(ctx, at, d))),
    "payments.payment_intent": ("payments", lambda ctx, at, d: payments.payment_intent(
        _provider(ctx, at, d), "pi_unibazzar_health")),
    "vectordb.heartbeat": ("vector-db", lambda ctx, at, d: vectordb.heartbeat(
        replace(ctx.vector_db(), url=f"http://{at}", deadline=d))),
    "vectordb.collection_health": ("vector-db", lambda ctx, at, d: vectordb.collection_health(
        replace(ctx.vector_db(), url=f"http://{at}", deadline=d), "listings")),
}


def _fails(probe: Callable[[], object], give_up: float = 10.0) -> tuple[ProbeError, float]:
    """The ProbeError ``probe()`` raises and how long it took. The probe runs on a daemon
    thread, so a probe that ignores its deadline fails this test instead of hanging it."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(probe())
        except BaseException as exc:
            outcome.append(exc)

    start = time.perf_counter()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(give_up)
    elapsed = time.perf_counter() - start
    if not outcome:
        pytest.fail(f"the probe was still running after {give_up:g} s")
    if not isinstance(outcome[0], ProbeError):
        pytest.fail(f"expected a ProbeError after {elapsed:.2f} s, got {outcome[0]!r}")
    return outcome[0], elapsed


@pytest.mark.parametrize("name", list(PROBES))
def test_a_backend_that_never_answers_costs_one_deadline(
        name: str, aim_ctx: CheckContext, hang_listener: tuple[str, int]) -> None:
    backend, aimed = PROBES[name]
    host, port = hang_listener
    error, elapsed = _fails(lambda: aimed(aim_ctx, f"{host}:{port}", DEADLINE))
    print(f"{name}: {elapsed:.3f} s against the hang listener")
    assert isinstance(error, DeadlineExceeded), error
    # Not before the deadline (it really waited), not much after it.
    assert DEADLINE * 0.9 <= elapsed < DEADLINE + MARGIN, f"{elapsed:.2f} s: {error}"
    message = str(error)
    assert message.startswith(f"{backend} at "), message
    assert "did not answer within the deadline (deadline 1 s)" in message, message
    assert error.deadline == DEADLINE
    assert error.kind is FailureKind.TIMEOUT


@pytest.mark.parametrize("name", list(PROBES))
def test_a_refused_connection_is_a_clear_error_at_once(
        name: str, aim_ctx: CheckContext, closed_port: tuple[str, int]) -> None:
    backend, aimed = PROBES[name]
    host, port = closed_port
    error, elapsed = _fails(lambda: aimed(aim_ctx, f"{host}:{port}", 5.0))
    # Refused is an answer: nothing waits for the 5 s deadline, nothing calls it a timeout.
    assert not isinstance(error, DeadlineExceeded), error
    assert elapsed < 1.0, f"{elapsed:.2f} s: {error}"
    message = str(error)
    assert message.startswith(f"{backend} at "), message
    assert "refused" in message.lower(), message
    assert "(deadline 5 s)" in message, message
    assert error.kind is FailureKind.REFUSED, message


@pytest.mark.parametrize("name", list(PROBES))
def test_a_host_name_that_does_not_resolve_is_unreachable(name: str,
                                                          aim_ctx: CheckContext) -> None:
    """.invalid never resolves (RFC 2606): a wrong host in the environment file, or DNS
    gone. Not a timeout, not refused: what to check next is the name and the network."""
    backend, aimed = PROBES[name]
    error, _ = _fails(lambda: aimed(aim_ctx, "nonexistent.invalid:5555", 5.0))
    assert str(error).startswith(f"{backend} at "), error
    assert error.kind is FailureKind.UNREACHABLE, error


# ---- servers that complete their handshake, then stop answering ---------------------------
class StallingProxy:
    """Relays to a real server until the server has sent ``marker`` (the end of its
    handshake), then drops everything the server says: a server hung mid-session."""

    # Hand-written: a TCP relay for AMQP and PostgreSQL, not HTTP.
    def __init__(self, upstream: tuple[str, int], marker: bytes) -> None:
        self.upstream, self.marker = upstream, marker
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.marker),
                             daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, marker: bytes | None) -> None:
        seen, relaying = b"", True
        try:
            while chunk := source.recv(65536):
                if relaying:
                    sink.sendall(chunk)
                    seen += chunk
                    relaying = marker is None or marker not in seen
        except OSError:
            return

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def stalling_proxy() -> Iterator[Callable[[tuple[str, int], bytes], StallingProxy]]:
    proxies: list[StallingProxy] = []

    def start(upstream: tuple[str, int], marker: bytes) -> StallingProxy:
        proxies.append(StallingProxy(upstream, marker))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()  # the abandoned probe threads see EOF and end


# Connection.OpenOk (class 10, method 41) ends the AMQP handshake; ReadyForQuery ('Z',
# length 5) ends PostgreSQL's start-up.
@pytest.mark.parametrize(("name", "upstream", "marker"), [
    pytest.param("rabbitmq.publish_canary", ("127.0.0.1", 25672), b"\x00\x0a\x00\x29",
                 id="rabbitmq.publish_canary"),
    pytest.param("postgresql.connectivity", ("127.0.0.1", 25432), b"Z\x00\x00\x00\x05",
                 id="postgresql.connectivity"),
    pytest.param("rabbitmq.reachable", ("127.0.0.1", 25672), b"\x00\x0a\x00\x29",
                 id="rabbitmq.reachable"),
])
def test_a_backend_that_hangs_after_its_handshake_costs_one_deadline(
        name: str, upstream: tuple[str, int], marker: bytes, ctx: CheckContext,
        stalling_proxy: Callable[[tuple[str, int], bytes], StallingProxy]) -> None:
    backend, aimed = PROBES[name]
    proxy = stalling_proxy(upstream, marker)
    error, elapsed = _fails(lambda: aimed(ctx, proxy.address, DEADLINE))
    print(f"{name}: {elapsed:.3f} s against a server hung after its handshake")
    assert isinstance(error, DeadlineExceeded), error
    assert elapsed < DEADLINE + MARGIN, f"{elapsed:.2f} s: {error}"
    assert str(error).startswith(f"{backend} at "), error


# ---- a Kubernetes API whose pod logs answer their headers, then drip ---------------------
class LogsApi:
    """A Kubernetes API with one Deployment of ``pods`` pods, whose log reads answer as
    ``logs`` says: "drip" (headers, then a byte every 0.1 s for a minute), "broken" (headers
    promising 1000 bytes, 10 of them, then the connection closed) or "slow" (the whole log
    after ``delay`` seconds)."""

    def __init__(self, logs: str, pods: int = 3, delay: float = 0.0) -> None:
        self.logs, self.delay = logs, delay
        self.stop = threading.Event()
        labels = {"app": "ai-service"}
        deployment = {"kind": "Deployment", "apiVersion": "apps/v1",
                      "metadata": {"name": "ai-service", "namespace": "unibazzar"},
                      "spec": {"replicas": pods, "selector": {"matchLabels": labels},
                               "template": {"metadata": {"labels": labels},
                                            "spec": {"containers": [{"name": "app"}]}}},
                      "status": {"replicas": pods, "readyReplicas": pods}}
        pod_list = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
            {"metadata": {"name": f"ai-service-{n}", "namespace": "unibazzar",
                          "labels": labels}, "spec": {"containers": [{"name": "app"}]}}
            for n in range(pods)]}
        self.server = LoopbackServer()
        expect = self.server.expect_request
        expect(re.compile(r".*/log$"), method="GET").respond_with_handler(self.log)
        expect(re.compile(r".*/deployments/ai-service$"), method="GET").respond_with_json(
            deployment)
        expect(re.compile(r".*/pods$"), method="GET").respond_with_json(pod_list)
        expect(URI_DEFAULT).respond_with_data("", 404)
        self.server.start()
        self.url = self.server.base

    def log(self, request: Request) -> Response:
        pod = request.path.split("/")[-2]
        body = f"2026-11-27T10:00:00Z log line of {pod}\n".encode()
        if self.logs == "slow":
            self.stop.wait(self.delay)
            return Response(body, content_type="text/plain")

        def drip() -> Iterator[bytes]:
            if self.logs == "broken":
                yield b"x" * 10
                # Cut off mid-body: werkzeug's socket, shut under the promised length.
                request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
                return
            for _ in range(600):
                if self.stop.wait(0.1):
                    return
                yield b"."

        # Streamed: werkzeug writes and flushes each piece as it comes.
        return Response(drip(), headers={"Content-Length": "1000"}, content_type="text/plain")

    def target(self, deadline: float = DEADLINE) -> kubernetes.KubeTarget:
        return kubernetes.KubeTarget(namespace="unibazzar", mode="url", context=None,
                                     api_url=self.url, token=None, deadline=deadline)

    def close(self) -> None:
        self.stop.set()
        self.server.close()


@pytest.fixture
def logs_api() -> Iterator[Callable[..., LogsApi]]:
    started: list[LogsApi] = []

    def start(logs: str, pods: int = 3, delay: float = 0.0) -> LogsApi:
        started.append(LogsApi(logs, pods, delay))
        return started[-1]

    yield start
    for api in started:
        api.close()


def test_pod_logs_that_drip_after_their_headers_cost_one_deadline_for_all_pods(
        logs_api: Callable[..., LogsApi]) -> None:
    """Each recv gets a byte within the client's read timeout, so only a deadline on the
    whole read (the body included) ends it; three pods read at once cost one deadline."""
    api = logs_api("drip", pods=3)
    error, elapsed = _fails(lambda: kubernetes.pod_logs(api.target(), "ai-service", 600))
    print(f"pod_logs: {elapsed:.3f} s against 3 pods whose logs drip")
    assert isinstance(error, DeadlineExceeded), error
    assert DEADLINE * 0.9 <= elapsed < DEADLINE + MARGIN, f"{elapsed:.2f} s: {error}"
    assert str(error).startswith(f"kubernetes at {api.url}: "), error
    assert error.kind is FailureKind.TIMEOUT


def test_pod_logs_cut_off_mid_body_are_a_probe_error_not_a_crash(
        logs_api: Callable[..., LogsApi]) -> None:
    """urllib3 raises ProtocolError (IncompleteRead) from the body's read: untyped, it would
    make every check reading logs broken instead of naming the API's failure."""
    api = logs_api("broken", pods=2)
    error, _ = _fails(lambda: kubernetes.pod_logs(api.target(5.0), "ai-service", 600))
    assert not isinstance(error, DeadlineExceeded), error
    assert error.kind is FailureKind.UNEXPECTED_ANSWER, error
    assert str(error).startswith(f"kubernetes at {api.url}: read log of ai-service-0: "), error


def test_pod_logs_are_read_at_once_not_one_pod_after_another(
        logs_api: Callable[..., LogsApi]) -> None:
    api = logs_api("slow", pods=4, delay=0.6)
    start = time.perf_counter()
    logs = kubernetes.pod_logs(api.target(), "ai-service", 600)
    elapsed = time.perf_counter() - start
    assert logs == {f"ai-service-{n}": f"2026-11-27T10:00:00Z log line of ai-service-{n}\n"
                    for n in range(4)}
    assert elapsed < DEADLINE, f"{elapsed:.2f} s: one pod after another (4 x 0.6 s)"


# ---- the real servers of the sandbox ------------------------------------------------------
def test_postgresql_connectivity(ctx: CheckContext) -> None:
    seen = postgresql.connectivity(ctx.postgres("auth"))
    assert seen.select_one_samples == postgresql.SELECT_ONE_SAMPLES
    assert 0 < seen.select_one_ms < 1000 * ctx.env.deadline("postgresql")
    assert seen.server_version.split(".")[0].isdigit(), seen.server_version


def test_postgresql_activity_sees_other_sessions_but_not_itself(ctx: CheckContext) -> None:
    import psycopg

    admin = admin_dsn("auth")
    with psycopg.connect(admin) as other:
        other.execute("SELECT 1")  # now idle in a transaction
        seen = postgresql.activity(ctx.postgres("auth"))
        mine = [s for s in seen.sessions if s.pid == other.info.backend_pid]
    assert len(mine) == 1, seen.sessions
    assert mine[0].state == "idle in transaction"
    assert mine[0].transaction_age_s is not None and not mine[0].waiting_on_lock
    assert seen.max_connections > seen.connections >= 2
    assert seen.deadlocks >= 0


def test_postgresql_fetch_reads_as_the_health_role(ctx: CheckContext) -> None:
    rows = postgresql.fetch(ctx.postgres("auth"),
                            "SELECT current_user, current_database(), %s::int + 1", (41,))
    assert rows == [("unibazzar_health", "auth", 42)]
    tables = postgresql.fetch(ctx.postgres("auth"), "SELECT count(*) FROM users")
    assert tables[0][0] > 0


def test_postgresql_errors_name_the_problem_and_its_kind(ctx: CheckContext) -> None:
    with pytest.raises(ProbeError, match=r"^postgresql at .*no_such_table") as table:
        postgresql.fetch(ctx.postgres("auth"), "SELECT * FROM no_such_table")
    # Not the schema the checks were written for: our environment, not the platform.
    assert table.value.kind is FailureKind.MISSING_SCHEMA
    with pytest.raises(ProbeError, match=r'column "no_such_column"') as column:
        postgresql.fetch(ctx.postgres("auth"), "SELECT no_such_column FROM users")
    assert column.value.kind is FailureKind.MISSING_SCHEMA
    with pytest.raises(ProbeError, match="password authentication failed") as password:
        postgresql.fetch(replace(ctx.postgres("auth"), password="wrong"), "SELECT 1")
    assert password.value.kind is FailureKind.AUTH_REJECTED
    with pytest.raises(ProbeError, match="permission denied") as denied:
        postgresql.fetch(ctx.postgres("auth"), "SELECT * FROM pg_authid")
    assert denied.value.kind is FailureKind.AUTH_REJECTED
    no_database = replace(ctx.postgres("auth"),
                          dsn="postgresql://unibazzar_health@127.0.0.1:25432/no_such_database")
    with pytest.raises(ProbeError, match='database "no_such_database" does not exist') as db:
        postgresql.fetch(no_database, "SELECT 1")
    assert db.value.kind is FailureKind.MISSING_OBJECT


def test_a_session_the_server_cuts_on_shutdown_reads_as_refused(ctx: CheckContext) -> None:
    """A PostgreSQL going down ends its sessions ("terminating connection due to
    administrator command", as a fast shutdown or pg_terminate_backend does): the database
    is down, brought back like one refusing connections, not an answer to puzzle over."""
    import psycopg

    target = ctx.postgres("auth")

    def cut_the_probes_session() -> None:
        with psycopg.connect(admin_dsn("auth"), autocommit=True) as admin:
            for _ in range(50):
                cut = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'unibazzar-health' "
                    "AND query LIKE '%pg_sleep(3)%'").fetchall()
                if cut:
                    return
                time.sleep(0.05)

    cutter = threading.Thread(target=cut_the_probes_session)
    cutter.start()
    try:
        with pytest.raises(ProbeError, match="terminating connection") as cut:
            postgresql.fetch(replace(target, deadline=5.0), "SELECT pg_sleep(3)")
    finally:
        cutter.join()
    assert cut.value.kind is FailureKind.REFUSED


def test_postgresql_statement_timeout_is_the_deadline(ctx: CheckContext) -> None:
    target = replace(ctx.postgres("auth"), deadline=DEADLINE)
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded, match=r"^postgresql at .*\(deadline 1 s\)"):
        postgresql.fetch(target, "SELECT pg_sleep(5)")
    assert time.perf_counter() - start < DEADLINE + MARGIN


def delaying_proxy(upstream: tuple[str, int], delay_s: float,
                   for_s: float) -> tuple[int, Callable[[], None]]:
    """A loopback TCP proxy to ``upstream`` that holds each request ``delay_s`` during its
    first ``for_s`` seconds: a slow path to the backend, which our host has no part in."""
    # Hand-written: a TCP relay (Redis's protocol), not HTTP.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    started = time.monotonic()
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket, delayed: bool) -> None:
        try:
            while data := source.recv(65536):
                if delayed and time.monotonic() - started < for_s:
                    time.sleep(delay_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client_side, _ = server.accept()
            except OSError:
                continue
            upstream_side = socket.create_connection(upstream)
            threading.Thread(target=pipe, args=(client_side, upstream_side, True),
                             daemon=True).start()
            threading.Thread(target=pipe, args=(upstream_side, client_side, False),
                             daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def close() -> None:
        stop.set()
        server.close()

    return server.getsockname()[1], close


@contextmanager
def our_thread_stalled(interval_s: float, spinners: int = 3) -> Iterator[None]:
    """Our thread waits ``interval_s`` or more for the interpreter after its system calls:
    threads spinning under that switch interval take it whenever we let go, as the run's
    other checks and a busy host make us wait, while every backend answers as fast as ever.
    (One spinner sometimes loses every race for the interpreter; three do not.)"""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    hogs = [threading.Thread(target=spin, daemon=True) for _ in range(spinners)]
    for hog in hogs:
        hog.start()
    try:
        yield
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
        sys.setswitchinterval(previous)


def test_our_own_stall_is_not_read_as_a_slow_redis(ctx: CheckContext) -> None:
    """Our thread held off 30 ms and more after its system calls: our clock reads the round
    trips that late (p95 well above the 50 ms the check judges, as on a busy host), this
    host's network stack sees Redis answer at once, and the evidence says whose time it was."""
    # The spinners take the interpreter only when the OS gives them a core: on a loaded
    # machine a round of five samples can miss every stall, so up to five rounds.
    for _ in range(5):
        with our_thread_stalled(0.03):
            seen = redis.cache_performance(ctx.redis("ai-cache"), samples=5)
        if seen.ping_p95_our_clock_ms > 50:
            break
    assert seen.kernel_timed, seen
    assert seen.ping_p95_our_clock_ms > 50, seen
    assert seen.ping_p95_ms < 10, seen
    assert seen.stalled_max_ms > 50, seen
    assert seen.redis_usec_per_ping is not None and seen.redis_usec_per_ping < 1000, seen
    assert re.fullmatch(r"Redis answered in [\d.]+ ms \(p95, as this host's network stack "
                        r"received it\); our host stalled up to [\d.]+ ms more \(our clock "
                        r"read p95 [\d.]+ ms\); Redis itself spent (under 1|[\d.]+) µs running "
                        r"each PING \(INFO commandstats\)", seen.timing), seen.timing


def test_a_slow_path_to_redis_is_read_as_a_slow_redis(ctx: CheckContext) -> None:
    """Every request held 60 ms on its way (a loopback proxy): the answers reach this host
    late, so both clocks read it, and Redis's own time per PING says the wait was not in
    running the command. The redis-slow game day (CLIENT PAUSE) is the same on a real Redis."""
    from urllib.parse import urlsplit

    target = ctx.redis("ai-cache")
    parts = urlsplit(target.url)
    port, close = delaying_proxy((parts.hostname or "", parts.port or 6379), 0.06, 60)
    try:
        seen = redis.cache_performance(
            replace(target, url=target.url.replace(f":{parts.port}", f":{port}")), samples=8)
    finally:
        close()
    assert seen.kernel_timed, seen
    assert seen.ping_p95_ms > 50, seen
    assert seen.stalled_max_ms < 50, seen


def test_redis_cache_performance(ctx: CheckContext) -> None:
    seen = redis.cache_performance(ctx.redis("ai-cache"), samples=20)
    assert seen.samples == 20
    assert 0 < seen.ping_p50_ms <= seen.ping_p95_ms <= seen.ping_max_ms
    assert 0 < seen.get_p95_ms < 1000 * ctx.env.deadline("redis")
    # The probe itself reads a key nobody writes, 20 times: misses are at least that.
    assert seen.keyspace_misses >= 20
    assert seen.hit_ratio == round(seen.keyspace_hits
                                   / (seen.keyspace_hits + seen.keyspace_misses), 4)
    assert seen.maxmemory > seen.used_memory > 0
    assert seen.memory_usage is not None and 0 < seen.memory_usage < 1


def test_redis_wrong_password_is_a_probe_error(ctx: CheckContext) -> None:
    with pytest.raises(ProbeError,
                       match=r"^redis at 127\.0\.0\.1:26379/1: .*(?i:auth|pass)") as wrong:
        redis.cache_performance(replace(ctx.redis("ai-cache"), password="wrong"), samples=1)
    assert wrong.value.kind is FailureKind.AUTH_REJECTED
    with pytest.raises(ProbeError, match=r"^redis at ") as missing:
        redis.ping(replace(ctx.redis("ai-cache"), password=None))
    assert missing.value.kind is FailureKind.AUTH_REJECTED


def test_rabbitmq_publish_canary_is_confirmed(ctx: CheckContext) -> None:
    seen = rabbitmq.publish_canary(ctx.broker(), "listing.events")
    assert seen.confirmed is True
    assert (seen.exchange, seen.routing_key) == ("listing.events", "health-check.canary")
    assert 0 < seen.elapsed_ms < 1000 * ctx.env.deadline("rabbitmq")


def test_rabbitmq_canary_caught_by_a_binding_is_reported_routed(ctx: CheckContext) -> None:
    """A queue bound so that it catches the canary's routing key: the broker does not
    return the mandatory canary, and the probe says so."""
    import pika

    broker = ctx.broker()
    assert rabbitmq.publish_canary(broker, "listing.events").unrouted is True
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=25672, credentials=pika.PlainCredentials(
            broker.user, broker.password or ""), connection_attempts=1, socket_timeout=5))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue, "listing.events", routing_key="health-check.#")
        seen = rabbitmq.publish_canary(broker, "listing.events")
    finally:
        connection.close()  # the exclusive queue, and the canary in it, go with it
    assert seen.confirmed is True and seen.unrouted is False


def test_rabbitmq_publish_to_a_missing_exchange_is_refused(ctx: CheckContext) -> None:
    with pytest.raises(ProbeError, match=r"^rabbitmq at .*broker refused: NOT_FOUND") as error:
        rabbitmq.publish_canary(ctx.broker(), "unibazzar-health.no-such-exchange")
    assert error.value.kind is FailureKind.MISSING_OBJECT


def test_rabbitmq_queue_state(ctx: CheckContext) -> None:
    seen = rabbitmq.queue_state(ctx.broker(), "search-indexer")
    assert seen.exists
    assert seen.messages == seen.messages_ready + seen.messages_unacknowledged
    assert min(seen.messages, seen.consumers) >= 0


def test_rabbitmq_management_rejects_a_wrong_password(ctx: CheckContext) -> None:
    with pytest.raises(ProbeError, match=r"^rabbitmq-management at .*: HTTP 401") as error:
        rabbitmq.queue_state(replace(ctx.broker(), password="wrong"), "search-indexer")
    assert error.value.kind is FailureKind.AUTH_REJECTED


def test_dynamodb_describe_table(ctx: CheckContext) -> None:
    seen = dynamodb.describe_table(ctx.aws("dynamodb"), "unibazzar-listings")
    assert (seen.exists, seen.status) == (True, "ACTIVE")
    assert seen.index_statuses and set(seen.index_statuses.values()) == {"ACTIVE"}
    assert seen.item_count is not None and seen.item_count > 0
    assert seen.billing_mode in ("PAY_PER_REQUEST", "PROVISIONED")


def test_s3_canary_round_trip_leaves_nothing_behind(ctx: CheckContext) -> None:
    target = ctx.aws("s3")
    seen = s3.canary_round_trip(target, "unibazzar-listing-images", "health-checks/canary/")
    assert seen.bucket_exists and seen.content_matches
    assert seen.key is not None and seen.key.startswith("health-checks/canary/")
    assert None not in (seen.put_ms, seen.get_ms, seen.delete_ms)
    assert seen.left_behind is False
    # ... and the object really is gone.
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as gone:
        aws_client("s3", target).head_object(Bucket=seen.bucket, Key=seen.key)
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")


def test_kubernetes_rollout_history_and_pods_health(ctx: CheckContext) -> None:
    rollout = kubernetes.rollout_history(ctx.kube(), "auth-service")
    assert rollout.exists and rollout.revision == 1
    assert (rollout.progressing_status, rollout.progressing_reason) == (
        "True", "NewReplicaSetAvailable")
    [replica_set] = rollout.replica_sets
    assert replica_set.name == "auth-service-7d9f8" and replica_set.revision == 1
    assert replica_set.age_minutes is not None and replica_set.age_minutes >= 0
    assert not kubernetes.rollout_history(ctx.kube(), "no-such-deployment").exists

    pods = kubernetes.pods_health(ctx.kube(), "ai-service")
    assert pods.exists and pods.metrics_available
    assert (pods.ready, pods.desired) == (2, 2)
    assert not kubernetes.pods_health(ctx.kube(), "ai-service", metrics=False).metrics_available
    assert {c.pod for c in pods.containers} == {"ai-service-7d9f8-abc12",
                                                 "ai-service-7d9f8-def34"}
    for container in pods.containers:
        assert container.memory_limit_bytes == 512 * 2**20
        assert container.memory_bytes == 200 * 2**20
        assert container.memory_usage == round(200 / 512, 4)
        assert container.restarts == 0 and container.last_termination_reason is None


def test_http_request(ctx: CheckContext) -> None:
    answer = http.request("auth-service", "GET", ctx.service_url("auth-service", "/health"),
                          ctx.env.deadline("http"))
    assert answer.status == 200
    assert answer.body == {"service": "auth-service", "status": "ok"}
    assert 0 < answer.elapsed_ms < 1000 * ctx.env.deadline("http")


def test_payments_provider_state(ctx: CheckContext) -> None:
    spec = ctx.require("payments", ctx.env.spec.payments)
    key = ctx.env.secret(spec.api_key_env) or ""
    seen = payments.provider_state(payments.ProviderTarget(str(spec.api_url), key,
                                                           ctx.env.deadline("payments")))
    assert (seen.key_accepted, seen.events_status) == (True, 200)
    ours = [e for e in seen.endpoints if e.url == str(spec.webhook_url)]
    assert len(ours) == 1, seen.endpoints
    assert ours[0].status == "enabled"
    assert "payment_intent.payment_failed" in ours[0].enabled_events


def test_payments_intents_include_the_paid_canary_order(ctx: CheckContext) -> None:
    intents = payments.recent_payment_intents(ctx.payment_provider())
    canary = [i for i in intents if i.order_id == "order-canary-0001"]
    assert canary and canary[0].status == "succeeded" and canary[0].amount == 1999
    assert payments.payment_intent(ctx.payment_provider(), canary[0].id) == canary[0]
    assert payments.payment_intent(ctx.payment_provider(), "pi_no_such_intent") is None


def test_payments_provider_refuses_a_bad_key(ctx: CheckContext) -> None:
    spec = ctx.require("payments", ctx.env.spec.payments)
    seen = payments.provider_state(payments.ProviderTarget(str(spec.api_url), "not-a-key",
                                                           ctx.env.deadline("payments")))
    assert (seen.key_accepted, seen.events_status, seen.endpoints) == (False, 401, [])
    with pytest.raises(ProbeError,
                       match=r"^payments at .*/payment_intents\?limit=100: HTTP 401") as error:
        payments.recent_payment_intents(replace(ctx.payment_provider(), api_key="not-a-key"))
    assert error.value.kind is FailureKind.AUTH_REJECTED


def test_vectordb_collection_health(ctx: CheckContext) -> None:
    seen = vectordb.collection_health(ctx.vector_db(), "listings")
    assert seen.exists and seen.count > 0
    assert seen.canary_id is not None
    assert seen.nearest_id == seen.canary_id  # a stored vector's nearest neighbour: itself
    # As the service answered (the kernel's view, probes/clock.py): on loopback it can round
    # to 0 ms; our own clock always saw some time pass.
    assert seen.query_ms is not None and 0 <= seen.query_ms < 1000 * ctx.env.deadline("vector_db")
    assert seen.query_our_clock_ms is not None and seen.query_our_clock_ms > 0


@pytest.mark.parametrize("probe", [
    pytest.param(lambda ctx: dynamodb.describe_table(ctx.aws("dynamodb"), "no-such-table"),
                 id="dynamodb-table"),
    pytest.param(lambda ctx: s3.canary_round_trip(ctx.aws("s3"), "no-such-bucket", "x/"),
                 id="s3-bucket"),
    pytest.param(lambda ctx: kubernetes.pods_health(ctx.kube(), "no-such-deployment"),
                 id="kubernetes-deployment"),
    pytest.param(lambda ctx: rabbitmq.queue_state(ctx.broker(), "no-such-queue"),
                 id="rabbitmq-queue"),
    pytest.param(lambda ctx: vectordb.collection_health(ctx.vector_db(), "no-such-collection"),
                 id="vector-db-collection"),
])
def test_a_missing_resource_is_reported_not_raised(
        probe: Callable[[CheckContext], object], ctx: CheckContext) -> None:
    seen = probe(ctx)
    if isinstance(seen, s3.RoundTrip):
        assert (seen.bucket_exists, seen.key, seen.left_behind) == (False, None, False)
    else:
        assert isinstance(seen, dynamodb.TableStatus | kubernetes.PodsHealth
                          | rabbitmq.QueueState | vectordb.CollectionHealth)
        assert seen.exists is False, seen


def test_reachability_probes_answer_from_the_real_servers(ctx: CheckContext) -> None:
    """The cheap round trips of "check related systems and dependencies"."""
    assert 0 < redis.ping(ctx.redis("listing-cache")) < 1000 * ctx.env.deadline("redis")
    assert 0 < rabbitmq.reachable(ctx.broker()) < 1000 * ctx.env.deadline("rabbitmq")
    assert 0 < vectordb.heartbeat(ctx.vector_db()) < 1000 * ctx.env.deadline("vector_db")
    assert s3.head_bucket(ctx.aws("s3"), "unibazzar-listing-images") is True
    assert s3.head_bucket(ctx.aws("s3"), "unibazzar-health-no-such-bucket") is False


def test_reachability_probes_reject_wrong_credentials(ctx: CheckContext) -> None:
    with pytest.raises(ProbeError, match=r"^rabbitmq at .*ACCESS_REFUSED") as broker:
        rabbitmq.reachable(replace(ctx.broker(), password="wrong"))
    assert broker.value.kind is FailureKind.AUTH_REJECTED
    with pytest.raises(ProbeError, match=r"^redis at .*(?i:auth|pass)") as cache:
        redis.ping(replace(ctx.redis("ai-cache"), password="wrong"))
    assert cache.value.kind is FailureKind.AUTH_REJECTED


@pytest.mark.parametrize("probe", [
    pytest.param(lambda ctx: dynamodb.get_item(
        ctx.aws("dynamodb"), "unibazzar-health-no-such-table", {"listing_id": "x"}),
        id="dynamodb-table"),
    pytest.param(lambda ctx: vectordb.has_ids(
        ctx.vector_db(), "unibazzar-health-no-such-collection", ["x"]),
        id="vector-db-collection"),
])
def test_an_object_a_probe_needs_that_is_not_there_is_missing_object(
        probe: Callable[[CheckContext], object], ctx: CheckContext) -> None:
    """Where a probe reads from an object rather than asking whether it exists, its absence
    is a failure of its own kind: restoring it is the fix, not capacity or a restart."""
    with pytest.raises(ProbeError) as error:
        probe(ctx)
    assert error.value.kind is FailureKind.MISSING_OBJECT, error.value


def test_aws_error_answers_from_the_server_are_explained_by_kind(ctx: CheckContext) -> None:
    """S3's real answer for a bucket that is not there, through the probes' explain()."""
    from botocore.exceptions import ClientError

    from unibazzar_health.probes.aws import explain

    target = ctx.aws("s3")
    with pytest.raises(ClientError) as answer:
        aws_client("s3", target).get_object(Bucket="unibazzar-health-no-such-bucket", Key="x")
    error = explain(answer.value, "s3", "bucket unibazzar-health-no-such-bucket", target)
    assert error.kind is FailureKind.MISSING_OBJECT
    assert str(error).startswith("s3 at bucket unibazzar-health-no-such-bucket: NoSuchBucket")


@pytest.mark.parametrize(("code", "status", "kind"), [
    ("ResourceNotFoundException", 400, FailureKind.MISSING_OBJECT),  # a deleted table
    ("NoSuchBucket", 404, FailureKind.MISSING_OBJECT),
    ("404", 404, FailureKind.MISSING_OBJECT),  # HEAD: S3 answers the bare status
    ("UnrecognizedClientException", 400, FailureKind.AUTH_REJECTED),  # unknown access key
    ("InvalidSignatureException", 400, FailureKind.AUTH_REJECTED),  # wrong secret key
    ("SignatureDoesNotMatch", 403, FailureKind.AUTH_REJECTED),
    ("AccessDenied", 403, FailureKind.AUTH_REJECTED),
    ("SomeNewDenial", 403, FailureKind.AUTH_REJECTED),  # an unknown code: by its status
    ("ProvisionedThroughputExceededException", 400, FailureKind.UNEXPECTED_ANSWER),
    ("InternalError", 500, FailureKind.UNEXPECTED_ANSWER),
])
def test_aws_error_codes_have_their_kind(code: str, status: int, kind: FailureKind) -> None:
    """The credential errors moto does not produce (it accepts any key), by AWS's codes."""
    from unibazzar_health.probes.aws import error_kind

    assert error_kind(code, status) is kind


@pytest.mark.parametrize(("said", "kind"), [
    ("[Errno 111] Connection refused", FailureKind.REFUSED),
    ("ConnectionRefusedError", FailureKind.REFUSED),  # a service naming its client's error
    ('connection to server at "10.0.0.5", port 5432 failed: FATAL:  the database system is '
     "shutting down", FailureKind.REFUSED),
    ('connection to server at "10.0.0.5", port 5432 failed: FATAL:  the database system is '
     "starting up", FailureKind.REFUSED),
    ('could not translate host name "db" to address: Name or service not known',
     FailureKind.UNREACHABLE),
    ("[Errno -3] Temporary failure in name resolution", FailureKind.UNREACHABLE),
    ("[Errno 113] No route to host", FailureKind.UNREACHABLE),
    ("[Errno 101] Network is unreachable", FailureKind.UNREACHABLE),
    ("SSL: CERTIFICATE_VERIFY_FAILED", FailureKind.UNEXPECTED_ANSWER),
])
def test_a_failed_connection_has_its_kind_from_the_words_clients_keep(
        said: str, kind: FailureKind) -> None:
    from unibazzar_health.probes import connection_failure

    assert connection_failure(said) is kind
    assert connection_failure(OSError(said)) is kind


def test_a_probe_failure_is_plain_data_with_the_errors_words() -> None:
    import json

    from unibazzar_health.probes import ProbeFailure

    error = ProbeError("redis", "127.0.0.1:6379/0", "connection refused", 2.0,
                       kind=FailureKind.REFUSED)
    failure = ProbeFailure.of(error)
    assert failure.message == str(error) == \
        "redis at 127.0.0.1:6379/0: connection refused (deadline 2 s)"
    as_json = json.loads(json.dumps(failure.to_dict()))
    assert as_json == {"backend": "redis", "target": "127.0.0.1:6379/0", "kind": "refused",
                       "problem": "connection refused", "deadline": 2.0}
    assert ProbeFailure.from_dict(as_json) == failure
    assert DeadlineExceeded("s3", "bucket b", 1.0).kind is FailureKind.TIMEOUT


def test_percentile_is_nearest_rank_so_p95_of_forty_ignores_two_stalls() -> None:
    from unibazzar_health.probes import percentile

    samples = [1.0] * 38 + [60.0, 70.0]
    assert percentile(samples, 95) == 1.0
    assert percentile([*samples, 80.0], 95) == 60.0
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([2.0], 95) == 2.0


@pytest.mark.parametrize(("query", "shown"), [
    ("ALTER ROLE app PASSWORD 's3cr3t'", "ALTER ROLE app PASSWORD '…'"),
    ("SELECT 'it''s', 1 FROM t WHERE a = 'x'", "SELECT '…', 1 FROM t WHERE a = '…'"),
    ("SELECT * FROM users WHERE email = 'someone@exa", "SELECT * FROM users WHERE email = '…'"),
    ("SELECT 1", "SELECT 1"),
])
def test_query_text_is_shown_without_its_literals(query: str, shown: str) -> None:
    assert postgresql.mask_literals(query) == shown
