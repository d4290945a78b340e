"""The simulated Envoy against a scripted in-test ADS server: subscriptions, ACKs, NACKs, reconnect, fleet protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from bench.adsclient import CDS, EDS, LDS, AdsClient, DeltaClient, SotwClient
from bench.simfleet import Fleet

pytestmark = pytest.mark.timeout(20)

Reply = Callable[[int, Message], Iterable[Message] | None]


class FakeAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Records (stream number, request); answers with reply(stream, request), ending the stream on None."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[tuple[int, Message]] = []
        self.streams = 0

    async def StreamAggregatedResources(self, request_iterator, context) -> None:  # noqa: N802 (gRPC name)
        await self._serve(request_iterator, context)

    async def DeltaAggregatedResources(self, request_iterator, context) -> None:  # noqa: N802 (gRPC name)
        await self._serve(request_iterator, context)

    async def _serve(self, request_iterator, context) -> None:
        self.streams += 1
        stream = self.streams
        async for request in request_iterator:
            self.requests.append((stream, request))
            responses = self.reply(stream, request)
            if responses is None:
                return
            for response in responses:
                await context.write(response)

    async def received(self, count: int, timeout: float = 5.0) -> None:
        """Wait (bounded) until count requests arrived."""
        for _ in range(int(timeout / 0.01)):
            if len(self.requests) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.requests)} requests, wanted {count}")


@contextlib.asynccontextmanager
async def ads_server(reply: Reply) -> AsyncIterator[tuple[FakeAds, str]]:
    """A FakeAds on 127.0.0.1 and a free port; yields it and its address."""
    fake = FakeAds(reply)
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def running(client: AdsClient, address: str) -> AsyncIterator[AdsClient]:
    """The client connected to address until the block ends."""
    async with grpc.aio.insecure_channel(address) as channel:
        task = asyncio.create_task(client.run(channel))
        try:
            yield client
        finally:
            client.stop()
            await asyncio.wait_for(task, 5)


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def eds_cluster(name: str, service_name: str = "") -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.eds_cluster_config.service_name = service_name
    return cluster


STATIC = cluster_pb2.Cluster(name="static", type=cluster_pb2.Cluster.STATIC)


def cla(name: str, *addresses: str) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = assignment.endpoints.add()
    for address in addresses:
        host, port = address.split(":")
        socket = locality.lb_endpoints.add().endpoint.address.socket_address
        socket.address, socket.port_value = host, int(port)
    return assignment


def sotw(type_url: str, version: str, nonce: str, *resources: Message) -> discovery_pb2.DiscoveryResponse:
    return discovery_pb2.DiscoveryResponse(
        type_url=type_url, version_info=version, nonce=nonce, resources=[pack(r) for r in resources]
    )


def delta(type_url: str, nonce: str, *resources: Message, removed: Iterable[str] = ()) -> Message:
    return discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_url,
        nonce=nonce,
        system_version_info=nonce,
        resources=[
            discovery_pb2.Resource(name=getattr(r, "name", "") or r.cluster_name, version="1", resource=pack(r))
            for r in resources
        ],
        removed_resources=list(removed),
    )


def sotw_seen(fake: FakeAds) -> list[tuple]:
    return [
        (r.type_url, r.version_info, r.response_nonce, list(r.resource_names), r.error_detail.message)
        for _, r in fake.requests
    ]


async def test_sotw_subscribes_like_envoy() -> None:
    def reply(_stream: int, request: Message) -> list[Message]:
        key = (request.type_url, request.response_nonce)
        return {
            (CDS, ""): [sotw(CDS, "c1", "n1", eds_cluster("web", "web-svc"), eds_cluster("api"), STATIC)],
            (EDS, ""): [sotw(EDS, "e1", "n2", cla("web-svc", "10.0.0.1:80"), cla("api", "10.0.0.2:80"))],
            (LDS, ""): [sotw(LDS, "l1", "n3", listener_pb2.Listener(name="http"))],
            (LDS, "n3"): [sotw(CDS, "c2", "n4", eds_cluster("api"), STATIC)],  # web removed
        }.get(key, [])

    async with ads_server(reply) as (fake, address), running(SotwClient("node-0"), address) as client:
        await fake.received(8)
        assert sotw_seen(fake) == [
            (CDS, "", "", [], ""),
            (EDS, "", "", ["web-svc", "api"], ""),  # EDS names before the CDS ACK, in CDS order
            (CDS, "c1", "n1", [], ""),
            (LDS, "", "", [], ""),  # LDS once the clusters are warm, before the EDS ACK
            (EDS, "e1", "n2", ["web-svc", "api"], ""),
            (LDS, "l1", "n3", [], ""),
            (EDS, "e1", "n2", ["api"], ""),  # web removed: shorter EDS subscription, then the CDS ACK
            (CDS, "c2", "n4", [], ""),
        ]
        assert all(r.node.id == "node-0" and len(r.node.extensions) == 516 for _, r in fake.requests)
        assert client.acked_versions == {CDS: "c2", EDS: "e1", LDS: "l1"}
        assert client.clusters == {"api": "api", "static": None}
        assert client.endpoints == {"api": frozenset({"10.0.0.2:80"})}
        assert client.listeners == {"http": ()}
        assert [a.type_url for a in client.arrivals] == [CDS, EDS, LDS, CDS]
        assert client.arrivals[-1].endpoints == {"web-svc": frozenset()}
        assert client.bytes_received == sum(a.nbytes for a in client.arrivals) > 0
        assert await client.wait_for(lambda c: "http" in c.listeners, 1) == client.arrivals[-1].t
        assert await client.wait_for(lambda c: False, 0.05) is None


async def test_sotw_nack_keeps_old_version() -> None:
    def reply(_stream: int, request: Message) -> list[Message]:
        if request.type_url == CDS and not request.response_nonce:
            return [sotw(CDS, "c1", "n1", eds_cluster("web"))]
        if request.type_url == CDS and request.HasField("error_detail"):
            return [sotw(CDS, "c2", "n2", eds_cluster("web"))]
        return []

    client = SotwClient("node-1", node_profile="minimal")
    client.nack_next(CDS, "bad cluster")
    async with ads_server(reply) as (fake, address), running(client, address):
        await fake.received(4)
        nack = fake.requests[1][1]
        assert (nack.version_info, nack.response_nonce, nack.error_detail.message) == ("", "n1", "bad cluster")
        assert nack.error_detail.code == 13
        assert sotw_seen(fake)[2:] == [(EDS, "", "", ["web"], ""), (CDS, "c2", "n2", [], "")]
        assert len(fake.requests[0][1].node.extensions) == 0
        assert client.nacks_sent == 1 and [a.nacked for a in client.arrivals] == [True, False]


async def test_sotw_subscribes_lds_at_initial_fetch_timeout() -> None:
    def reply(_stream: int, request: Message) -> list[Message]:
        if request.type_url == CDS and not request.response_nonce:
            return [sotw(CDS, "c1", "n1", eds_cluster("web"))]
        return []  # never any EDS: the cluster stays warming

    client = SotwClient("node-3", node_profile="minimal", init_fetch_timeout=0.3)
    async with ads_server(reply) as (fake, address), running(client, address):
        await fake.received(3)
        await asyncio.sleep(0.1)
        assert len(fake.requests) == 3  # CDS, EDS, CDS ACK: LDS waits
        await fake.received(4)
        assert sotw_seen(fake)[3] == (LDS, "", "", [], "")


async def test_delta_subscribes_acks_nacks_and_resumes() -> None:
    def reply(stream: int, request: Message) -> list[Message] | None:
        if request.HasField("error_detail"):
            return None  # end the stream: the client reconnects
        if request.response_nonce or request.resource_names_unsubscribe:
            return []
        if stream == 2:
            return [delta(CDS, "x1", removed=["web"])] if request.type_url == CDS else []
        return {
            CDS: [delta(CDS, "d1", eds_cluster("web", "web-svc"))],
            EDS: [delta(EDS, "d2", cla("web-svc", "10.0.0.1:80"))],
            LDS: [delta(LDS, "d3", listener_pb2.Listener(name="http"))],
        }[request.type_url]

    client = DeltaClient("node-2")
    client.nack_next(LDS, "bad listener")
    async with ads_server(reply) as (fake, address), running(client, address):
        await fake.received(11)
        seen = [
            (stream, r.type_url, list(r.resource_names_subscribe), list(r.resource_names_unsubscribe),
             dict(r.initial_resource_versions), r.response_nonce, r.error_detail.message)
            for stream, r in fake.requests
        ]  # fmt: skip
        assert seen == [
            (1, CDS, [], [], {}, "", ""),
            (1, EDS, ["web-svc"], [], {}, "", ""),
            (1, CDS, [], [], {}, "d1", ""),
            (1, LDS, [], [], {}, "", ""),
            (1, EDS, [], [], {}, "d2", ""),
            (1, LDS, [], [], {}, "d3", "bad listener"),
            (2, CDS, [], [], {"web": "1"}, "", ""),
            (2, EDS, ["web-svc"], [], {"web-svc": "1"}, "", ""),
            (2, LDS, [], [], {}, "", ""),  # the NACKed listener was not taken
            (2, EDS, [], ["web-svc"], {}, "", ""),
            (2, CDS, [], [], {}, "x1", ""),
        ]
        assert client.resource_versions == {CDS: {}, EDS: {}}
        assert client.acked_versions == {CDS: "x1", EDS: "d2"}
        assert client.endpoints == {} and client.streams == 2


async def test_fleet_protocol() -> None:
    def reply(_stream: int, request: Message) -> list[Message]:
        if request.response_nonce:
            return []
        return {
            CDS: [sotw(CDS, "1", "a", eds_cluster("web"))],
            EDS: [sotw(EDS, "1", "b", cla("web", "10.0.0.1:80", "10.0.0.2:80"))],
            LDS: [sotw(LDS, "1", "c", listener_pb2.Listener(name="http"))],
        }[request.type_url]

    requests = [
        {"id": 1, "cmd": "wait", "listeners": ["http"], "endpoints": {"web": ["10.0.0.1:80"]}, "timeout": 5},
        {"id": 2, "cmd": "wait", "absent": {"web": ["10.0.0.2:80"]}, "timeout": 0.1},
        {"id": 3, "cmd": "arrivals", "since": 0, "types": ["eds"], "endpoints": True},
        {"id": 4, "cmd": "nope"},
        {"id": 5, "cmd": "stop"},
    ]
    reader = asyncio.StreamReader()
    for request in requests:
        reader.feed_data(json.dumps(request).encode() + b"\n")
    replies: list[dict] = []
    async with ads_server(reply) as (_fake, address):
        clients: list[AdsClient] = [SotwClient(f"node-{i}", node_profile="minimal") for i in range(3)]
        await Fleet(clients, address, per_channel=2).serve(reader, replies.append)
    ready, waited, timed_out, arrivals, unknown, stopped = replies
    assert ready["event"] == "ready" and ready["nodes"] == 3
    assert waited["ok"] and waited["id"] == 1 and waited["first"] <= waited["last"]
    assert not timed_out["ok"] and timed_out["pending_count"] == 3
    times = [a["t"] for a in arrivals["arrivals"]]
    assert times == sorted(times) and {a["node"] for a in arrivals["arrivals"]} == {"node-0", "node-1", "node-2"}
    assert arrivals["arrivals"][0]["endpoints"] == {"web": ["10.0.0.1:80", "10.0.0.2:80"]}
    assert not unknown["ok"] and unknown["id"] == 4
    assert stopped["stopped"] and stopped["acked"]["lds"] == {"1": 3} and stopped["nodes"] == 3
