"""What a check module uses: the marker that ties it to the runbook, the context its
observe function receives, and the Finding it raises to name another impact class or the
probe failures behind it.

A check is two functions: ``observe(ctx)`` does all the I/O through probes and
returns plain data; the test function judges that data against thresholds. The
plugin runs observe functions concurrently, ahead of the assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from unibazzar_health.config.environment import Environment
from unibazzar_health.config.names import SERVICE_PREFIX, SERVICES
from unibazzar_health.judges.shared import SharedObservations
from unibazzar_health.probes import ProbeError, ProbeFailure, kubernetes, postgresql
from unibazzar_health.probes.aws import AwsTarget
from unibazzar_health.probes.deadline import start
from unibazzar_health.probes.kubernetes import KubeTarget, PodsHealth
from unibazzar_health.probes.payments import ProviderTarget
from unibazzar_health.probes.postgresql import Activity, PostgresTarget
from unibazzar_health.probes.rabbitmq import BrokerTarget
from unibazzar_health.probes.redis import RedisTarget
from unibazzar_health.probes.vectordb import VectorTarget

T = TypeVar("T")
# The run's shared measurements of a service's pods and logs (CheckContext.pods, .pod_logs).
PODS_KEY = "kubernetes.pods:{}"
LOGS_KEY = "kubernetes.logs:{}"


class Finding(AssertionError):
    """A failed check whose impact differs from its catalog default (e.g. security), that
    names its failure mode (the catalog's fixes for how it failed: a forged token accepted
    is no secret to rotate), or that carries the probe failures behind it: the verdict pins
    the check on their backends and picks fixes and commands by their kind (results.py)."""

    def __init__(self, message: str, *, impact: str | None = None, mode: str | None = None,
                 failures: Iterable[ProbeFailure] = (), names: Mapping[str, str] | None = None,
                 ) -> None:
        super().__init__(message)
        self.impact = impact
        # A key of the check's catalog [modes]: its fixes and commands replace the check's.
        self.mode = mode
        self.failures = tuple(failures)
        # What the catalog's commands name that only this finding knows (catalog.FINDING_NAMES:
        # the pod that crash-loops).
        self.names = dict(names or {})

    @classmethod
    def of(cls, failures: Iterable[ProbeFailure], lead: str = "", *,
           impact: str | None = None) -> Finding:
        """The failures as the finding, in their own words after ``lead``."""
        failures = tuple(failures)
        return cls(lead + "; ".join(f.message for f in failures), impact=impact,
                   failures=failures)


def failures_among(*values: Any) -> tuple[ProbeFailure, ...]:
    """The probe failures that ``gather`` put in place of some of these values."""
    return tuple(v for v in values if isinstance(v, ProbeFailure))


class NotConfigured(Exception):
    """The environment file does not describe what this check probes: it is skipped."""

    def __init__(self, key: str) -> None:
        super().__init__(f"not configured: the environment has no '{key}'")
        self.key = key


def gather(**calls: Callable[[], Any]) -> dict[str, Any]:
    """Run a check's independent probes at once, so a dead platform costs one deadline,
    not one per probe. A probe that raised ProbeError gives its ProbeFailure in place of its
    result: the engineer gets the whole picture, and the check judges it. Each probe is
    bounded by its own deadline, so all are waited for (probes.deadline's threads)."""
    running = {name: start(call, f"gather-{name}") for name, call in calls.items()}
    results: dict[str, Any] = {}
    for name, call in running.items():
        call.wait(None)
        try:
            results[name] = call.result()
        except ProbeError as exc:
            results[name] = ProbeFailure.of(exc)
        except BaseException as exc:  # raised once every probe is done, in the check's thread
            results[name] = exc
    for value in results.values():
        if isinstance(value, BaseException):
            raise value
    return results


def runbook_check(check_id: str, observe: Callable[[CheckContext], Any]) -> pytest.MarkDecorator:
    """Mark a test as the check ``check_id`` of catalog.toml, observed by ``observe``."""
    return pytest.mark.check(check_id, observe=observe)


def per_service(step: str, observe_for: Callable[[str], Callable[[CheckContext], Any]],
                services: Iterable[str] = SERVICES) -> pytest.MarkDecorator:
    """A platform step run once per service: the test takes ``service`` and is the check
    ``<prefix>.<step>`` for each, observed by ``observe_for(service)``."""
    return pytest.mark.parametrize("service", [
        pytest.param(service, id=service,
                     marks=runbook_check(f"{SERVICE_PREFIX[service]}.{step}",
                                         observe=observe_for(service)))
        for service in services])


@dataclass(frozen=True)
class CheckContext:
    """Targets built from the environment, each with its backend's deadline."""

    env: Environment
    # The run's measurements shared between checks (see shared.py); one per process.
    measurements: SharedObservations = field(default_factory=SharedObservations, compare=False)
    # When the run started (Unix time), before any probe: windows over logs end here, so
    # what this run's own probes make a service log is never judged by this run.
    started_at: float = field(default_factory=time.time)

    def shared(self, key: str, measure: Callable[[], T]) -> T:
        """``measure()``, made once per run for every check that asks with ``key``."""
        return self.measurements.get(key, measure)

    def pods(self, service: str) -> PodsHealth:
        """The service's Deployment and pods, with CPU and memory where metrics-server
        answers, read once per run for every check that judges them (and for the context
        a failed check carries: service_context.py)."""
        kube, deployment = self.kube(), self.deployment(service)
        return self.shared(PODS_KEY.format(service),
                           lambda: kubernetes.pods_health(kube, deployment))

    def pod_logs(self, service: str, since_seconds: int) -> dict[str, str]:
        """Each of the service's pods' log over the last ``since_seconds``, each line with
        the kubelet's time stamp; read once per run (the first asker's window)."""
        kube, deployment = self.kube(), self.deployment(service)
        return self.shared(LOGS_KEY.format(service), lambda: kubernetes.pod_logs(
            kube, deployment, since_seconds=since_seconds, timestamps=True))

    def database_activity(self, name: str) -> Activity:
        """The [postgresql.NAME] database's sessions and connection usage, read once per run
        for every check that judges them."""
        target = self.postgres(name)
        return self.shared(f"postgresql.activity:{name}", lambda: postgresql.activity(target))

    def require(self, key: str, value: T | None) -> T:
        """``value``, or skip the check: the environment has no ``key``."""
        if value is None:
            raise NotConfigured(key)
        return value

    def service_url(self, service: str, path: str = "") -> str:
        target = self.require(f"services.{service}", self.env.spec.service(service))
        return target.url.rstrip("/") + path

    def canary_login(self) -> tuple[str, str]:
        spec = self.require("canary", self.env.spec.canary)
        return spec.email, self.env.secret(spec.password_env) or ""

    def vector_db(self) -> VectorTarget:
        spec = self.require("vector_db", self.env.spec.vector_db)
        return VectorTarget(spec.url, spec.tenant, spec.database,
                            self.env.secret(spec.token_env), self.env.deadline("vector-db"))

    def postgres(self, name: str) -> PostgresTarget:
        spec = self.require(f"postgresql.{name}", self.env.spec.postgresql.get(name))
        return PostgresTarget(spec.dsn, self.env.secret(spec.password_env),
                              self.env.deadline("postgresql"))

    def redis(self, name: str) -> RedisTarget:
        spec = self.require(f"redis.{name}", self.env.spec.redis.get(name))
        return RedisTarget(spec.url, self.env.secret(spec.password_env),
                           self.env.deadline("redis"))

    def broker(self) -> BrokerTarget:
        spec = self.require("rabbitmq", self.env.spec.rabbitmq)
        return BrokerTarget(spec.url, self.env.secret(spec.password_env), spec.management_url,
                            self.env.deadline("rabbitmq"))

    def aws(self, backend: str) -> AwsTarget:
        spec = self.require("aws", self.env.spec.aws)
        return AwsTarget(spec.region, spec.endpoint_url,
                         self.env.secret(spec.access_key_id_env),
                         self.env.secret(spec.secret_access_key_env),
                         self.env.deadline(backend))

    def payment_provider(self) -> ProviderTarget:
        spec = self.require("payments", self.env.spec.payments)
        return ProviderTarget(spec.api_url, self.env.secret(spec.api_key_env) or "",
                              self.env.deadline("payments"))

    def deployment(self, service: str) -> str:
        """The service's Deployment name: the environment's, else the service's own."""
        spec = self.env.spec.service(service)
        return spec.deployment if spec and spec.deployment else service

    def kube(self) -> KubeTarget:
        spec = self.require("kubernetes", self.env.spec.kubernetes)
        return KubeTarget(spec.namespace, spec.mode, spec.context, spec.api_url,
                          self.env.secret(spec.token_env), self.env.deadline("kubernetes"))
