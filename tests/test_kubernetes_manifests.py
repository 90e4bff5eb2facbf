"""The Kubernetes manifests (deploy/kubernetes/): valid against the 1.30 schemas; a CronJob
that runs the scheduled probe within its budget, never two at once; secrets by reference
only, exactly those the environment file names; and a Role that grants exactly what the
probes call: the requests are recorded on their way to the sandbox's Kubernetes API (a
loopback proxy in front of it), mapped to RBAC (apiGroup, resource, verb), and compared with
the Role's rules both ways: a call the Role lacks fails this, and so does a grant no probe
uses."""

from __future__ import annotations

import http.client
import inspect
import re
import subprocess
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from pytest_httpserver import URI_DEFAULT
from receivers import LoopbackServer
from werkzeug import Request, Response

from unibazzar_health.options import DEFAULT_BUDGETS_S

from conftest import (
    ROOT,
    SANDBOX_TOML,
    example_variables,
    named_variables,
    run_checks,
)

MANIFESTS = ROOT / "deploy" / "kubernetes"
SANDBOX_KUBERNETES = "http://127.0.0.1:25443"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind",
               "impersonate"}


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind]
    return found


# ---- request -> RBAC permission -----------------------------------------------------------

@dataclass(frozen=True, order=True)
class Permission:
    group: str  # "" for the core API
    resource: str  # with its subresource: "pods/log"
    verb: str
    namespace: str | None  # None: cluster-scoped


def permission(method: str, url: str) -> Permission:
    """What RBAC checks for a request to the Kubernetes API, by the API's conventions: GET
    on a named object is get, on a collection list (watch with ?watch=true), POST create,
    PUT update, PATCH patch, DELETE delete (deletecollection on a collection)."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["api"] and len(segments) >= 3:
        group, rest = "", segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 4:
        group, rest = segments[1], segments[3:]
    else:
        raise ValueError(f"not a resource request: {method} {url}")
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    watch = parse_qs(parts.query).get("watch", ["false"])[0] in ("true", "1")
    verb = {
        "GET": "get" if named else ("watch" if watch else "list"),
        "HEAD": "get" if named else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[method]
    return Permission(group, resource, verb, namespace)


def grants(role: dict[str, Any]) -> set[Permission]:
    namespace = role["metadata"]["namespace"]
    return {Permission(group, resource, verb, namespace)
            for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def uncovered(used: Iterable[Permission], role: dict[str, Any]) -> set[Permission]:
    """The permissions a Role does not grant (wildcards honoured, though ours has none)."""
    granted = grants(role)

    def allowed(p: Permission) -> bool:
        return any(g.group in ("*", p.group) and g.resource in ("*", p.resource)
                   and g.verb in ("*", p.verb) and g.namespace == p.namespace for g in granted)

    return {p for p in used if not allowed(p)}


@pytest.mark.parametrize(("method", "url", "expected"), [
    ("GET", "/apis/apps/v1/namespaces/u/deployments/auth-service",
     Permission("apps", "deployments", "get", "u")),
    ("GET", "/apis/apps/v1/namespaces/u/replicasets?labelSelector=app%3Dx",
     Permission("apps", "replicasets", "list", "u")),
    ("GET", "/api/v1/namespaces/u/pods?watch=true", Permission("", "pods", "watch", "u")),
    ("GET", "/api/v1/namespaces/u/pods/p-1/log?sinceSeconds=60",
     Permission("", "pods/log", "get", "u")),
    ("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/u/pods",
     Permission("metrics.k8s.io", "pods", "list", "u")),
    ("DELETE", "/api/v1/namespaces/u/pods/p-1", Permission("", "pods", "delete", "u")),
    ("PATCH", "/apis/apps/v1/namespaces/u/deployments/d/scale",
     Permission("apps", "deployments/scale", "patch", "u")),
    ("GET", "/api/v1/nodes", Permission("", "nodes", "list", None)),
])
def test_a_request_maps_to_its_rbac_permission(method: str, url: str,
                                               expected: Permission) -> None:
    assert permission(method, url) == expected


def test_a_call_the_role_does_not_grant_is_caught() -> None:
    """By construction: were a probe to make any of these calls, the recorded set would hold
    it and test_the_role_grants_exactly_what_the_probes_call would fail on it."""
    role = one("Role")
    namespace = role["metadata"]["namespace"]
    lacking = [
        ("GET", f"/api/v1/namespaces/{namespace}/events"),  # events: read, but not granted
        ("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments"),  # list, only get is
        ("DELETE", f"/api/v1/namespaces/{namespace}/pods/auth-service-1"),  # a write
        ("GET", "/api/v1/namespaces/kube-system/pods"),  # another namespace
    ]
    used = {permission(m, u) for m, u in lacking}
    assert uncovered(used, role) == used
    granted = {permission("GET", f"/api/v1/namespaces/{namespace}/pods")}
    assert uncovered(granted, role) == set()


# ---- recording the probes' calls -----------------------------------------------------------

class RecordingProxy:
    """A loopback HTTP proxy in front of the sandbox's Kubernetes API: forwards every request
    as it is and records its method and path."""

    HOP_BY_HOP: ClassVar[set[str]] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "host",
        "content-length", "upgrade", "te", "trailer"}

    def __init__(self, upstream: str) -> None:
        self.requests: list[tuple[str, str]] = []
        self.upstream = urlsplit(upstream)
        self.server = LoopbackServer()
        self.server.expect_request(URI_DEFAULT).respond_with_handler(self.forward)

    @property
    def url(self) -> str:
        return self.server.base

    def forward(self, request: Request) -> Response:
        path = request.environ["RAW_URI"]  # as sent, with its query
        body = request.get_data() or None
        self.requests.append((request.method, path))
        upstream_conn = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1",
                                                   self.upstream.port, timeout=10)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in self.HOP_BY_HOP}
        upstream_conn.request(request.method, path, body=body, headers=headers)
        answer = upstream_conn.getresponse()
        data = answer.read()
        upstream_conn.close()
        return Response(data, f"{answer.status} {answer.reason}",
                        [(k, v) for k, v in answer.getheaders()
                         if k.lower() not in self.HOP_BY_HOP])

    def __enter__(self) -> RecordingProxy:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()


@pytest.fixture
def recorder(running_sandbox: None) -> Iterator[RecordingProxy]:
    with RecordingProxy(SANDBOX_KUBERNETES) as proxy:
        yield proxy


# Every public probe function that takes a KubeTarget, with the arguments to call it with
# against the sandbox: one that is missing here fails test_every_kubernetes_probe_is_called.
DEPLOYMENT = "auth-service"
PROBE_CALLS: dict[str, dict[str, Any]] = {
    "api_client": {},
    "rollout_history": {"name": DEPLOYMENT},
    "pods_health": {"deployment": DEPLOYMENT, "metrics": True},
    "pod_logs": {"deployment": DEPLOYMENT, "since_seconds": 600},
}


def kube_probes() -> dict[str, Any]:
    from unibazzar_health.probes import kubernetes

    return {name: fn for name, fn in vars(kubernetes).items()
            if inspect.isfunction(fn) and fn.__module__ == kubernetes.__name__
            and not name.startswith("_")
            and next(iter(inspect.signature(fn).parameters.values())).annotation
            == "KubeTarget"}


def test_every_kubernetes_probe_is_called() -> None:
    assert set(kube_probes()) == set(PROBE_CALLS)


def sandbox_through(proxy_url: str, tmp_path: Path) -> Path:
    text = SANDBOX_TOML.read_text()
    assert text.count(f'"{SANDBOX_KUBERNETES}"') == 1
    path = tmp_path / "recorded.toml"
    path.write_text(text.replace(f'"{SANDBOX_KUBERNETES}"', f'"{proxy_url}"'))
    return path


@pytest.mark.sandbox
def test_the_role_grants_exactly_what_the_probes_call(recorder: RecordingProxy,
                                                      tmp_path: Path) -> None:
    from unibazzar_health.probes.kubernetes import KubeTarget

    role = one("Role")
    namespace = role["metadata"]["namespace"]
    # 1. Every probe function, on every path it can take (metrics included).
    target = KubeTarget(namespace=namespace, mode="url", context=None, api_url=recorder.url,
                        token=None, deadline=5.0)
    for name, fn in kube_probes().items():
        fn(target, **PROBE_CALLS[name])
    # 2. The checks as they run: the whole catalog, its Kubernetes API through the proxy.
    result, summary = run_checks(tmp_path, "-p", "no:xdist",
                                 env_file=sandbox_through(recorder.url, tmp_path))
    assert summary, result.stdout + result.stderr
    used = {permission(method, path) for method, path in recorder.requests}
    assert used, "no Kubernetes request was recorded"
    assert {p.namespace for p in used} == {namespace}
    missing = uncovered(used, role)
    assert not missing, f"the probes call what the Role does not grant: {sorted(missing)}"
    unused = grants(role) - used
    assert not unused, f"the Role grants what no probe calls: {sorted(unused)}"


def test_the_role_only_reads() -> None:
    role = one("Role")
    assert not {p.verb for p in grants(role)} & WRITE_VERBS
    assert not any("*" in (p.group, p.resource, p.verb) for p in grants(role))


# ---- the manifests themselves ---------------------------------------------------------------

def test_the_manifests_validate_against_kubernetes_1_30() -> None:
    files = sorted(str(p) for p in MANIFESTS.glob("*.yaml"))
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "kubernetes-validate"), "-k", "1.30",
                             "--strict", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(documents())


def test_the_service_account_is_bound_to_the_role() -> None:
    account, role, binding = one("ServiceAccount"), one("Role"), one("RoleBinding")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]


def cron_period_seconds(schedule: str) -> int:
    minutes = re.fullmatch(r"\*/(\d+) \* \* \* \*", schedule)
    assert minutes, f"expected an every-N-minutes schedule, got {schedule!r}"
    return int(minutes.group(1)) * 60


def test_the_cronjob_runs_the_scheduled_probe_within_its_budget_one_at_a_time() -> None:
    cron, account = one("CronJob"), one("ServiceAccount")
    spec = cron["spec"]
    period = cron_period_seconds(spec["schedule"])
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < period
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    margin = job["activeDeadlineSeconds"] - DEFAULT_BUDGETS_S["scheduled"]
    assert 20 <= margin <= 120, f"start-up margin {margin} s over the scheduled budget"
    assert job["activeDeadlineSeconds"] < period
    assert job["backoffLimit"] == 0
    assert env["UNIBAZZAR_RUN_MODE"]["value"] == "scheduled"
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert cron["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert container["image"].endswith(f":{version('unibazzar-health')}")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_secrets_are_referenced_and_are_exactly_those_the_environment_file_names() -> None:
    from unibazzar_health.config.environment import EnvironmentFile

    cron, config_map, role = one("CronJob"), one("ConfigMap"), one("Role")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    # The environment file, as mounted: it validates, in-cluster, against the Role's namespace.
    (key,) = config_map["data"]
    text = config_map["data"][key]
    spec = EnvironmentFile.model_validate(tomllib.loads(text))
    assert spec.kubernetes is not None and spec.kubernetes.mode == "in-cluster"
    # The CronJob is the scheduled probe: it pages, and remembers what it paged.
    assert spec.notify is not None and spec.incident_state is not None
    assert spec.kubernetes.namespace == role["metadata"]["namespace"]
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name")
                  == config_map["metadata"]["name"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert env["UNIBAZZAR_ENV_FILE"]["value"] == f"{mount['mountPath']}/{key}"
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items()
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert all(ref["key"] == name for name, ref in refs.items())
    # What the mounted file names is required: a pod without it does not start, and says so.
    in_effect = named_variables(text) - example_variables(text)
    required = {name for name, ref in refs.items() if not ref.get("optional")}
    assert in_effect == required, (sorted(in_effect ^ required))
    # What only its commented-out examples name (a notifier a team may turn on) is passed
    # too, optional: uncommenting it, and adding the key to the Secret, is all it takes.
    assert example_variables(text) == set(refs) - required
    # And whatever production's example file names or may come to name: paging included.
    example = (ROOT / "environments" / "production.toml.example").read_text()
    assert named_variables(example) <= set(refs), sorted(named_variables(example) - set(refs))
    for name in refs:
        assert "value" not in env[name], f"{name} is written in the manifest"
    # Nothing that sounds secret is written in plain.
    plain = {name for name, e in env.items() if "value" in e}
    assert not {n for n in plain if re.search(r"PASSWORD|TOKEN|SECRET|KEY", n)}
