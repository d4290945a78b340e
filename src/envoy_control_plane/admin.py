"""Admin HTTP: health, readiness, metrics and debug dumps. It reads the control plane's state and writes nothing."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence

from aiohttp import web
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers the types json_format must resolve)
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics
from .sources.status import SourceStatus
from .status.conditions import ListenerStatus
from .text import clip, rfc3339
from .xds.cache import SnapshotCache
from .xds.resource import Resource, version_of
from .xds.stream import MAX_NODE_ID
from .xds.streams import StreamRegistry
from .xds.types import SECRET, short

log = logging.getLogger(__name__)


def make_app(
    cache: SnapshotCache,
    streams: StreamRegistry,
    metrics: Metrics,
    sources: Callable[[], Sequence[SourceStatus]],
    listeners: Callable[[], Sequence[ListenerStatus]] = list,
    serving: Callable[[], bool] = lambda: True,
    debug_remote: bool = False,
) -> web.Application:
    """`serving()` says whether xDS is served yet: that is readiness (a source that has not loaded does not make a
    serving control plane unready; /debug/sources and the source metrics show it). `/debug/*` answers only loopback
    clients unless `debug_remote`."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        waiting = [s.name for s in sources() if not s.synced]
        if not serving():
            return web.Response(status=503, text=f"waiting for sources: {', '.join(waiting)}\n")
        if waiting:
            return web.Response(text=f"ready; not loaded yet: {', '.join(waiting)}\n")
        return web.Response(text="ready\n")

    async def metrics_page(_: web.Request) -> web.Response:
        for status in sources():
            metrics.source_up.labels(status.name).set(int(status.up))
            metrics.source_stale.labels(status.name).set(int(status.stale))
            metrics.source_synced.labels(status.name).set(int(status.synced))
            metrics.source_problems.labels(status.name).set(len(status.all_problems()))
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def debug_nodes(_: web.Request) -> web.Response:
        nodes = {  # node ids are clients' choice: escaped (JSON would allow them, terminals and log shippers not)
            clip(node, MAX_NODE_ID): {"streams": [s.to_json() for s in infos]}
            for node, infos in sorted(streams.by_node().items())
        }
        return web.json_response(nodes)

    async def debug_snapshot(request: web.Request) -> web.Response:
        node = request.match_info["node"]
        if node not in cache.nodes():
            return web.json_response({"error": f"no snapshot for node {node!r}"}, status=404)
        snapshot = cache.get(node)
        body = {
            short(t): {
                "version": snapshot.version(t),
                "resources": [_shown(resource) for _, resource in sorted(snapshot.of_type(t).items())],
            }
            for t in sorted(snapshot.resources)
        }
        return web.json_response(body)

    async def debug_sources(_: web.Request) -> web.Response:
        return web.json_response([s.to_json() for s in sources()])

    async def debug_listeners(_: web.Request) -> web.Response:
        return web.json_response([s.to_json() for s in listeners()])

    async def debug_syncz(_: web.Request) -> web.Response:
        return web.json_response(syncz(cache, streams))

    async def debug_index(_: web.Request) -> web.Response:
        return web.json_response(DEBUG_PAGES)

    @web.middleware
    async def debug_from_loopback(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path.startswith("/debug") and not debug_remote and not _is_loopback(request.remote):
            return web.json_response({"error": "debug endpoints answer loopback clients only (admin.debug_remote)"},
                                     status=403)  # fmt: skip
        return await handler(request)

    app = web.Application(middlewares=[debug_from_loopback])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/debug/nodes", debug_nodes)
    app.router.add_get("/debug/snapshot/{node}", debug_snapshot)
    app.router.add_get("/debug/sources", debug_sources)
    app.router.add_get("/debug/listeners", debug_listeners)
    app.router.add_get("/debug/syncz", debug_syncz)
    app.router.add_get("/debug", debug_index)
    app.router.add_get("/debug/", debug_index)
    return app


DEBUG_PAGES = {
    "/debug/nodes": "each connected node, its streams, and per type what was sent, ACKed and NACKed",
    "/debug/syncz": "one entry per connected Envoy stream: per type the version sent, ACKed and current, in sync or not",
    "/debug/snapshot/<node-id>": "the resources a node gets, as JSON (private keys redacted)",
    "/debug/sources": "each source: loaded, up, stale, last error, invalid objects",
    "/debug/listeners": "every listener with its Accepted and Programmed conditions and endpoints",
}


def syncz(cache: SnapshotCache, streams: StreamRegistry) -> list[dict[str, object]]:
    """Like Istio's syncz: for each connected stream and type, what was sent, what the Envoy ACKed, and what it would
    get now. A type is in sync when the ACKed version is the version of what the node's snapshot holds for the
    names it subscribed (every resource, for a wildcard)."""
    entries: list[dict[str, object]] = []
    for node, infos in sorted(streams.by_node().items()):
        snapshot = cache.get(node)
        for info in infos:
            types = {}
            for type_url, status in sorted(info.types.items()):
                current = snapshot.of_type(type_url)
                wanted = current.values() if status.wildcard else [current[n] for n in status.names if n in current]
                want = version_of(wanted)
                types[short(type_url)] = {
                    "sent": status.sent_version,
                    "acked": status.acked_version,
                    "current": want,
                    "in_sync": status.acked_version == want,
                    "nacks": status.nacks,
                }
            entries.append({
                "node": node, "stream": info.id, "mode": info.mode, "peer": info.peer,
                "connected": rfc3339(info.opened), "in_sync": all(t["in_sync"] for t in types.values()),
                "types": types,
            })  # fmt: skip
    return entries


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


REDACTED = "[redacted]"


def _shown(resource: Resource) -> dict[str, object]:
    """A resource as /debug/snapshot shows it: private keys of SDS secrets replaced by "[redacted]"."""
    if resource.type_url != SECRET:
        return json_format.MessageToDict(resource.to_any())
    secret = secret_pb2.Secret.FromString(resource.body)
    if secret.HasField("tls_certificate"):
        secret.tls_certificate.private_key.Clear()
        secret.tls_certificate.private_key.inline_string = REDACTED
    shown = Any()
    shown.Pack(secret)
    return json_format.MessageToDict(shown)


async def start_admin(app: web.Application, address: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"admin port {address}:{port}: {e.strerror or e} (another instance?)") from None
    bound = runner.addresses[0][1]
    log.info("admin HTTP listening on %s:%d", address, bound)
    return runner, bound
