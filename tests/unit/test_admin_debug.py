"""The admin app's /debug pages: only loopback clients unless admin.debug_remote; /debug/syncz says who is behind."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

from envoy_control_plane.admin import make_app, syncz
from envoy_control_plane.metrics import Metrics
from envoy_control_plane.xds.cache import Snapshot, SnapshotCache
from envoy_control_plane.xds.resource import Resource, version_of
from envoy_control_plane.xds.streams import StreamRegistry, TypeStatus
from envoy_control_plane.xds.types import CLUSTER, ENDPOINT


def _app(debug_remote: bool) -> web.Application:
    return make_app(SnapshotCache(), StreamRegistry(), Metrics(), list, debug_remote=debug_remote)


async def _status(app: web.Application, path: str, peer: str) -> int:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (peer, 40000) if key == "peername" else default
    request = make_mocked_request("GET", path, app=app, transport=transport)
    match = await app.router.resolve(request)
    request._match_info = match
    [middleware] = app.middlewares
    response = await middleware(request, match.handler)
    return response.status


@pytest.mark.parametrize(
    ("path", "peer", "debug_remote", "status"),
    [
        ("/debug/nodes", "127.0.0.1", False, 200),
        ("/debug/nodes", "::1", False, 200),
        ("/debug/nodes", "10.1.2.3", False, 403),
        ("/debug/syncz", "192.168.0.7", False, 403),
        ("/debug", "10.1.2.3", False, 403),
        ("/debug/nodes", "10.1.2.3", True, 200),
        ("/metrics", "10.1.2.3", False, 200),
        ("/healthz", "10.1.2.3", False, 200),
        ("/readyz", "10.1.2.3", False, 200),
    ],
)
async def test_debug_pages_answer_loopback_only_unless_asked(path, peer, debug_remote, status) -> None:
    assert await _status(_app(debug_remote), path, peer) == status


def test_syncz_compares_acked_with_what_the_subscription_would_get() -> None:
    cache, streams = SnapshotCache(), StreamRegistry()
    a, b = Resource.of(ENDPOINT, "a", _cla("a")), Resource.of(ENDPOINT, "b", _cla("b"))
    cluster = Resource.of(CLUSTER, "c", _cla("c"))
    cache.set("n", Snapshot.build({ENDPOINT: [a, b], CLUSTER: [cluster]}))
    info = streams.open("sotw", "ipv4:127.0.0.1:1")
    info.node = "n"
    eds = info.types[ENDPOINT] = TypeStatus(names=frozenset({"a"}), acked_version=version_of([a]))
    cds = info.types[CLUSTER] = TypeStatus(wildcard=True, acked_version="old")
    [entry] = syncz(cache, streams)
    assert entry["types"]["EDS"]["in_sync"] and entry["types"]["EDS"]["current"] == eds.acked_version
    assert not entry["types"]["CDS"]["in_sync"] and entry["types"]["CDS"]["current"] == version_of([cluster])
    assert cds.acked_version == "old" and entry["in_sync"] is False



def _cla(name: str) -> ClusterLoadAssignment:
    return ClusterLoadAssignment(cluster_name=name)
