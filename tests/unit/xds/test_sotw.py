"""The SotW protocol rules of XDS_PROTOCOL.md, one test each, driving a stream without gRPC."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.rpc.status_pb2 import Status

from envoy_control_plane.metrics import Metrics
from envoy_control_plane.xds.cache import Snapshot, SnapshotCache
from envoy_control_plane.xds.resource import Resource, content_hash, version_of
from envoy_control_plane.xds.sotw import SotwStream
from envoy_control_plane.xds.stream import ProtocolError
from envoy_control_plane.xds.streams import StreamRegistry
from envoy_control_plane.xds.types import CLUSTER, ENDPOINT, LISTENER

NODE = "node-1"


def cluster(name: str, timeout: int = 1) -> Resource:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    msg.connect_timeout.seconds = timeout
    return Resource.of(CLUSTER, name, msg)


def cla(name: str, port: int = 80) -> Resource:
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    msg.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = port
    return Resource.of(ENDPOINT, name, msg)


def listener(name: str, cluster_name: str, port: int = 9000) -> Resource:
    msg = listener_pb2.Listener(name=name)
    msg.address.socket_address.port_value = port
    return Resource.of(LISTENER, name, msg, refs=[cluster_name])


def snapshot(*resources: Resource) -> Snapshot:
    by_type: dict[str, list[Resource]] = {CLUSTER: [], ENDPOINT: [], LISTENER: []}
    for r in resources:
        by_type[r.type_url].append(r)
    return Snapshot.build(by_type)


class Client:
    """Plays Envoy: sends requests into a SotwStream and reads what it answers."""

    def __init__(self, cache: SnapshotCache, metrics: Metrics, **options: float) -> None:
        self.requests: asyncio.Queue[DiscoveryRequest | None] = asyncio.Queue()
        self.info = StreamRegistry().open("sotw", "test")
        self.stream = SotwStream(cache, metrics, self.info, **options)
        self.responses = self.stream.run(self._requests())
        self.first = True

    async def _requests(self) -> AsyncIterator[DiscoveryRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    def send(self, type_url: str, names=(), version="", nonce="", error: str | None = None) -> None:
        request = DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                   response_nonce=nonce)
        if self.first:
            request.node.id = NODE
            self.first = False
        if error:
            request.error_detail.CopyFrom(Status(code=3, message=error))
        self.requests.put_nowait(request)

    def ack(self, response: DiscoveryResponse, names=()) -> None:
        self.send(response.type_url, names, response.version_info, response.nonce)

    async def recv(self) -> DiscoveryResponse:
        return DiscoveryResponse.FromString(await asyncio.wait_for(anext(self.responses), 2))

    async def silent(self) -> None:
        """Nothing arrives for a short while."""
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._pending()), 0.2)

    async def _pending(self) -> bytes:
        if not hasattr(self, "_next"):
            self._next = asyncio.ensure_future(anext(self.responses))
        return await self._next

    async def recv_after_silent(self) -> DiscoveryResponse:
        response = await asyncio.wait_for(self._pending(), 2)
        del self._next
        return DiscoveryResponse.FromString(response)

    async def close(self) -> None:
        self.requests.put_nowait(None)
        if hasattr(self, "_next"):
            self._next.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self._next
        await self.responses.aclose()


@pytest.fixture
def cache() -> SnapshotCache:
    return SnapshotCache()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(cache, metrics):
    c = Client(cache, metrics)
    yield c
    await c.close()


def names(response: DiscoveryResponse) -> list[str]:
    decoders = {CLUSTER: cluster_pb2.Cluster, LISTENER: listener_pb2.Listener}
    if response.type_url == ENDPOINT:
        return [endpoint_pb2.ClusterLoadAssignment.FromString(a.value).cluster_name for a in response.resources]
    return [decoders[response.type_url].FromString(a.value).name for a in response.resources]


async def test_first_wildcard_request_is_answered_even_when_empty(client):
    client.send(CLUSTER)
    response = await client.recv()
    assert response.type_url == CLUSTER and names(response) == [] and response.version_info


async def test_ack_then_change_sends_new_version(cache, client):
    cache.set(NODE, snapshot(cluster("a")))
    client.send(CLUSTER)
    first = await client.recv()
    assert names(first) == ["a"]
    client.ack(first)
    await client.silent()
    cache.set(NODE, snapshot(cluster("a"), cluster("b")))
    second = await client.recv_after_silent()
    assert sorted(names(second)) == ["a", "b"] and second.version_info != first.version_info
    assert client.info.types[CLUSTER].acked_version == first.version_info


async def test_nack_is_counted_and_not_resent(cache, client, metrics):
    cache.set(NODE, snapshot(cluster("a")))
    client.send(CLUSTER)
    bad = await client.recv()
    client.send(CLUSTER, version="", nonce=bad.nonce, error="port in use")
    await client.silent()
    assert metrics.nacks.labels("CDS")._value.get() == 1
    assert client.info.types[CLUSTER].last_nack == "port in use"
    cache.set(NODE, snapshot(cluster("a", timeout=2)))
    fixed = await client.recv_after_silent()
    assert fixed.version_info != bad.version_info


async def test_stale_nonce_is_ignored(cache, client):
    cache.set(NODE, snapshot(cluster("a")))
    client.send(CLUSTER)
    first = await client.recv()
    client.ack(first)
    cache.set(NODE, snapshot(cluster("b")))
    second = await client.recv()
    client.send(CLUSTER, version=first.version_info, nonce=first.nonce)  # superseded by `second`
    await client.silent()
    client.ack(second)
    await client.silent()


async def test_envoys_stale_eds_unsubscribe_does_not_stall_later_types(cache, client):
    """Issue 7 item 1, as Envoy did it: after a CDS push without its last EDS cluster, Envoy unsubscribes from EDS
    with an older nonce and never answers the EDS response that the CDS push triggered."""
    cache.set(NODE, snapshot(cluster("a"), cla("a"), listener("l", "a")))
    client.send(CLUSTER)
    client.ack(await client.recv())
    client.send(ENDPOINT, ["a"])
    client.ack(eds := await client.recv(), ["a"])
    client.send(LISTENER)
    client.ack(await client.recv())
    cache.set(NODE, snapshot())  # the listener goes, then its cluster
    client.ack(await client.recv(), ["a"])  # EDS without "a"
    lds = await client.recv()
    client.ack(lds)
    cds2 = await client.recv()
    assert cds2.type_url == CLUSTER and names(cds2) == []
    assert (await client.recv()).type_url == ENDPOINT  # the EDS that always follows a CDS push; Envoy ignores it
    client.send(ENDPOINT, [], version=eds.version_info, nonce=eds.nonce)  # the unsubscribe, with an older nonce
    client.ack(cds2)
    cache.set(NODE, snapshot(listener("l2", "local")))
    lds2 = await client.recv_after_silent()
    assert lds2.type_url == LISTENER and names(lds2) == ["l2"] and lds2.version_info != lds.version_info


async def test_no_type_blocks_the_others_for_longer_than_the_ack_timeout(cache, metrics, caplog):
    client = Client(cache, metrics, ack_timeout=0.3)
    try:
        cache.set(NODE, snapshot(cluster("a"), cla("a"), listener("l", "a")))
        client.send(CLUSTER)
        client.ack(await client.recv())
        client.send(ENDPOINT, ["a"])
        await client.recv()  # never answered
        client.send(LISTENER)
        await client.silent()  # LDS waits for EDS, for a while
        lds = await client.recv_after_silent()
        assert lds.type_url == LISTENER and names(lds) == ["l"]
        assert "no answer to EDS" in caplog.text
        cache.set(NODE, snapshot(cluster("a"), cla("a", port=82), listener("l", "a")))
        assert (await client.recv()).type_url == ENDPOINT  # EDS itself is sent again on its next change
    finally:
        await client.close()


async def test_named_types_carry_only_subscribed_names_and_new_names_are_answered(cache, client):
    cache.set(NODE, snapshot(cla("x"), cla("y")))
    client.send(ENDPOINT, ["x"])
    first = await client.recv()
    assert names(first) == ["x"]
    client.ack(first, ["x", "ghost"])  # a name we do not have: answered with what exists, never stalled
    second = await client.recv()
    assert names(second) == ["x"]
    client.ack(second, ["x", "ghost", "y"])
    third = await client.recv()
    assert sorted(names(third)) == ["x", "y"]


async def test_make_before_break_cds_then_eds_then_lds(cache, client):
    cache.set(NODE, snapshot(cluster("a"), cla("a"), listener("l", "a")))
    client.send(CLUSTER)
    client.ack(await client.recv())
    client.send(ENDPOINT, ["a"])
    client.ack(await client.recv(), ["a"])
    client.send(LISTENER)
    client.ack(await client.recv())
    cache.set(NODE, snapshot(cluster("a", timeout=3), cla("a", port=81), listener("l", "a", port=9001)))
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    # EDS does not wait for the CDS answer: Envoy ACKs CDS only once updated clusters have warmed, on an EDS response.
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    await client.silent()  # LDS waits for the CDS and EDS answers
    client.ack(eds, ["a"])
    await client.silent()  # the CDS answer still outstanding
    client.ack(cds)
    lds = await client.recv_after_silent()
    assert lds.type_url == LISTENER


async def test_cds_push_is_followed_by_fresh_eds_even_if_endpoints_unchanged(cache, client):
    cache.set(NODE, snapshot(cluster("a"), cla("a")))
    client.send(CLUSTER)
    cds = await client.recv()
    client.ack(cds)
    client.send(ENDPOINT, ["a"])
    eds = await client.recv()
    client.ack(eds, ["a"])
    cache.set(NODE, snapshot(cluster("a", timeout=5), cla("a")))
    cds2 = await client.recv()
    client.ack(cds2)
    eds2 = await client.recv()
    assert eds2.type_url == ENDPOINT and eds2.version_info == eds.version_info and eds2.nonce != eds.nonce


async def test_empty_named_subscription_gets_nothing_and_blocks_nothing(cache, client):
    cache.set(NODE, snapshot(cluster("a"), cla("a"), listener("l", "a")))
    client.send(CLUSTER)
    client.send(ENDPOINT, [])  # Envoy with no EDS clusters left: it would not ACK an EDS response
    cds = await client.recv()
    client.ack(cds)
    client.send(LISTENER)
    assert (await client.recv()).type_url == LISTENER


async def test_reconnect_with_current_versions_sends_nothing(cache, metrics):
    cache.set(NODE, snapshot(cluster("a"), cla("a"), listener("l", "a")))
    client = Client(cache, metrics)
    try:
        client.send(CLUSTER, version=cache.get(NODE).version(CLUSTER))
        client.send(ENDPOINT, ["a"], version=Snapshot.build({ENDPOINT: [cla("a")]}).version(ENDPOINT))
        client.send(LISTENER, version=cache.get(NODE).version(LISTENER))
        await client.silent()
    finally:
        await client.close()


async def test_removed_listener_cluster_goes_after_the_listener(cache, client):
    cache.set(NODE, snapshot(cluster("a"), listener("l", "a")))
    client.send(CLUSTER)
    client.ack(cds := await client.recv())
    client.send(LISTENER)
    client.ack(await client.recv())
    cache.set(NODE, snapshot())
    lds = await client.recv()  # the listener goes first; CDS still needs "a" for it, so CDS is unchanged
    assert lds.type_url == LISTENER and names(lds) == []
    await client.silent()
    client.ack(lds)
    gone = await client.recv_after_silent()
    assert gone.type_url == CLUSTER and names(gone) == [] and gone.version_info != cds.version_info


async def test_on_reconnect_a_cluster_goes_after_the_listener_that_used_it(cache, client):
    """Envoy re-sends CDS before LDS on a reconnect: the cluster removal waits until the listener is gone."""
    before = snapshot(cluster("old"), cluster("keep"), listener("l-old", "old"), listener("l-keep", "keep", 9001))
    cache.set(NODE, before)  # what the client got from us (or another replica)
    cache.set(NODE, snapshot(cluster("keep"), listener("l-keep", "keep", 9001)))  # then l-old and "old" went
    client.send(CLUSTER, version=before.version(CLUSTER))
    await client.silent()  # the client's listeners may still use "old"
    client.send(LISTENER, version=before.version(LISTENER))
    lds = await client.recv_after_silent()
    assert lds.type_url == LISTENER and names(lds) == ["l-keep"]
    client.ack(lds)
    cds = await client.recv()
    assert cds.type_url == CLUSTER and names(cds) == ["keep"]


async def test_on_reconnect_nothing_is_removed_until_the_world_is_complete(metrics):
    """Issue 7 item 8: a client that declares config we cannot see into gets no full set (it would delete what the
    world has not loaded yet) until the world is complete; a first-time client is answered as usual."""
    cache = SnapshotCache(complete=False)
    cache.set(NODE, snapshot(cluster("b"), listener("l-b", "b")))
    client, fresh = Client(cache, metrics), Client(cache, metrics)
    try:
        client.send(CLUSTER, version="from-before-the-restart")
        client.send(LISTENER, version="from-before-the-restart")
        await client.silent()
        fresh.send(CLUSTER)
        assert names(await fresh.recv()) == ["b"]
        cache.set_complete()
        cds = await client.recv_after_silent()
        assert cds.type_url == CLUSTER and names(cds) == ["b"]
        client.ack(cds)
        lds = await client.recv()
        assert lds.type_url == LISTENER and names(lds) == ["l-b"]
    finally:
        await client.close()
        await fresh.close()


async def test_first_request_without_node_is_refused(cache, metrics):
    client = Client(cache, metrics)
    client.first = False
    client.send(CLUSTER)
    with pytest.raises(ProtocolError):
        await client.recv()


def carried_version(response: DiscoveryResponse) -> str:
    """The version of exactly the resources a response carries (names decoded, versions hashed from the bytes)."""
    carried = [
        Resource(response.type_url, name, content_hash(a.value), a.value)
        for name, a in zip(names(response), response.resources, strict=True)
    ]
    return version_of(carried)


async def test_each_response_is_versioned_by_exactly_what_it_carries(cache, client):
    """A subset of a named type, the whole of it, a wildcard type, and one that keeps a cluster a listener uses."""
    cache.set(NODE, snapshot(cluster("a"), cluster("b"), cla("a"), cla("b"), listener("l", "a")))
    client.send(CLUSTER)
    client.ack(cds := await client.recv())
    client.send(ENDPOINT, ["a"])
    client.ack(subset := await client.recv(), ["a"])
    client.send(ENDPOINT, ["a", "b"])
    client.ack(every := await client.recv(), ["a", "b"])
    client.send(LISTENER)
    client.ack(lds := await client.recv())
    cache.set(NODE, snapshot(cluster("b", timeout=2), cla("b"), listener("l", "a")))  # "a" goes; l still uses it
    kept = await client.recv()
    assert names(kept) == ["b", "a"]
    for response in (cds, subset, every, lds, kept):
        assert response.version_info == carried_version(response), names(response)
    assert subset.version_info != every.version_info
