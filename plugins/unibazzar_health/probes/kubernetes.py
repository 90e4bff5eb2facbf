"""Kubernetes through the official client: every call carries _request_timeout and
urllib3's retries are off (the client would otherwise try three more times)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from unibazzar_health.probes import (
    DeadlineExceeded,
    FailureKind,
    ProbeError,
    bounded,
    connection_failure,
    status_failure,
)
from unibazzar_health.probes.deadline import start


@dataclass(frozen=True)
class KubeTarget:
    namespace: str
    mode: str  # kubeconfig | in-cluster | url
    context: str | None
    api_url: str | None
    token: str | None = field(repr=False)
    deadline: float

    @property
    def where(self) -> str:
        return self.api_url or (f"context {self.context}" if self.context else self.mode)


def api_client(target: KubeTarget) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    if target.mode == "in-cluster":
        config.load_incluster_config(client_configuration=configuration)
    elif target.mode == "kubeconfig":
        # A kubeconfig may run an exec credential plugin (EKS, GKE) that the client waits
        # for without any limit.
        bounded(lambda: config.load_kube_config(context=target.context,
                                                client_configuration=configuration),
                target.deadline, "kubernetes", target.where)
    else:
        configuration.host = target.api_url
    if target.token:
        configuration.api_key = {"authorization": f"Bearer {target.token}"}
    configuration.retries = 0
    return client.ApiClient(configuration)


def _call(target: KubeTarget, what: str, fn: Any, *args: Any,
          read: Callable[[Any], Any] | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` within the deadline, its failures as ProbeErrors. With
    ``read``, the answer is a raw response (``_preload_content=False``) and ``read(answer)``,
    its body read, is returned: within the same deadline, so a server that sends its
    headers and then drips the body costs one deadline, and its read errors are typed too.
    Past the deadline the response is shut down, so the abandoned read ends as well."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, TimeoutError

    responses: list[Any] = []

    def call() -> Any:
        answer = fn(*args, _request_timeout=(target.deadline, target.deadline), **kwargs)
        if read is None:
            return answer
        responses.append(answer)
        try:
            return read(answer)
        finally:
            answer.release_conn()

    try:
        # The request timeout bounds each step of the HTTP exchange (each read of the body
        # too, not all of them); bounded() bounds the whole, and what the client does first
        # (refreshing an exec-plugin token, say).
        return bounded(call, target.deadline, "kubernetes", target.where)
    except DeadlineExceeded:
        for answer in responses:
            _shut_down(answer)
        raise
    except ApiException:
        raise
    except (TimeoutError, MaxRetryError) as exc:
        reason = getattr(exc, "reason", None) or exc
        # urllib3 makes NewConnectionError (refused, unreachable, unresolvable) a subclass of
        # ConnectTimeoutError: it is no timeout, and must not be reported as one.
        if isinstance(reason, NewConnectionError):
            text = str(reason)
            kind = connection_failure(reason)
            problem = ("connection refused" if kind is FailureKind.REFUSED
                       else f"cannot connect: {text.split(': ', 1)[-1]}")
            raise ProbeError("kubernetes", target.where, f"{what}: {problem}",
                             target.deadline, kind=kind) from None
        if isinstance(reason, TimeoutError):
            raise DeadlineExceeded("kubernetes", target.where, target.deadline) from None
        raise ProbeError("kubernetes", target.where, f"{what}: {reason}", target.deadline,
                         kind=connection_failure(exc)) from None
    except HTTPError as exc:
        raise ProbeError("kubernetes", target.where, f"{what}: {exc}", target.deadline,
                         kind=FailureKind.UNEXPECTED_ANSWER) from None


def _shut_down(response: Any) -> None:
    """Unblock and end a read under way on another thread (urllib3 2.3+), else close: best
    effort, on a response already given up."""
    import contextlib

    with contextlib.suppress(Exception):
        getattr(response, "shutdown", response.close)()


def _api_error(target: KubeTarget, exc: Any) -> ProbeError:
    return ProbeError("kubernetes", target.where, f"HTTP {exc.status} {exc.reason}",
                      target.deadline, kind=status_failure(int(exc.status or 0)))


def _deployment(target: KubeTarget, apps: Any, name: str) -> tuple[Any, str] | None:
    """The Deployment ``name`` and the label selector of its pods; None if it does not exist."""
    from kubernetes.client.exceptions import ApiException

    try:
        d = _call(target, f"read deployment {name}", apps.read_namespaced_deployment,
                  name, target.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(target, exc) from None
    labels = sorted((d.spec.selector.match_labels or {}).items())
    return d, ",".join(f"{k}={v}" for k, v in labels)


def _items(target: KubeTarget, what: str, fn: Any, *args: Any, **kwargs: Any) -> list[Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        return list(_call(target, what, fn, *args, **kwargs).items)
    except ApiException as exc:
        raise _api_error(target, exc) from None


@dataclass(frozen=True)
class ReplicaSetRevision:
    name: str
    revision: int | None
    created_at: str | None  # ISO 8601
    age_minutes: float | None
    replicas: int
    ready: int


@dataclass(frozen=True)
class Rollout:
    """A Deployment's rollout state and the ReplicaSets behind its revisions, newest first."""

    name: str
    exists: bool
    revision: int | None = None
    generation: int = 0
    observed_generation: int = 0
    desired: int = 0
    updated: int = 0
    available: int = 0
    unavailable: int = 0
    progressing_status: str | None = None
    progressing_reason: str | None = None
    progressing_message: str | None = None
    # When the rollout last progressed: a rollback reuses an old ReplicaSet (its creation
    # time is old), but moves this.
    progressing_minutes_ago: float | None = None
    replica_sets: tuple[ReplicaSetRevision, ...] = ()


def _revision(meta: Any) -> int | None:
    value = (meta.annotations or {}).get("deployment.kubernetes.io/revision")
    return int(value) if value and value.isdigit() else None


def rollout_history(target: KubeTarget, name: str) -> Rollout:
    """The Deployment ``name`` and its ReplicaSets: what rolled out when, and whether the
    current rollout progresses (two reads, each within the deadline)."""
    from datetime import UTC, datetime

    from kubernetes import client

    apps = client.AppsV1Api(api_client(target))
    found = _deployment(target, apps, name)
    if found is None:
        return Rollout(name=name, exists=False)
    d, selector = found
    sets = _items(target, f"list replicasets of {name}", apps.list_namespaced_replica_set,
                  target.namespace, label_selector=selector)
    now = datetime.now(UTC)
    owned = [rs for rs in sets
             if any(o.kind == "Deployment" and o.name == name
                    for o in (rs.metadata.owner_references or []))]
    revisions = sorted(
        (ReplicaSetRevision(
            name=rs.metadata.name,
            revision=_revision(rs.metadata),
            created_at=(rs.metadata.creation_timestamp.isoformat()
                        if rs.metadata.creation_timestamp else None),
            age_minutes=(round((now - rs.metadata.creation_timestamp).total_seconds() / 60, 1)
                         if rs.metadata.creation_timestamp else None),
            replicas=rs.status.replicas or 0 if rs.status else 0,
            ready=rs.status.ready_replicas or 0 if rs.status else 0,
        ) for rs in owned),
        key=lambda r: r.revision or 0, reverse=True)
    status = d.status
    progressing = next((c for c in (status.conditions or []) if c.type == "Progressing"), None)
    return Rollout(
        name=name,
        exists=True,
        revision=_revision(d.metadata),
        generation=d.metadata.generation or 0,
        observed_generation=status.observed_generation or 0,
        desired=d.spec.replicas or 0,
        updated=status.updated_replicas or 0,
        available=status.available_replicas or 0,
        unavailable=status.unavailable_replicas or 0,
        progressing_status=progressing.status if progressing else None,
        progressing_reason=progressing.reason if progressing else None,
        progressing_message=progressing.message if progressing else None,
        progressing_minutes_ago=(
            round((now - progressing.last_update_time).total_seconds() / 60, 1)
            if progressing and progressing.last_update_time else None),
        replica_sets=tuple(revisions),
    )


@dataclass(frozen=True)
class ContainerHealth:
    pod: str
    container: str
    ready: bool
    restarts: int
    waiting_reason: str | None  # e.g. CrashLoopBackOff
    last_termination_reason: str | None  # e.g. OOMKilled
    last_terminated_minutes_ago: float | None
    memory_limit_bytes: int | None
    memory_bytes: int | None  # working set from the metrics API, None without one
    cpu_limit_millicores: float | None = None
    cpu_millicores: float | None = None  # from the metrics API, None without one

    @property
    def memory_usage(self) -> float | None:
        if not self.memory_bytes or not self.memory_limit_bytes:
            return None
        return round(self.memory_bytes / self.memory_limit_bytes, 4)

    @property
    def cpu_usage(self) -> float | None:
        """CPU used, as a share of the container's limit (above 1 is not possible: the
        container is throttled at its limit)."""
        if self.cpu_millicores is None or not self.cpu_limit_millicores:
            return None
        return round(self.cpu_millicores / self.cpu_limit_millicores, 4)


@dataclass(frozen=True)
class PodsHealth:
    deployment: str
    exists: bool
    metrics_available: bool = False
    containers: tuple[ContainerHealth, ...] = ()
    desired: int = 0  # the Deployment's replicas
    ready: int = 0  # and how many of them are ready


def pods_health(target: KubeTarget, deployment: str, metrics: bool = True) -> PodsHealth:
    """The Deployment's ready replicas and its pods: restarts, last terminations, crash loops,
    and (``metrics``) memory working set and CPU against the limits where metrics-server
    answers (up to three reads, each within the deadline)."""
    from datetime import UTC, datetime

    from kubernetes import client
    from kubernetes.utils import parse_quantity

    api = api_client(target)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    found = _deployment(target, apps, deployment)
    if found is None:
        return PodsHealth(deployment=deployment, exists=False)
    d, selector = found
    pods = _items(target, f"list pods of {deployment}", core.list_namespaced_pod,
                  target.namespace, label_selector=selector)
    usage = _usage(target, api, selector) if metrics else None
    now = datetime.now(UTC)
    containers = []
    for pod in pods:
        limits = {c.name: ((c.resources.limits or {}) if c.resources else {})
                  for c in pod.spec.containers}
        for status in (pod.status.container_statuses or []) if pod.status else []:
            terminated = status.last_state.terminated if status.last_state else None
            finished = terminated.finished_at if terminated else None
            limit = limits.get(status.name, {}).get("memory")
            cpu_limit = limits.get(status.name, {}).get("cpu")
            used = (usage or {}).get((pod.metadata.name, status.name), {})
            containers.append(ContainerHealth(
                pod=pod.metadata.name,
                container=status.name,
                ready=bool(status.ready),
                restarts=status.restart_count or 0,
                waiting_reason=(status.state.waiting.reason
                                if status.state and status.state.waiting else None),
                last_termination_reason=terminated.reason if terminated else None,
                last_terminated_minutes_ago=(round((now - finished).total_seconds() / 60, 1)
                                             if finished else None),
                memory_limit_bytes=int(parse_quantity(limit)) if limit else None,
                memory_bytes=used.get("memory"),
                cpu_limit_millicores=(float(parse_quantity(cpu_limit) * 1000) if cpu_limit
                                      else None),
                cpu_millicores=used.get("cpu"),
            ))
    return PodsHealth(deployment=deployment, exists=True, metrics_available=usage is not None,
                      containers=tuple(containers), desired=d.spec.replicas or 0,
                      ready=(d.status.ready_replicas or 0) if d.status else 0)



def _usage(target: KubeTarget, api: Any,
           selector: str) -> dict[tuple[str, str], dict[str, Any]] | None:
    """(pod, container) -> {"memory": working-set bytes, "cpu": millicores} from
    metrics-server; None where it does not answer (usage is then not judged)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.utils import parse_quantity

    try:
        metrics = _call(target, "read pod metrics", client.CustomObjectsApi(api)
                        .list_namespaced_custom_object, "metrics.k8s.io", "v1beta1",
                        target.namespace, "pods", label_selector=selector)
    except ApiException:
        return None
    usage: dict[tuple[str, str], dict[str, Any]] = {}
    for item in metrics.get("items", []):
        for c in item.get("containers", []):
            measured = c.get("usage") or {}
            seen: dict[str, Any] = {}
            if measured.get("memory"):
                seen["memory"] = int(parse_quantity(measured["memory"]))
            if measured.get("cpu"):
                seen["cpu"] = round(float(parse_quantity(measured["cpu"]) * 1000), 3)
            usage[(item["metadata"]["name"], c["name"])] = seen
    return usage


def pod_logs(target: KubeTarget, deployment: str, since_seconds: int,
             tail_lines: int = 20_000, limit_bytes: int = 8 * 2**20,
             timestamps: bool = False) -> dict[str, str]:
    """Each pod's log over the last ``since_seconds``, as `kubectl logs --since` gives it,
    bounded in lines and bytes; with ``timestamps``, each line starts with the time the
    kubelet received it (RFC 3339) and a space, as `kubectl logs --timestamps`.

    The pods are read at once, each read (its body included) within the deadline, so the
    logs cost one deadline however many pods there are; the first pod's failure (in the
    order listed) is raised."""
    from kubernetes import client

    api = api_client(target)
    found = _deployment(target, client.AppsV1Api(api), deployment)
    if found is None:
        return {}
    core = client.CoreV1Api(api)
    pods = _items(target, f"list pods of {deployment}", core.list_namespaced_pod,
                  target.namespace, label_selector=found[1])
    names = [pod.metadata.name for pod in pods]

    def read_log(name: str) -> str:
        # Raw: the client would otherwise "deserialize" the text into the repr of bytes.
        body = _call(target, f"read log of {name}", core.read_namespaced_pod_log,
                     name, target.namespace, since_seconds=since_seconds,
                     tail_lines=tail_lines, limit_bytes=limit_bytes,
                     timestamps=timestamps, _preload_content=False,
                     read=lambda response: response.data)
        return str(body.decode("utf-8", errors="replace"))

    reads = [start(partial(read_log, name), "kubernetes-logs") for name in names]
    for read in reads:
        read.wait(None)  # each returns within about one deadline: _call is bounded
    # The first pod's failure (in the order listed) is raised, in the caller's thread.
    return {name: read.result() for name, read in zip(names, reads, strict=True)}
