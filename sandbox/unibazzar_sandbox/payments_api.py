"""Loopback Stripe emulator for the UniBazzar sandbox (built on localstripe 1.15).

Run:  python -m unibazzar_sandbox.payments_api --host 127.0.0.1 --port 25420 --data-dir DIR

Serves localstripe's own aiohttp app (``localstripe.server.app``) with these differences from
its CLI (``python -m localstripe``):
  * binds only ``--host`` (the CLI binds ``::`` i.e. every interface);
  * always starts from scratch; the store snapshot goes to ``DIR/localstripe.pickle``, written
    once after each mutating request (the CLI re-pickles the whole store to the hard-coded
    ``/tmp/localstripe.pickle`` on *every* object insert/delete and reloads it at start-up);
  * adds ``GET /_config/webhooks`` and ``GET /_config/webhooks/{id}``: localstripe can register
    webhooks but has no way to list them, and a health check needs to see that ours is there;
  * exits cleanly (port released) on SIGTERM/SIGINT;
  * with ``--faults-dir``, the webhook ids listed in ``FAULTS/payments.webhooks-disabled``
    (one per line) are disabled, as Stripe disables an endpoint after failed deliveries:
    their status says so and no event is delivered to them.
Webhook delivery results are only logged (localstripe keeps no record): see stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import pathlib
import pickle
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from localstripe import __version__ as LOCALSTRIPE_VERSION
from localstripe import resources, server, webhooks

SNAPSHOT_NAME = 'localstripe.pickle'
SHUTDOWN_TIMEOUT = 3.0  # seconds; localstripe has no long-lived connections to wait for

log = logging.getLogger('unibazzar_sandbox.payments_api')


class Snapshot:
    """Replaces localstripe's persistence: one atomic write per mutating request, into DIR."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.path = data_dir / SNAPSHOT_NAME
        self.dirty = False

    def install(self) -> None:
        snapshot = self

        def mark_dirty(store: resources.Store) -> None:
            # Called by localstripe on every store insert/delete: only remember that a write is due
            # (re-pickling the whole store per object made requests O(store size) several times).
            snapshot.dirty = True

        def refuse_load(store: resources.Store) -> None:
            # The sandbox always starts from scratch; never read /tmp/localstripe.pickle.
            return None

        # Patched on the class because the store is pickled: an instance attribute would be too.
        resources.Store.dump_to_disk = mark_dirty  # type: ignore[method-assign]
        resources.Store.try_load_from_disk = refuse_load  # type: ignore[method-assign]
        # A stale snapshot from an earlier run would misdescribe this one.
        self.path.unlink(missing_ok=True)

    def write(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        # Temp file + rename so a reader never sees a half-written pickle.
        fd, tmp = tempfile.mkstemp(prefix='.snapshot-', dir=self.path.parent)
        try:
            with os.fdopen(fd, 'wb') as f:
                pickle.dump(dict(resources.store), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise


def _save_middleware(snapshot: Snapshot) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def save_snapshot(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.method in ('PUT', 'POST', 'DELETE'):
                # Unconditional: DELETE /_config/data empties the store via dict.clear(), which
                # bypasses the insert/delete hooks that set the dirty flag.
                snapshot.dirty = True
                try:
                    snapshot.write()
                except (OSError, pickle.PicklingError) as exc:
                    # The snapshot is a debugging aid; never fail the API call because of it.
                    log.warning('snapshot write failed: %s', exc)
    return save_snapshot


DISABLED_WEBHOOKS = 'payments.webhooks-disabled'
faults_dir: pathlib.Path | None = None  # --faults-dir


def disabled_webhooks() -> set[str]:
    """Webhook ids disabled by the game-day fault file (localstripe has no disabled state)."""
    if faults_dir is None:
        return set()
    try:
        return set((faults_dir / DISABLED_WEBHOOKS).read_text().split())
    except OSError:
        return set()


async def _send_webhook(event: Any) -> None:
    """localstripe's webhooks._send_webhook (1.15), skipping disabled endpoints."""
    payload = json.dumps(event._export(), indent=2, sort_keys=True).encode('utf-8')
    signed_payload = b'%d.%s' % (event.created, payload)
    await asyncio.sleep(1)
    logger = logging.getLogger('aiohttp.access')
    disabled = disabled_webhooks()
    for webhook_id, webhook in list(webhooks._webhooks.items()):
        if webhook.events is not None and event.type not in webhook.events:
            continue
        if webhook_id in disabled:
            logger.info('webhook "%s" not delivered to %s: endpoint disabled', event.type,
                        webhook_id)
            continue
        signature = hmac.new(webhook.secret.encode('utf-8'), signed_payload,
                             hashlib.sha256).hexdigest()
        headers = {'Content-Type': 'application/json; charset=utf-8',
                   'Stripe-Signature': f't={event.created:d},v1={signature}'}
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(webhook.url, data=payload, headers=headers) as r:
                    if 200 <= r.status < 300:
                        logger.info('webhook "%s" successfully delivered', event.type)
                    else:
                        logger.info('webhook "%s" failed with response code %d', event.type,
                                    r.status)
            except aiohttp.ClientError as exc:
                logger.info('webhook "%s" failed: %s', event.type, exc)


def _webhook_view(webhook_id: str, hook: webhooks.Webhook) -> dict[str, Any]:
    # Shaped like Stripe's webhook_endpoint object.
    return {
        'id': webhook_id,
        'object': 'webhook_endpoint',
        'url': hook.url,
        'enabled_events': list(hook.events) if hook.events is not None else ['*'],
        'status': 'disabled' if webhook_id in disabled_webhooks() else 'enabled',
        # Lets a check confirm the secret matches its own without the secret leaving the process.
        'secret_sha256': hashlib.sha256(hook.secret.encode('utf-8')).hexdigest(),
    }


async def list_webhooks(request: web.Request) -> web.Response:
    # webhooks._webhooks is localstripe's only (private) registry; read-only use here.
    data = [_webhook_view(i, h) for i, h in sorted(webhooks._webhooks.items())]
    return server.json_response({'object': 'list', 'url': '/_config/webhooks',
                                 'has_more': False, 'data': data})


async def get_webhook(request: web.Request) -> web.Response:
    webhook_id = request.match_info['id']
    hook = webhooks._webhooks.get(webhook_id)
    if hook is None:
        return server.json_response(
            {'error': {'type': 'invalid_request_error', 'message': 'Not Found'}}, status=404)
    return server.json_response(_webhook_view(webhook_id, hook))


async def list_webhook_endpoints(request: web.Request) -> web.Response:
    # Stripe's own route (GET /v1/webhook_endpoints, behind the API key like every /v1 route),
    # so the health checks call the provider exactly as they would in production.
    data = [{k: v for k, v in _webhook_view(i, h).items() if k != 'secret_sha256'}
            for i, h in sorted(webhooks._webhooks.items())]
    return server.json_response({'object': 'list', 'url': '/v1/webhook_endpoints',
                                 'has_more': False, 'data': data})


def build_app(snapshot: Snapshot) -> web.Application:
    app = server.app  # localstripe builds its app (all /v1 routes) at import time
    # Looked up by name at each delivery (webhooks.schedule_webhook), so replaced here.
    webhooks._send_webhook = _send_webhook
    # Swap localstripe's "pickle to /tmp after each write" middleware for ours (same position,
    # so errors/auth still run first). The list is mutable until the app is frozen at start.
    middlewares = app.middlewares
    middlewares[middlewares.index(server.save_store_middleware)] = _save_middleware(snapshot)
    app.router.add_get('/_config/webhooks', list_webhooks)
    app.router.add_get('/_config/webhooks/{id}', get_webhook)
    app.router.add_get('/v1/webhook_endpoints', list_webhook_endpoints)

    async def final_write(app: web.Application) -> None:
        snapshot.write()  # catch changes made by background tasks after the last request

    app.on_cleanup.append(final_write)
    return app


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    data_dir = pathlib.Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    snapshot = Snapshot(data_dir)
    snapshot.install()
    app = build_app(snapshot)

    # localstripe logs webhook delivery results on 'aiohttp.access' as well.
    access_log = logging.getLogger('aiohttp.access')
    runner = web.AppRunner(app, access_log=access_log, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=args.host, port=args.port)
        try:
            await site.start()
        except OSError as exc:
            print(f'payments_api: cannot listen on {args.host}:{args.port}: {exc.strerror}',
                  file=sys.stderr)
            return 1
        print(f'payments_api: localstripe {LOCALSTRIPE_VERSION} serving http://{args.host}:{args.port}'
              f' data_dir={data_dir}', flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()  # closes the listening socket and runs on_cleanup
    print('payments_api: stopped', flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='unibazzar_sandbox.payments_api',
                                     description='Stripe emulator (localstripe) for the UniBazzar sandbox.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=25420)
    parser.add_argument('--data-dir', required=True, help=f'receives {SNAPSHOT_NAME} (never read back)')
    parser.add_argument('--faults-dir', help=f'where {DISABLED_WEBHOOKS} may list disabled webhooks')
    args = parser.parse_args(argv)
    global faults_dir
    faults_dir = pathlib.Path(args.faults_dir) if args.faults_dir else None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    return asyncio.run(_serve(args))


if __name__ == '__main__':
    sys.exit(main())
