"""Loopback Kubernetes API emulator for the UniBazzar sandbox (built on kmock 0.8).

Run:  python -m unibazzar_sandbox.kube_api --host 127.0.0.1 --port 25443 --log-dir DIR \
          --service auth-service=127.0.0.1:28001 --service listing-service=127.0.0.1:28002 ...

Serves, for namespace ``unibazzar``: the Namespace, one Deployment + ReplicaSet + 2 Pods per
``--service``, and pod logs read from ``DIR/<service>.log``. Readiness is dynamic: before every
deployment/replicaset/pod request, each service's host:port is TCP-probed (0.3 s timeout).

Objects live in kmock's own object store (``KubernetesEmulator.objects``) and are served by its
fallback list/fetch machinery. Workarounds for kmock 0.8 rough edges (see the comments below):
  * sink-only reactions (``kmock[...] >> fn``) fire once and then get disabled, so the
    pre-request status refresh is done by overriding ``_handle`` (as the emulator itself does);
  * list requests ignore ``labelSelector``/``fieldSelector`` -> an explicit list reaction filters;
  * ``GET /api/v1/namespaces/NAME`` is mis-parsed (namespace=NAME, no plural) -> explicit route;
  * ``GET /api/v1/namespaces`` crashes kmock's path parser (500) -> raw pre-route for that path only;
  * ``.../pods/NAME/log`` would return the Pod JSON -> explicit text/plain route;
  * 404 bodies carry kmock-specific reasons and a traceback -> re-shaped into Kubernetes Status;
  * every request/error is kept forever (for test assertions), and each request is matched by
    re-scanning that whole history -> O(N) per request; finished requests are pruned after each one;
  * watches ignore timeoutSeconds and never end -> shutdown is bounded (2 s) instead of hanging.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
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
PROBE_TIMEOUT = 0.3  # seconds per TCP readiness probe
SHUTDOWN_TIMEOUT = 2.0  # seconds; only open watch streams can take this long

DEPLOYMENTS = kmock.resource('apps', 'v1', 'deployments')
REPLICASETS = kmock.resource('apps', 'v1', 'replicasets')
PODS = kmock.resource('', 'v1', 'pods')
NAMESPACES = kmock.resource('', 'v1', 'namespaces')
# metrics-server's PodMetrics: a fixed working set per container, patchable to inject pressure.
POD_METRICS = kmock.resource('metrics.k8s.io', 'v1beta1', 'pods')
POD_MEMORY = '200Mi'
POD_CPU = '50m'
DYNAMIC_PLURALS = {'deployments', 'replicasets', 'pods'}

# The kind of list objects, so clients that look at `kind` see real-looking lists.
LIST_KINDS: dict[str, tuple[str, str]] = {
    'deployments': ('apps/v1', 'DeploymentList'),
    'replicasets': ('apps/v1', 'ReplicaSetList'),
    'pods': ('v1', 'PodList'),
    'namespaces': ('v1', 'NamespaceList'),
}
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
        api_version, kind = LIST_KINDS.get(request.resource.plural, (
            '/'.join(p for p in (request.resource.group, request.resource.version) if p), 'List'))
        return {'apiVersion': api_version, 'kind': kind,
                'metadata': {'resourceVersion': str(self._rv)}, 'items': items}

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
        if params.get('previous', '').lower() == 'true':  # restartCount is 0: as a real cluster
            raise _bad_request(f'previous terminated container "{service}" in pod "{request.name}" not found')
        try:
            tail = int(params['tailLines']) if 'tailLines' in params else None
            since = int(params['sinceSeconds']) if 'sinceSeconds' in params else None
            limit = int(params['limitBytes']) if 'limitBytes' in params else None
        except ValueError:
            raise _bad_request('tailLines, sinceSeconds and limitBytes must be integers') from None
        path = self.log_dir / f'{service}.log'
        stamped = params.get('timestamps', '').lower() == 'true'
        return await asyncio.to_thread(_read_log, path, tail, since, limit, stamped)


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
              timestamps: bool = False) -> bytes:
    """The file's text, filtered like `kubectl logs --since/--tail/--limit-bytes`, and with
    `--timestamps` each line prefixed by its time (the line's own leading timestamp; an
    untimed line takes the previous line's, else the file's modification time)."""
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
        selected = collections.deque(timed, maxlen=tail) if tail is not None else timed
        if timestamps:
            text = ''.join(f'{_rfc3339(mtime if ts is None else ts)} {line}' for ts, line in selected)
        else:
            text = ''.join(line for _, line in selected)
        data = text.encode('utf-8') if tail != 0 else b''
    except FileNotFoundError:
        return b''
    return data[:limit] if limit is not None else data


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
