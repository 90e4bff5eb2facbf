"""Loopback Kubernetes API emulator for the UniBazzar sandbox (built on kmock 0.8).

Run:  python -m unibazzar_sandbox.kube_api --host 127.0.0.1 --port 25443 --log-dir DIR \
          --service auth-service=127.0.0.1:28001 --service listing-service=127.0.0.1:28002 ...

Serves, for namespace ``unibazzar``: the Namespace, one Deployment + ReplicaSet + 2 Pods per
``--service``, Events, metrics-server's PodMetrics, and pod logs read from ``DIR/<service>.log``
(a container's previous run: the lines up to when it ended); and as much of the API's
discovery, OpenAPI, tables and dry runs as ``kubectl`` itself needs (get, describe, logs, top,
rollout, scale; ``--dry-run=server`` changes nothing). Readiness is dynamic: before every
deployment/replicaset/pod request, each service's host:port is TCP-probed (0.3 s timeout).

Objects live in kmock's own object store (``KubernetesEmulator.objects``) and are served by its
fallback list/fetch machinery. Workarounds for kmock 0.8 rough edges (see the comments below):
  * sink-only reactions (``kmock[...] >> fn``) fire once and then get disabled, so the
    pre-request status refresh is done by overriding ``_handle`` (as the emulator itself does);
  * list requests ignore ``labelSelector``/``fieldSelector`` -> an explicit list reaction filters;
  * ``GET /api/v1/namespaces/NAME`` is mis-parsed (namespace=NAME, no plural) -> explicit route;
  * ``GET /api/v1/namespaces`` crashes kmock's path parser (500) -> raw pre-route for that path only;
  * ``.../pods/NAME/log`` would return the Pod JSON -> explicit text/plain route;
  * its discovery names the core group version "/v1" and gives subresources their parent's
    kind, so kubectl knows no "pod" -> resource lists served as an API server does;
  * writes ignore ``dryRun`` and ``.../scale`` answers the whole object -> kubectl's
    ``--dry-run=server`` stores nothing, and a Deployment's scale is an autoscaling/v1 Scale;
  * 404 bodies carry kmock-specific reasons and a traceback -> re-shaped into Kubernetes Status;
  * every request/error is kept forever (for test assertions), and each request is matched by
    re-scanning that whole history -> O(N) per request; finished requests are pruned after each one;
  * watches ignore timeoutSeconds and never end -> shutdown is bounded (2 s) instead of hanging;
    they stream as application/octet-stream, which kubectl cannot decode -> served as JSON;
  * lists ignore `Accept: ...;as=Table` -> `kubectl get` gets the columns it prints.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import datetime
import pathlib
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock

NAMESPACE = 'unibazzar'
REPLICAS = 2
POD_TEMPLATE_HASH = '7d9f8'  # fixed so pod names are predictable: <svc>-7d9f8-abc12 / -def34
POD_SUFFIXES = ('abc12', 'def34')
# Seconds per TCP readiness probe: the kubelet's default timeoutSeconds. A shorter one read a
# stand-in as unready when this host was busy (probe-host-busy), which no kubelet would.
PROBE_TIMEOUT = 1.0
SHUTDOWN_TIMEOUT = 2.0  # seconds; only open watch streams can take this long

DEPLOYMENTS = kmock.resource('apps', 'v1', 'deployments')
REPLICASETS = kmock.resource('apps', 'v1', 'replicasets')
PODS = kmock.resource('', 'v1', 'pods')
NAMESPACES = kmock.resource('', 'v1', 'namespaces')
EVENTS = kmock.resource('', 'v1', 'events')
# metrics-server's PodMetrics: a fixed working set per container, patchable to inject pressure.
POD_METRICS = kmock.resource('metrics.k8s.io', 'v1beta1', 'pods')
POD_MEMORY = '200Mi'
POD_CPU = '50m'
DYNAMIC_PLURALS = {'deployments', 'replicasets', 'pods'}

# The kind of list objects, by (group, plural): clients decode a list by it (kubectl top
# refuses PodMetrics listed as a PodList).
LIST_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ('apps', 'deployments'): ('apps/v1', 'DeploymentList'),
    ('apps', 'replicasets'): ('apps/v1', 'ReplicaSetList'),
    ('', 'pods'): ('v1', 'PodList'),
    ('', 'namespaces'): ('v1', 'NamespaceList'),
    ('', 'events'): ('v1', 'EventList'),
    ('metrics.k8s.io', 'pods'): ('metrics.k8s.io/v1beta1', 'PodMetricsList'),
}
# Subresources as discovery lists them: (kind, or None for the parent's; group and version,
# empty for the parent's; verbs). A scale is an autoscaling/v1 Scale whatever its parent.
SUBRESOURCES: dict[str, tuple[str | None, str, str, tuple[str, ...]]] = {
    'status': (None, '', '', ('get', 'patch', 'update')),
    'log': ('Pod', '', '', ('get',)),
    'scale': ('Scale', 'autoscaling', 'v1', ('get', 'patch', 'update')),
}
WRITES = {'POST', 'PUT', 'PATCH', 'DELETE'}
SERVICE_NAME_RE = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _uid(kind: str, name: str) -> str:
    # Deterministic uids so that ownerReferences stay consistent across restarts.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f'unibazzar-sandbox/{kind}/{name}'))


# --- selectors ---------------------------------------------------------------------------------

def _bad_request(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=400, reason='BadRequest', message=message, details={})


def _split_terms(expr: str) -> list[str]:
    # Commas inside "in (a,b)" sets are not term separators.
    terms, depth, cur = [], 0, ''
    for ch in expr:
        depth += ch == '('
        depth -= ch == ')'
        if ch == ',' and depth == 0:
            terms.append(cur)
            cur = ''
        else:
            cur += ch
    terms.append(cur)
    return [t.strip() for t in terms if t.strip()]


def _label_matcher(expr: str) -> Callable[[Mapping[str, str]], bool]:
    """Equality- and set-based label selectors, as in the Kubernetes API."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    key = r'([A-Za-z0-9][-A-Za-z0-9_./]*)'
    for term in _split_terms(expr):
        if m := re.fullmatch(key + r'\s+(in|notin)\s+\(([^)]*)\)', term):
            k, op, values = m[1], m[2], {v.strip() for v in m[3].split(',') if v.strip()}
            if op == 'in':
                checks.append(lambda lb, k=k, vs=values: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=k, vs=values: lb.get(k) not in vs)
        elif m := re.fullmatch(r'!\s*' + key, term):
            checks.append(lambda lb, k=m[1]: k not in lb)
        elif m := re.fullmatch(key + r'\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)', term):
            k, op, v = m[1], m[2], m[3]
            if op == '!=':
                checks.append(lambda lb, k=k, v=v: lb.get(k) != v)
            else:
                checks.append(lambda lb, k=k, v=v: lb.get(k) == v)
        elif m := re.fullmatch(key, term):
            checks.append(lambda lb, k=m[1]: k in lb)
        else:
            raise _bad_request(f'unable to parse requirement: {term!r}')
    return lambda labels: all(check(labels) for check in checks)


def _field_matcher(expr: str) -> Callable[[Mapping[str, Any]], bool]:
    """Field selectors: `a.b=c`, `a.b==c`, `a.b!=c` over dotted paths of the object."""
    checks: list[Callable[[Mapping[str, Any]], bool]] = []

    def lookup(obj: Mapping[str, Any], path: str) -> str:
        cur: Any = obj
        for part in path.split('.'):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        return '' if cur is None else str(cur)

    for term in _split_terms(expr):
        m = re.fullmatch(r'([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)', term)
        if not m:
            raise _bad_request(f'invalid field selector: {term!r}')
        path, op, value = m[1], m[2], m[3].strip()
        if op == '!=':
            checks.append(lambda o, p=path, v=value: lookup(o, p) != v)
        else:
            checks.append(lambda o, p=path, v=value: lookup(o, p) == v)
    return lambda obj: all(check(obj) for check in checks)


# --- object builders ---------------------------------------------------------------------------

def _container(service: str, port: int) -> dict[str, Any]:
    return {
        'name': service,
        'image': f'unibazzar/{service}:sandbox',
        'imagePullPolicy': 'IfNotPresent',
        'ports': [{'containerPort': port, 'protocol': 'TCP'}],
        'resources': {
            'limits': {'cpu': '500m', 'memory': '512Mi'},
            'requests': {'cpu': '100m', 'memory': '256Mi'},
        },
    }


def _deployment_status(service: str, ready: bool, since: str) -> dict[str, Any]:
    n = REPLICAS if ready else 0
    status: dict[str, Any] = {
        'observedGeneration': 1,
        'replicas': REPLICAS,
        'updatedReplicas': REPLICAS,
        'readyReplicas': n,
        'availableReplicas': n,
        'conditions': [
            {
                'type': 'Available',
                'status': 'True' if ready else 'False',
                'reason': 'MinimumReplicasAvailable' if ready else 'MinimumReplicasUnavailable',
                'message': ('Deployment has minimum availability.' if ready
                            else 'Deployment does not have minimum availability.'),
                'lastUpdateTime': since,
                'lastTransitionTime': since,
            },
            {
                'type': 'Progressing',
                'status': 'True',
                'reason': 'NewReplicaSetAvailable',
                'message': f'ReplicaSet "{service}-{POD_TEMPLATE_HASH}" has successfully progressed.',
                'lastUpdateTime': since,
                'lastTransitionTime': since,
            },
        ],
    }
    if not ready:
        status['unavailableReplicas'] = REPLICAS
    return status


def _replicaset_status(ready: bool) -> dict[str, Any]:
    n = REPLICAS if ready else 0
    return {
        'replicas': REPLICAS, 'fullyLabeledReplicas': REPLICAS,
        'readyReplicas': n, 'availableReplicas': n, 'observedGeneration': 1,
    }


def _pod_status(service: str, ready: bool, started: str, since: str, index: int) -> dict[str, Any]:
    flag = 'True' if ready else 'False'
    unready = {} if ready else {'reason': 'ContainersNotReady',
                                'message': f'containers with unready status: [{service}]'}
    return {
        'phase': 'Running',
        'hostIP': '10.0.0.10',
        'podIP': f'10.42.0.{10 + index}',
        'podIPs': [{'ip': f'10.42.0.{10 + index}'}],
        'startTime': started,
        'qosClass': 'Burstable',
        'conditions': [
            {'type': 'Initialized', 'status': 'True', 'lastTransitionTime': started},
            {'type': 'Ready', 'status': flag, 'lastTransitionTime': since, **unready},
            {'type': 'ContainersReady', 'status': flag, 'lastTransitionTime': since, **unready},
            {'type': 'PodScheduled', 'status': 'True', 'lastTransitionTime': started},
        ],
        'containerStatuses': [{
            'name': service,
            'image': f'unibazzar/{service}:sandbox',
            'imageID': f'docker.io/unibazzar/{service}@sha256:{"0" * 64}',
            'containerID': f'containerd://{uuid.uuid5(uuid.NAMESPACE_URL, service).hex}{index}',
            'ready': ready,
            'started': True,
            'restartCount': 0,
            'state': {'running': {'startedAt': started}},
            'lastState': {},
        }],
    }


# --- the emulator ------------------------------------------------------------------------------

@attrs.define(kw_only=True)
class UniBazzarKube(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator plus dynamic readiness, pod logs and a few path fixes."""

    services: dict[str, tuple[str, int]]
    log_dir: pathlib.Path
    namespace_name: str = NAMESPACE
    _started: str = attrs.field(factory=_now, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    # Per service: (last probed readiness, when it last changed) -> lastTransitionTime.
    _state: dict[str, tuple[bool, str]] = attrs.field(factory=dict, init=False)
    # ids of the aiohttp requests being served: their kmock records must survive pruning.
    _inflight: set[int] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._declare_resources()
        self._populate()
        # Explicit reactions (default priority 0) outrank the emulator's -inf fallbacks.
        # The pod-log route must come first: otherwise GET pods/NAME/log serves the Pod JSON.
        self[kmock.method.GET, PODS, kmock.subresource('log')] \
            << {'Content-Type': 'text/plain; charset=utf-8'} << self._serve_log
        self[kmock.method.GET, re.compile(r'/api/v1/namespaces/[^/]+/?')] << self._serve_namespace
        self[kmock.action.LIST, lambda req: req.resource is not None and req.resource.plural is not None] \
            << self._serve_selected_list
        # kmock streams a watch as application/octet-stream, which kubectl cannot decode.
        self[kmock.action.WATCH] << {'Content-Type': 'application/json'} << self._serve_watch
        # `kubectl get NAME` asks for a Table (after the log route: a log is no object).
        self[kmock.action.FETCH, lambda req: _wants_table(req) and req.subresource is None] \
            << self._serve_table_fetch

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _declare_resources(self) -> None:
        # Otherwise kmock's discovery guesses kinds like "Deployments".
        verbs = {'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'}
        self.resources[DEPLOYMENTS] = kmock.ResourceInfo(
            kind='Deployment', singular='deployment', namespaced=True, verbs=verbs,
            shortnames={'deploy'}, subresources={'status', 'scale'})
        self.resources[REPLICASETS] = kmock.ResourceInfo(
            kind='ReplicaSet', singular='replicaset', namespaced=True, verbs=verbs,
            shortnames={'rs'}, subresources={'status', 'scale'})
        self.resources[PODS] = kmock.ResourceInfo(
            kind='Pod', singular='pod', namespaced=True, verbs=verbs,
            shortnames={'po'}, subresources={'status', 'log'})
        self.resources[POD_METRICS] = kmock.ResourceInfo(
            kind='PodMetrics', singular='', namespaced=True, verbs={'get', 'list', 'patch'},
            shortnames=set(), subresources=set())
        self.resources[NAMESPACES] = kmock.ResourceInfo(
            kind='Namespace', singular='namespace', namespaced=False, verbs=verbs,
            shortnames={'ns'}, subresources={'status'})
        # What `kubectl describe` lists under a pod or deployment (faults may add some).
        self.resources[EVENTS] = kmock.ResourceInfo(
            kind='Event', singular='event', namespaced=True, verbs=verbs,
            shortnames={'ev'}, subresources=set())
        for resource in (DEPLOYMENTS, REPLICASETS, PODS):  # `kubectl get all`
            self.resources[resource].categories.add('all')

    def _populate(self) -> None:
        ns, t0 = self.namespace_name, self._started
        self.objects[NAMESPACES, None, ns] = {
            'apiVersion': 'v1', 'kind': 'Namespace',
            'metadata': {'name': ns, 'uid': _uid('Namespace', ns), 'resourceVersion': self._next_rv(),
                         'creationTimestamp': t0, 'labels': {'kubernetes.io/metadata.name': ns}},
            'spec': {'finalizers': ['kubernetes']},
            'status': {'phase': 'Active'},
        }
        for service, (_, port) in self.services.items():
            self._state[service] = (False, t0)
            labels = {'app': service}
            rs_name = f'{service}-{POD_TEMPLATE_HASH}'
            pod_labels = {**labels, 'pod-template-hash': POD_TEMPLATE_HASH}
            template = {'metadata': {'labels': labels},
                        'spec': {'containers': [_container(service, port)], 'restartPolicy': 'Always'}}
            self.objects[DEPLOYMENTS, ns, service] = {
                'apiVersion': 'apps/v1', 'kind': 'Deployment',
                'metadata': {'name': service, 'namespace': ns, 'labels': labels,
                             'uid': _uid('Deployment', service), 'generation': 1,
                             'resourceVersion': self._next_rv(), 'creationTimestamp': t0,
                             'annotations': {'deployment.kubernetes.io/revision': '1'}},
                'spec': {'replicas': REPLICAS, 'selector': {'matchLabels': labels},
                         'strategy': {'type': 'RollingUpdate',
                                      'rollingUpdate': {'maxSurge': '25%', 'maxUnavailable': '25%'}},
                         'revisionHistoryLimit': 10, 'progressDeadlineSeconds': 600,
                         'template': template},
                'status': _deployment_status(service, False, t0),
            }
            self.objects[REPLICASETS, ns, rs_name] = {
                'apiVersion': 'apps/v1', 'kind': 'ReplicaSet',
                'metadata': {'name': rs_name, 'namespace': ns, 'labels': pod_labels,
                             'uid': _uid('ReplicaSet', rs_name), 'generation': 1,
                             'resourceVersion': self._next_rv(), 'creationTimestamp': t0,
                             'annotations': {'deployment.kubernetes.io/revision': '1',
                                             'deployment.kubernetes.io/desired-replicas': str(REPLICAS)},
                             'ownerReferences': [{'apiVersion': 'apps/v1', 'kind': 'Deployment',
                                                  'name': service, 'uid': _uid('Deployment', service),
                                                  'controller': True, 'blockOwnerDeletion': True}]},
                'spec': {'replicas': REPLICAS,
                         'selector': {'matchLabels': pod_labels},
                         'template': {**template, 'metadata': {'labels': pod_labels}}},
                'status': _replicaset_status(False),
            }
            for index, suffix in enumerate(POD_SUFFIXES):
                pod_name = f'{rs_name}-{suffix}'
                self.objects[PODS, ns, pod_name] = {
                    'apiVersion': 'v1', 'kind': 'Pod',
                    'metadata': {'name': pod_name, 'namespace': ns, 'labels': pod_labels,
                                 'generateName': f'{rs_name}-', 'uid': _uid('Pod', pod_name),
                                 'resourceVersion': self._next_rv(), 'creationTimestamp': t0,
                                 'ownerReferences': [{'apiVersion': 'apps/v1', 'kind': 'ReplicaSet',
                                                      'name': rs_name, 'uid': _uid('ReplicaSet', rs_name),
                                                      'controller': True, 'blockOwnerDeletion': True}]},
                    'spec': {'containers': [_container(service, port)], 'restartPolicy': 'Always',
                             'nodeName': 'sandbox-node', 'serviceAccountName': 'default'},
                    'status': _pod_status(service, False, t0, t0, index),
                }
                self.objects[POD_METRICS, ns, pod_name] = {
                    'apiVersion': 'metrics.k8s.io/v1beta1', 'kind': 'PodMetrics',
                    'metadata': {'name': pod_name, 'namespace': ns, 'labels': pod_labels,
                                 'creationTimestamp': t0},
                    'timestamp': t0, 'window': '30s',
                    'containers': [{'name': service,
                                    'usage': {'cpu': POD_CPU, 'memory': POD_MEMORY}}],
                }

    # --- dynamic readiness ---

    async def _probe(self, host: str, port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
        except (TimeoutError, OSError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def refresh(self) -> None:
        """Probe all services concurrently and update the stored statuses that changed."""
        names = list(self.services)
        results = await asyncio.gather(*(self._probe(*self.services[n]) for n in names))
        async with self._lock:  # the emulator's own store lock
            for service, ready in zip(names, results, strict=False):
                if self._state[service][0] != ready:
                    self._state[service] = (ready, _now())
                    self._apply_state(service)

    def _apply_state(self, service: str) -> None:
        ready, since = self._state[service]
        ns, rs_name = self.namespace_name, f'{service}-{POD_TEMPLATE_HASH}'
        updates: list[tuple[Any, dict[str, Any]]] = [
            ((DEPLOYMENTS, ns, service), _deployment_status(service, ready, since)),
            ((REPLICASETS, ns, rs_name), _replicaset_status(ready)),
        ]
        for index, suffix in enumerate(POD_SUFFIXES):
            updates.append(((PODS, ns, f'{rs_name}-{suffix}'),
                            _pod_status(service, ready, self._started, since, index)))
        for key, status in updates:
            if key not in self.objects or self.objects[key].deleted:
                continue  # deleted through the API: leave it gone
            obj = self.objects[key]
            # Top-level assignment edits the latest version in place (no history growth);
            # nested views are copies in kmock, so metadata is replaced as a whole.
            obj['status'] = status
            obj['metadata'] = {**obj.raw['metadata'], 'resourceVersion': self._next_rv()}

    # --- kmock hooks ---

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # A `kmock[...] >> refresh` sink would be disabled after its first hit (a sink-only
        # reaction raises ReactionMismatchError), so the refresh hooks in here instead.
        if request.resource is not None and request.resource.plural in DYNAMIC_PLURALS:
            await self.refresh()
        try:
            # Before kmock's own write handling, which would store the change (or, for a
            # scale, merge a whole Scale into the Deployment).
            if request.resource is not None and request.name and request.subresource == 'scale':
                return aiohttp.web.json_response(await self._serve_scale(request))
            if _dry_run_asked(request):
                return aiohttp.web.json_response(await self._dry_run(request))
            return await super()._handle(request)
        except kmock.KubernetesNotFoundError as exc:
            raise self._not_found(request, exc) from None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser raises ValueError on exactly "/api/v1/namespaces" (500), before
        # any reaction can see it; serve that one path raw, from the store.
        if raw_request.method == 'GET' and raw_request.path.rstrip('/') == '/api/v1/namespaces':
            async with self._lock:
                items = [obj.raw for (res, _, _), obj in self.objects.items()
                         if res == NAMESPACES and not obj.deleted]
            return aiohttp.web.json_response(
                {'apiVersion': 'v1', 'kind': 'NamespaceList',
                 'metadata': {'resourceVersion': str(self._rv)}, 'items': items})
        if raw_request.method == 'GET' and raw_request.path == '/openapi/v2':
            return self._serve_openapi(raw_request.headers.get('Accept', ''))
        self._inflight.add(id(raw_request))
        try:
            return await super().__call__(raw_request)
        finally:
            self._inflight.discard(id(raw_request))
            self._prune()

    def _prune(self) -> None:
        # kmock records every request (and served error) for test assertions, and matching a new
        # request re-scans that history: keep only in-flight requests, which matching still needs.
        def keep(records: list[kmock.Request]) -> None:
            records[:] = [r for r in records if id(r._raw_request) in self._inflight]
        keep(self._requests)
        for payload in self._payloads:
            keep(payload._requests)
        if self._errors:
            self._errors[-1].clear()

    def _not_found(self, request: kmock.Request, exc: kmock.KubernetesNotFoundError) -> kmock.KubernetesError:
        # Real API servers answer `<plural>[.<group>] "<name>" not found` with reason NotFound.
        res = request.resource
        known = res is not None and any(res == r for r in self._get_resources())
        if isinstance(exc, kmock.KubernetesObjectNotFoundError) and known and res is not None and request.name:
            qualified = f'{res.plural}.{res.group}' if res.group else f'{res.plural}'
            return kmock.KubernetesNotFoundError(
                reason='NotFound', message=f'{qualified} "{request.name}" not found',
                details={'name': request.name, 'group': res.group or '', 'kind': res.plural})
        return kmock.KubernetesNotFoundError(
            reason='NotFound', message='the server could not find the requested resource', details={})

    # --- discovery, dry runs, scale ---

    async def _serve_version(self, request: kmock.Request) -> dict[str, Any]:
        """A group version's APIResourceList, as kubectl's discovery reads it."""
        assert request.resource is not None
        group, version = request.resource.group, request.resource.version
        served = sorted((r for r in self.resources if r.group == group and r.version == version),
                        key=lambda r: r.plural or '')
        if not served:
            raise kmock.KubernetesNotFoundError(
                reason='NotFound', message='the server could not find the requested resource',
                details={})
        resources: list[dict[str, Any]] = []
        for res in served:
            info = self.resources[res]
            resources.append({
                'name': res.plural, 'singularName': info.singular or '', 'namespaced': info.namespaced,
                'kind': info.kind, 'verbs': sorted(info.verbs),
                'shortNames': sorted(info.shortnames), 'categories': sorted(info.categories)})
            for sub in sorted(info.subresources):
                kind, sub_group, sub_version, verbs = SUBRESOURCES[sub]
                entry = {'name': f'{res.plural}/{sub}', 'singularName': '',
                         'namespaced': info.namespaced, 'kind': kind or info.kind, 'verbs': list(verbs)}
                if sub_group:
                    entry |= {'group': sub_group, 'version': sub_version}
                resources.append(entry)
        return {'apiVersion': 'v1', 'kind': 'APIResourceList',
                'groupVersion': f'{group}/{version}' if group else version, 'resources': resources}

    def _serve_openapi(self, accept: str) -> aiohttp.web.Response:
        """OpenAPI v2, only as far as kubectl before 1.26 reads it: which kinds take `dryRun`
        on PATCH (it refuses --dry-run=server otherwise). Protobuf (gnostic's OpenAPIv2
        Document), as those clients ask, or JSON."""
        paths = []
        for res in sorted(self.resources, key=lambda r: (r.group or '', r.plural or '')):
            info = self.resources[res]
            if 'patch' not in info.verbs or res.group == 'metrics.k8s.io':
                continue
            prefix = f'/apis/{res.group}/{res.version}' if res.group else f'/api/{res.version}'
            scope = '/namespaces/{namespace}' if info.namespaced else ''
            paths.append((f'{prefix}{scope}/{res.plural}/{{name}}',
                          {'group': res.group or '', 'kind': info.kind or '', 'version': res.version or ''}))
        if OPENAPI_PROTOBUF in accept:
            # Asked for by its own media type; answered as octet-stream, as the API server does
            # (clients cannot parse the "@" of the other as a media type).
            return aiohttp.web.Response(body=_openapi_protobuf(paths),
                                        content_type='application/octet-stream')
        return aiohttp.web.json_response({
            'swagger': '2.0', 'info': {'title': 'Kubernetes', 'version': 'v1.26.4'},
            'paths': {path: {'patch': {
                'parameters': [{'in': 'query', 'name': 'dryRun', 'type': 'string', 'uniqueItems': True}],
                'x-kubernetes-group-version-kind': gvk}} for path, gvk in paths}})

    async def _stored(self, request: kmock.Request) -> dict[str, Any]:
        """A copy of the object a request names, or the API's 404."""
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                raise self._not_found(request, kmock.KubernetesObjectNotFoundError())
            return copy.deepcopy(self.objects[key].raw)

    async def _dry_run(self, request: kmock.Request) -> dict[str, Any]:
        """`?dryRun=All` (kubectl --dry-run=server): the object as the write would leave it,
        and nothing stored."""
        method = request.method.value
        if method == 'POST':
            created = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
            created.setdefault('metadata', {}).setdefault('namespace', request.namespace)
            created['metadata'].setdefault('creationTimestamp', _now())
            return created
        current = await self._stored(request)
        if method == 'DELETE':
            return current
        if method == 'PUT':
            if not isinstance(request.data, dict):
                raise _bad_request('the body of a PUT must be an object')
            return request.data
        if isinstance(request.data, list):  # a JSON patch (kubectl rollout undo)
            return _json_patch(current, request.data)
        if isinstance(request.data, dict):  # merge and strategic merge patches alike
            merged: dict[str, Any] = _merge_patch(current, request.data)
            return merged
        raise _bad_request('the body of a PATCH must be a JSON object or a JSON patch')

    async def _serve_scale(self, request: kmock.Request) -> dict[str, Any]:
        """A Deployment's or ReplicaSet's autoscaling/v1 Scale: read, patched or replaced
        (kubectl scale). Only spec.replicas changes: no controller here starts or stops pods."""
        if request.method.value not in {'GET', 'PATCH', 'PUT'}:
            raise kmock.KubernetesError(status=405, reason='MethodNotAllowed',
                                        message=f'{request.method.value} is not allowed on scale',
                                        details={})
        target = await self._stored(request)
        replicas = int((target.get('spec') or {}).get('replicas', 1))
        if request.method.value != 'GET':
            scale = _scale(target, replicas)
            changed = (_json_patch(scale, request.data) if isinstance(request.data, list)
                       else request.data if request.method.value == 'PUT'
                       else _merge_patch(scale, request.data or {}))
            try:
                replicas = int(changed['spec']['replicas'])
            except (KeyError, TypeError, ValueError):
                raise _bad_request('spec.replicas must be an integer') from None
            if replicas < 0:
                raise _bad_request(f'spec.replicas: Invalid value: {replicas}: must be >= 0')
            if not _dry_run_asked(request):
                async with self._lock:
                    obj = self.objects[request.resource, request.namespace, request.name]
                    obj['spec'] = {**obj.raw['spec'], 'replicas': replicas}
                    meta = obj.raw['metadata']
                    obj['metadata'] = {**meta, 'resourceVersion': self._next_rv(),
                                       'generation': int(meta.get('generation', 1)) + 1}
                    target = obj.raw
        return _scale(target, replicas)

    # --- explicit reactions ---

    async def _serve_selected_list(self, request: kmock.Request) -> dict[str, Any]:
        # The emulator's list ignores labelSelector/fieldSelector: filter its result here.
        payload = await self._serve_list(request)
        items = payload['items']
        if expr := request.params.get('labelSelector'):
            labels_ok = _label_matcher(expr)
            items = [i for i in items if labels_ok(i.get('metadata', {}).get('labels') or {})]
        if expr := request.params.get('fieldSelector'):
            fields_ok = _field_matcher(expr)
            items = [i for i in items if fields_ok(i)]
        assert request.resource is not None and request.resource.plural is not None
        if _wants_table(request):
            return _table(request, items, str(self._rv))
        api_version, kind = LIST_KINDS.get((request.resource.group or '', request.resource.plural), (
            '/'.join(p for p in (request.resource.group, request.resource.version) if p), 'List'))
        return {'apiVersion': api_version, 'kind': kind,
                'metadata': {'resourceVersion': str(self._rv)}, 'items': items}

    async def _serve_table_fetch(self, request: kmock.Request) -> dict[str, Any]:
        return _table(request, [await self._stored(request)], str(self._rv))

    async def _serve_namespace(self, request: kmock.Request) -> dict[str, Any]:
        # kmock parses /api/v1/namespaces/NAME as "namespace NAME, no resource": look it up here.
        name = request.url.path.rstrip('/').rsplit('/', 1)[-1]
        async with self._lock:
            key = (NAMESPACES, None, name)
            if key in self.objects and not self.objects[key].deleted:
                return self.objects[key].raw
        raise kmock.KubernetesNotFoundError(
            reason='NotFound', message=f'namespaces "{name}" not found',
            details={'name': name, 'kind': 'namespaces'})

    async def _serve_log(self, request: kmock.Request) -> bytes:
        assert request.name is not None
        async with self._lock:
            key = (PODS, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise self._not_found(request, kmock.KubernetesObjectNotFoundError())
            pod = self.objects[key].raw
        service = (pod['metadata'].get('labels') or {}).get('app', '')
        params = request.params
        container = params.get('container')
        if container and container != service:
            raise _bad_request(f'container {container} is not valid for pod {request.name}')
        until: float | None = None
        if params.get('previous', '').lower() == 'true':
            # The container's previous run, if it had one (a crash loop's): the lines written
            # up to when it ended. Without one, a real cluster answers this same 400.
            ended = _previous_run_ended(pod, service)
            if ended is None:
                raise _bad_request(f'previous terminated container "{service}" in pod '
                                   f'"{request.name}" not found')
            until = ended
        try:
            tail = int(params['tailLines']) if 'tailLines' in params else None
            since = int(params['sinceSeconds']) if 'sinceSeconds' in params else None
            limit = int(params['limitBytes']) if 'limitBytes' in params else None
        except ValueError:
            raise _bad_request('tailLines, sinceSeconds and limitBytes must be integers') from None
        path = self.log_dir / f'{service}.log'
        stamped = params.get('timestamps', '').lower() == 'true'
        return await asyncio.to_thread(_read_log, path, tail, since, limit, stamped, until)


_TS_RE = re.compile(r'^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)')


def _line_time(line: str) -> float | None:
    m = _TS_RE.match(line)
    if not m:
        return None
    text = m[1].replace(',', '.').replace(' ', 'T').replace('Z', '+00:00')
    try:
        ts = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.astimezone()  # naive stamps in service logs are local time
    return ts.timestamp()


def _rfc3339(ts: float) -> str:
    """As the kubelet stamps a line for `kubectl logs --timestamps` (RFC 3339, nanoseconds)."""
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.strftime('%Y-%m-%dT%H:%M:%S.') + f'{moment.microsecond:06d}000Z'


def _read_log(path: pathlib.Path, tail: int | None, since: int | None, limit: int | None,
              timestamps: bool = False, until: float | None = None) -> bytes:
    """The file's text, filtered like `kubectl logs --since/--tail/--limit-bytes`, and with
    `--timestamps` each line prefixed by its time (the line's own leading timestamp; an
    untimed line takes the previous line's, else the file's modification time). `until`:
    only the lines written by then (a previous container's log ends when it did)."""
    try:
        mtime = path.stat().st_mtime
        if since is not None and mtime < time.time() - since:
            return b''  # nothing written within the window
        with path.open('r', encoding='utf-8', errors='replace') as f:
            timed: list[tuple[float | None, str]] = []
            last: float | None = None
            for line in f:
                ts = _line_time(line)
                last = last if ts is None else ts
                timed.append((last, line))
        if since is not None:
            # Lines with a leading timestamp decide; untimed lines follow the previous one.
            cutoff = time.time() - since
            timed = [(ts, line) for ts, line in timed if ts is None or ts >= cutoff]
        if until is not None:
            timed = [(ts, line) for ts, line in timed if ts is None or ts <= until]
        selected = collections.deque(timed, maxlen=tail) if tail is not None else timed
        if timestamps:
            text = ''.join(f'{_rfc3339(mtime if ts is None else ts)} {line}' for ts, line in selected)
        else:
            text = ''.join(line for _, line in selected)
        data = text.encode('utf-8') if tail != 0 else b''
    except FileNotFoundError:
        return b''
    return data[:limit] if limit is not None else data


def _timestamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace('Z', '+00:00')).timestamp()


def _previous_run_ended(pod: Mapping[str, Any], container: str) -> float | None:
    """When the container's previous run ended (its lastState), if it had one."""
    for status in (pod.get('status') or {}).get('containerStatuses') or []:
        if status.get('name') == container:
            ended = ((status.get('lastState') or {}).get('terminated') or {}).get('finishedAt')
            return _timestamp(ended) if ended else None
    return None


# --- OpenAPI v2 as protobuf --------------------------------------------------------------------

OPENAPI_PROTOBUF = 'application/com.github.proto-openapi.spec.v2@v1.0+protobuf'


def _pb(field: int, value: bytes | str) -> bytes:
    """One length-delimited protobuf field (every field this document needs is one)."""
    data = value.encode() if isinstance(value, str) else value

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    return varint(field << 3 | 2) + varint(len(data)) + data


def _openapi_protobuf(paths: list[tuple[str, dict[str, str]]]) -> bytes:
    """gnostic's openapi_v2.Document (field numbers from its OpenAPIv2.proto): per path a
    PATCH operation with the `dryRun` query parameter and its x-kubernetes-group-version-kind."""
    dry_run = _pb(8, _pb(1, _pb(2, _pb(3, _pb(2, 'query') + _pb(4, 'dryRun') + _pb(6, 'string')))))
    items = b''
    for path, gvk in paths:
        gvk_yaml = f'group: "{gvk["group"]}"\nkind: {gvk["kind"]}\nversion: {gvk["version"]}\n'
        operation = dry_run + _pb(13, _pb(1, 'x-kubernetes-group-version-kind') + _pb(2, _pb(2, gvk_yaml)))
        items += _pb(2, _pb(1, path) + _pb(2, _pb(8, operation)))
    return _pb(1, '2.0') + _pb(2, _pb(1, 'Kubernetes') + _pb(2, 'v1.26.4')) + _pb(8, items)


# --- writes ------------------------------------------------------------------------------------

def _dry_run_asked(request: kmock.Request) -> bool:
    """`dryRun=All`: a query parameter of a write, or for a DELETE in its DeleteOptions body."""
    if request.method.value not in WRITES:
        return False
    body = request.data if isinstance(request.data, Mapping) else {}
    return bool(request.params.get('dryRun') or (request.method.value == 'DELETE' and body.get('dryRun')))


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch; a strategic merge patch as kubectl sends one (maps only) too."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged


def _json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902 add, replace, remove and test (what kubectl sends, e.g. rollout undo)."""
    doc: Any = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, Mapping) or op.get('op') not in {'add', 'replace', 'remove', 'test'}:
            raise _bad_request(f'unsupported JSON patch operation: {op!r}')
        parts = [p.replace('~1', '/').replace('~0', '~') for p in str(op.get('path', '')).split('/')[1:]]
        if not parts:
            if op['op'] in {'add', 'replace'}:
                doc = copy.deepcopy(op.get('value'))
            continue
        parent: Any = doc
        try:
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            last = parts[-1]
            if op['op'] == 'test':
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
                if current != op.get('value'):
                    raise kmock.KubernetesError(status=422, reason='Invalid',
                                                message=f'test failed at {op["path"]}', details={})
            elif isinstance(parent, list):
                index = len(parent) if last == '-' else int(last)
                if op['op'] == 'add':
                    parent.insert(index, copy.deepcopy(op.get('value')))
                elif op['op'] == 'replace':
                    parent[index] = copy.deepcopy(op.get('value'))
                else:
                    del parent[index]
            elif op['op'] == 'remove':
                del parent[last]
            else:
                if op['op'] == 'replace' and last not in parent:
                    raise KeyError(last)
                parent[last] = copy.deepcopy(op.get('value'))
        except (KeyError, IndexError, ValueError, TypeError):
            raise kmock.KubernetesError(status=422, reason='Invalid',
                                        message=f'the JSON patch cannot apply at {op.get("path")}',
                                        details={}) from None
    patched: dict[str, Any] = doc
    return patched


def _scale(target: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    meta = target.get('metadata') or {}
    labels = ((target.get('spec') or {}).get('selector') or {}).get('matchLabels') or {}
    return {
        'apiVersion': 'autoscaling/v1', 'kind': 'Scale',
        'metadata': {k: meta[k] for k in ('name', 'namespace', 'uid', 'resourceVersion',
                                          'creationTimestamp') if k in meta},
        'spec': {'replicas': replicas},
        'status': {'replicas': int((target.get('status') or {}).get('replicas', 0)),
                   'selector': ','.join(f'{k}={v}' for k, v in sorted(labels.items()))},
    }


# --- tables (what `kubectl get` prints) -----------------------------------------------------------

def _wants_table(request: kmock.Request) -> bool:
    accept = next((v for k, v in request.headers.items() if k.lower() == 'accept'), '')
    return 'as=Table' in accept


def _age(since: str | None, now: float | None = None) -> str:
    """An age as kubectl prints it (apimachinery's HumanDuration): 45s, 5m3s, 3h, 2d4h."""
    if not since:
        return '<unknown>'
    seconds = int((time.time() if now is None else now) - _timestamp(since))
    if seconds < -1:
        return '<invalid>'
    seconds = max(seconds, 0)
    minutes, hours = seconds // 60, seconds // 3600
    days, years = hours // 24, hours // (24 * 365)
    if seconds < 120:
        return f'{seconds}s'
    if minutes < 10:
        return f'{minutes}m{seconds % 60}s' if seconds % 60 else f'{minutes}m'
    if minutes < 180:
        return f'{minutes}m'
    if hours < 8:
        return f'{hours}h{minutes % 60}m' if minutes % 60 else f'{hours}h'
    if hours < 48:
        return f'{hours}h'
    if hours < 192:
        return f'{days}d{hours % 24}h' if hours % 24 else f'{days}d'
    if hours < 24 * 365 * 2:
        return f'{days}d'
    if hours < 24 * 365 * 8:
        return f'{years}y{days % 365}d' if days % 365 else f'{years}y'
    return f'{years}y'


def _pod_cells(pod: Mapping[str, Any]) -> list[Any]:
    """kubectl's pod columns: READY, STATUS (a waiting container's reason first), RESTARTS
    (with how long ago the last one was), and for -o wide IP and NODE."""
    status, spec = pod.get('status') or {}, pod.get('spec') or {}
    reason = status.get('reason') or status.get('phase') or 'Unknown'
    ready = restarts = 0
    last_restart: str | None = None
    for container in status.get('containerStatuses') or []:
        restarts += int(container.get('restartCount') or 0)
        ended = ((container.get('lastState') or {}).get('terminated') or {}).get('finishedAt')
        if ended and (last_restart is None or ended > last_restart):
            last_restart = ended
        state = container.get('state') or {}
        if (state.get('waiting') or {}).get('reason'):
            reason = state['waiting']['reason']
        elif 'terminated' in state:
            ended_as = state['terminated'] or {}
            reason = ended_as.get('reason') or f"ExitCode:{ended_as.get('exitCode', 0)}"
        elif container.get('ready') and 'running' in state:
            ready += 1
    if (pod.get('metadata') or {}).get('deletionTimestamp'):
        reason = 'Terminating'
    restarted = f'{restarts} ({_age(last_restart)} ago)' if restarts and last_restart else str(restarts)
    return [f"{ready}/{len(spec.get('containers') or [])}", reason, restarted,
            _age((pod.get('metadata') or {}).get('creationTimestamp')),
            status.get('podIP') or '<none>', spec.get('nodeName') or '<none>', '<none>', '<none>']


def _workload_wide(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get('spec') or {}
    containers = ((spec.get('template') or {}).get('spec') or {}).get('containers') or []
    labels = (spec.get('selector') or {}).get('matchLabels') or {}
    return [','.join(c.get('name', '') for c in containers),
            ','.join(c.get('image', '') for c in containers),
            ','.join(f'{k}={v}' for k, v in sorted(labels.items())) or '<none>']


def _deployment_cells(obj: Mapping[str, Any]) -> list[Any]:
    spec, status = obj.get('spec') or {}, obj.get('status') or {}
    return [f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get('updatedReplicas', 0), status.get('availableReplicas', 0),
            _age((obj.get('metadata') or {}).get('creationTimestamp')), *_workload_wide(obj)]


def _replicaset_cells(obj: Mapping[str, Any]) -> list[Any]:
    spec, status = obj.get('spec') or {}, obj.get('status') or {}
    return [spec.get('replicas', 1), status.get('replicas', 0), status.get('readyReplicas', 0),
            _age((obj.get('metadata') or {}).get('creationTimestamp')), *_workload_wide(obj)]


def _event_cells(event: Mapping[str, Any]) -> list[Any]:
    involved = event.get('involvedObject') or {}
    source = event.get('source') or {}
    last = event.get('lastTimestamp') or event.get('eventTime') or event.get('firstTimestamp')
    return [_age(last), event.get('type', ''), event.get('reason', ''),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
            involved.get('fieldPath', ''), ', '.join(v for v in (source.get('component'), source.get('host')) if v),
            event.get('message', ''), _age(event.get('firstTimestamp')), event.get('count', 1),
            (event.get('metadata') or {}).get('name', '')]


def _name_first(cells: Callable[[Mapping[str, Any]], list[Any]]) -> Callable[[Mapping[str, Any]], list[Any]]:
    return lambda obj: [(obj.get('metadata') or {}).get('name', ''), *cells(obj)]


# Per (group, plural), as the API server renders them: the columns (name, type, priority:
# 1 only in -o wide) and an object's cells. Any other resource gets NAME and AGE.
_NAME = ('Name', 'string', 0)
_WIDE = [('Containers', 'string', 1), ('Images', 'string', 1), ('Selector', 'string', 1)]
TABLES: dict[tuple[str, str], tuple[list[tuple[str, str, int]],
                                    Callable[[Mapping[str, Any]], list[Any]]]] = {
    ('', 'pods'): ([_NAME, ('Ready', 'string', 0), ('Status', 'string', 0),
                    ('Restarts', 'string', 0), ('Age', 'string', 0), ('IP', 'string', 1),
                    ('Node', 'string', 1), ('Nominated Node', 'string', 1),
                    ('Readiness Gates', 'string', 1)], _name_first(_pod_cells)),
    ('apps', 'deployments'): ([_NAME, ('Ready', 'string', 0), ('Up-to-date', 'integer', 0),
                               ('Available', 'integer', 0), ('Age', 'string', 0), *_WIDE],
                              _name_first(_deployment_cells)),
    ('apps', 'replicasets'): ([_NAME, ('Desired', 'integer', 0), ('Current', 'integer', 0),
                               ('Ready', 'integer', 0), ('Age', 'string', 0), *_WIDE],
                              _name_first(_replicaset_cells)),
    ('', 'events'): ([('Last Seen', 'string', 0), ('Type', 'string', 0), ('Reason', 'string', 0),
                      ('Object', 'string', 0), ('Subobject', 'string', 1), ('Source', 'string', 1),
                      ('Message', 'string', 0), ('First Seen', 'string', 1), ('Count', 'integer', 1),
                      ('Name', 'string', 1)], _event_cells),
}


def _table(request: kmock.Request, items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table, as the API server renders one for `kubectl get`; each row
    carries the object's metadata (or the object, or nothing: `includeObject`)."""
    assert request.resource is not None
    columns, cells = TABLES.get((request.resource.group or '', request.resource.plural or ''), (
        [_NAME, ('Age', 'string', 0)],
        _name_first(lambda o: [_age((o.get('metadata') or {}).get('creationTimestamp'))])))
    include = request.params.get('includeObject', 'Metadata')
    rows = []
    for item in items:
        row: dict[str, Any] = {'cells': cells(item)}
        if include == 'Object':
            row['object'] = item
        elif include != 'None':
            row['object'] = {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1',
                             'metadata': item.get('metadata') or {}}
        rows.append(row)
    return {
        'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': rv},
        'columnDefinitions': [
            {'name': name, 'type': kind, 'format': 'name' if name == 'Name' else '',
             'priority': priority, 'description': name} for name, kind, priority in columns],
        'rows': rows,
    }


# --- CLI ---------------------------------------------------------------------------------------

def _parse_service(spec: str) -> tuple[str, tuple[str, int]]:
    name, sep, addr = spec.partition('=')
    host, _, port = addr.rpartition(':')
    if not sep or not SERVICE_NAME_RE.match(name) or not port.isdigit():
        raise argparse.ArgumentTypeError(f'expected NAME=HOST:PORT, got {spec!r}')
    return name, (host or '127.0.0.1', int(port))


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    handler = UniBazzarKube(services=dict(args.service), log_dir=pathlib.Path(args.log_dir),
                            namespace_name=args.namespace)
    await handler.refresh()  # real readiness before the first answer (≤ PROBE_TIMEOUT)
    stack = contextlib.AsyncExitStack()
    try:
        await stack.enter_async_context(handler)
        try:
            server = await stack.enter_async_context(kmock.Server(handler, host=args.host, port=args.port))
        except OSError as exc:
            print(f'kube_api: cannot listen on {args.host}:{args.port}: {exc.strerror}', file=sys.stderr)
            return 1
        print(f'kube_api: serving http://{server.host}:{server.port} namespace={args.namespace} '
              f'services={",".join(handler.services) or "-"} log_dir={args.log_dir}', flush=True)
        await stop.wait()
    finally:
        # Bounded: an open watch stream (kmock ignores timeoutSeconds) must not block the exit;
        # the listening socket is released when the process ends in any case.
        try:
            await asyncio.wait_for(stack.aclose(), timeout=SHUTDOWN_TIMEOUT)
        except TimeoutError:
            print('kube_api: shutdown timed out, exiting anyway', file=sys.stderr)
    print('kube_api: stopped', flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='unibazzar_sandbox.kube_api',
                                     description='Kubernetes API emulator for the UniBazzar sandbox.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=25443)
    parser.add_argument('--log-dir', required=True, help='holds <service>.log files served as pod logs')
    parser.add_argument('--namespace', default=NAMESPACE)
    parser.add_argument('--service', action='append', type=_parse_service, default=[],
                        metavar='NAME=HOST:PORT', help='repeatable; one Deployment per service')
    args = parser.parse_args(argv)
    return asyncio.run(_serve(args))


if __name__ == '__main__':
    sys.exit(main())
