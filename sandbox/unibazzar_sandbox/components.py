"""The sandbox's parts: how each real server is prepared, started (mirakuru waits for
it), and seeded with canary data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mirakuru import Executor, HTTPExecutor, TCPExecutor

from unibazzar_sandbox import seed
from unibazzar_sandbox.layout import HOST, PORTS, Layout

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
SERVICES = ("auth-service", "listing-service", "order-service", "ai-service")

Secrets = dict[str, str]


@dataclass
class Component:
    name: str
    ports: tuple[str, ...]
    make: Callable[[Layout, Secrets, IO[Any]], Executor]
    prepare: Callable[[Layout, Secrets], None] | None = None  # once per `up`, fresh state
    seed: Callable[[Layout, Secrets], None] | None = None  # after every start
    timeout: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)
    # At `down` only: seconds its server has to end on SIGTERM before it is killed. For a
    # server whose state the next `up` wipes anyway; None: as long as it takes.
    down_grace_s: float | None = None


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _as_postgres_user() -> dict[str, Any]:
    # PostgreSQL refuses to run as root; as any other user it runs as that user.
    if os.geteuid() == 0:
        return {"user": "postgres", "group": "postgres", "extra_groups": []}
    return {}


def _executor_kwargs(layout: Layout, secrets: Secrets, log: IO[Any], timeout: float,
                     **popen: Any) -> dict[str, Any]:
    return {
        "timeout": timeout,
        "stdin": subprocess.DEVNULL,
        "stdout": log,
        "stderr": subprocess.STDOUT,
        "envvars": {**secrets, "UNIBAZZAR_SANDBOX_DIR": str(layout.root)},
        "popen_kwargs": popen,
    }


# ---- PostgreSQL ------------------------------------------------------------------------
def _pg_prepare(layout: Layout, secrets: Secrets) -> None:
    data, sockets = layout.path("postgresql", "data"), layout.path("postgresql", "run")
    shutil.rmtree(layout.path("postgresql"), ignore_errors=True)
    data.mkdir(parents=True)
    sockets.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(layout.path("postgresql"), "postgres", "postgres")
        for path in (data, sockets):
            shutil.chown(path, "postgres", "postgres")
    subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **_as_postgres_user(),
    )


def _pg_make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
    command = [str(PG_BIN / "postgres"), "-D", str(layout.path("postgresql", "data")),
               "-p", str(PORTS["postgresql"]), "-k", str(layout.path("postgresql", "run")),
               "-c", f"listen_addresses={HOST}", "-c", "fsync=off", "-c", "max_connections=50"]
    # SIGINT: a fast shutdown, sessions cut at once. SIGTERM's smart one lingers while any
    # session stays, refusing new ones with "shutting down" after `stop` has returned.
    return TCPExecutor(command, host=HOST, port=PORTS["postgresql"], stop_signal=signal.SIGINT,
                       **_executor_kwargs(layout, {}, log, 30, **_as_postgres_user()))


# ---- Redis -----------------------------------------------------------------------------
def _redis_make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
    layout.path("redis").mkdir(parents=True, exist_ok=True)
    config = layout.path("redis", "redis.conf")
    # The password goes in a file, not on the command line where `ps` would show it.
    config.write_text(
        f"port {PORTS['redis']}\nbind {HOST}\ndir {layout.path('redis')}\nsave \"\"\n"
        f"appendonly no\nrequirepass {secrets['UNIBAZZAR_REDIS_PASSWORD']}\n"
        "maxmemory 64mb\nmaxmemory-policy allkeys-lru\n")
    config.chmod(0o600)
    return TCPExecutor(["redis-server", str(config)], host=HOST, port=PORTS["redis"],
                       **_executor_kwargs(layout, {}, log, 15))


# ---- RabbitMQ --------------------------------------------------------------------------
def _rabbit_prepare(layout: Layout, secrets: Secrets) -> None:
    shutil.rmtree(layout.path("rabbitmq"), ignore_errors=True)
    for sub in ("mnesia", "log", "home"):
        layout.path("rabbitmq", sub).mkdir(parents=True)


def _rabbit_make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
    base = layout.path("rabbitmq")
    config = base / "rabbitmq.conf"
    config.write_text(
        "loopback_users = none\n"
        "default_user = unibazzar\n"
        f"default_pass = {secrets['UNIBAZZAR_RABBITMQ_PASSWORD']}\n"
        f"management.tcp.ip = {HOST}\n"
        f"management.tcp.port = {PORTS['rabbitmq-management']}\n"
        # What the management API shows of a queue lags by the queue's stats interval and
        # then by its collector's, the finest sample retention (5 s by default): a consumer
        # back showed 5 s late, and every game day on the queue waited for it.
        "collect_statistics_interval = 1000\n"
        "management.sample_retention_policies.global.minute = 1\n"
        "management.sample_retention_policies.global.hour = 60\n"
        "management.sample_retention_policies.basic.minute = 1\n"
        "management.sample_retention_policies.basic.hour = 60\n"
        "management.sample_retention_policies.detailed.10 = 1\n")
    config.chmod(0o600)
    plugins = base / "enabled_plugins"
    plugins.write_text("[rabbitmq_management].\n")
    env = {
        "HOME": str(base / "home"),
        "RABBITMQ_NODENAME": "unibazzar-sandbox@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(PORTS["rabbitmq"]),
        "RABBITMQ_DIST_PORT": str(PORTS["rabbitmq-dist"]),
        "ERL_EPMD_PORT": str(PORTS["epmd"]),
        "ERL_EPMD_ADDRESS": HOST,
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_LOGS": "-",
    }
    kwargs = _executor_kwargs(layout, {}, log, 90)
    kwargs["envvars"] = env
    return HTTPExecutor([str(RABBITMQ_SERVER)],
                        url=f"http://{HOST}:{PORTS['rabbitmq-management']}/api/overview",
                        status="(200|401)", method="GET", **kwargs)


# ---- moto (DynamoDB, S3) ---------------------------------------------------------------
def _moto_make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
    return HTTPExecutor([_bin("moto_server"), "-H", HOST, "-p", str(PORTS["moto"])],
                        url=f"http://{HOST}:{PORTS['moto']}/moto-api/", method="GET",
                        **_executor_kwargs(layout, {}, log, 30))


# ---- Kubernetes API emulator -----------------------------------------------------------
def _kube_make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
    command = [sys.executable, "-m", "unibazzar_sandbox.kube_api", "--host", HOST,
               "--port", str(PORTS["kubernetes"]), "--log-dir", str(layout.logs)]
    for service in SERVICES:
        command += ["--service", f"{service}={HOST}:{PORTS[service]}"]
    return HTTPExecutor(command, url=f"http://{HOST}:{PORTS['kubernetes']}/api/v1/namespaces/unibazzar",
                        method="GET", **_executor_kwargs(layout, {}, log, 30))


# ---- payment provider (localstripe) ----------------------------------------------------
def _payments_make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
    data = layout.path("payments")
    data.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "unibazzar_sandbox.payments_api", "--host", HOST,
               "--port", str(PORTS["payments"]), "--data-dir", str(data),
               "--faults-dir", str(layout.faults)]
    return TCPExecutor(command, host=HOST, port=PORTS["payments"],
                       **_executor_kwargs(layout, {}, log, 30))


# ---- vector database (Chroma) ----------------------------------------------------------
def _chroma_make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
    path = layout.path("chroma")
    path.mkdir(parents=True, exist_ok=True)
    kwargs = _executor_kwargs(layout, {}, log, 60)
    kwargs["envvars"] = {"ANONYMIZED_TELEMETRY": "False"}
    return HTTPExecutor([_bin("chroma"), "run", "--host", HOST, "--port", str(PORTS["vector-db"]),
                         "--path", str(path)],
                        url=f"http://{HOST}:{PORTS['vector-db']}/api/v2/heartbeat", method="GET",
                        **kwargs)


def _chroma_prepare(layout: Layout, secrets: Secrets) -> None:
    shutil.rmtree(layout.path("chroma"), ignore_errors=True)


# ---- the four stand-in services --------------------------------------------------------
def _service_make(service: str) -> Callable[[Layout, Secrets, IO[Any]], Executor]:
    module = service.removesuffix("-service")

    def make(layout: Layout, secrets: Secrets, log: IO[Any]) -> Executor:
        layout.logs.mkdir(parents=True, exist_ok=True)
        return HTTPExecutor([sys.executable, "-m", f"unibazzar_sandbox.services.{module}"],
                            url=f"http://{HOST}:{PORTS[service]}/health", method="GET",
                            **_executor_kwargs(layout, secrets, log, 30))

    return make


COMPONENTS: tuple[Component, ...] = (
    Component("postgresql", ("postgresql",), _pg_make, _pg_prepare, seed.postgresql),
    Component("redis", ("redis",), _redis_make),
    Component("rabbitmq", ("rabbitmq", "rabbitmq-management", "rabbitmq-dist", "epmd"),
              _rabbit_make, _rabbit_prepare, seed.rabbitmq, timeout=90,
              # Its VM lingers 6 s after its shutdown is logged done (about 20 ms), and the
              # next `up` starts it from an empty directory.
              down_grace_s=1.0),
    Component("moto", ("moto",), _moto_make, None, seed.aws),
    Component("vector-db", ("vector-db",), _chroma_make, _chroma_prepare, seed.vector_db),
    Component("payments", ("payments",), _payments_make, None, seed.payments),
    *(Component(s, (s,), _service_make(s),
                seed=seed.search_indexer_consuming if s == "listing-service" else None)
      for s in SERVICES),
    Component("kubernetes", ("kubernetes",), _kube_make),
)

BY_NAME = {c.name: c for c in COMPONENTS}
