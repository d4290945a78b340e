"""A hostile xDS client cannot grow the control plane's memory, metrics or logs without bound, nor forge log lines."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.rpc.status_pb2 import Status
from prometheus_client import generate_latest

from envoy_control_plane.admin import make_app, start_admin
from envoy_control_plane.metrics import Metrics
from envoy_control_plane.xds.cache import Snapshot, SnapshotCache
from envoy_control_plane.xds.delta import DeltaStream
from envoy_control_plane.xds.sotw import SotwStream
from envoy_control_plane.xds.stream import MAX_NAMES, MAX_OTHER_TYPES, NACK_LIMIT, ProtocolError
from envoy_control_plane.xds.streams import StreamRegistry
from envoy_control_plane.xds.types import CLUSTER, ENDPOINT

from .test_delta import eds_cluster

NODE = "node-1"


def sotw(cache: SnapshotCache, metrics: Metrics, registry: StreamRegistry | None = None) -> SotwStream:
    return SotwStream(cache, metrics, (registry or StreamRegistry()).open("sotw", "test"))


def delta(cache: SnapshotCache, metrics: Metrics) -> DeltaStream:
    return DeltaStream(cache, metrics, StreamRegistry().open("delta", "test"))


def _series(metrics: Metrics) -> list[str]:
    """Every sample of /metrics, without its value."""
    return [line.rpartition(" ")[0] for line in generate_latest(metrics.registry).decode().splitlines()]


def test_unknown_type_urls_share_one_metric_label_and_metrics_do_not_grow():
    cache, metrics = SnapshotCache(), Metrics()

    def one_stream(i: int) -> None:
        stream = sotw(cache, metrics)
        stream.receive(DiscoveryRequest(node={"id": f"n{i}"}, type_url=CLUSTER))
        for j in range(MAX_OTHER_TYPES):
            stream.receive(DiscoveryRequest(type_url=f"type.googleapis.com/y.{i}.{j}", resource_names=["a"]))

    one_stream(0)
    series = _series(metrics)
    streams = 50_000 // MAX_OTHER_TYPES  # 50k distinct type URLs in all
    for i in range(1, streams):
        one_stream(i)
    text = generate_latest(metrics.registry).decode()
    assert _series(metrics) == series, "new label series appeared"
    assert "type.googleapis.com/y" not in text
    sample = metrics.registry.get_sample_value
    assert sample("envoy_cp_xds_requests_total", {"type": "other"}) == streams * MAX_OTHER_TYPES
    assert sample("envoy_cp_xds_requests_total", {"type": "CDS"}) == streams


@pytest.mark.parametrize("make", [sotw, delta])
def test_a_stream_holds_a_bounded_number_of_types_and_names(make):
    cache, metrics = SnapshotCache(), Metrics()
    stream = make(cache, metrics)
    request = DiscoveryRequest if make is sotw else DeltaDiscoveryRequest
    stream.receive(request(node={"id": NODE}, type_url=CLUSTER))
    for i in range(MAX_OTHER_TYPES):
        stream.receive(request(type_url=f"type.googleapis.com/x.{i}"))
    with pytest.raises(ProtocolError, match=f"more than {MAX_OTHER_TYPES} unknown resource types"):
        stream.receive(request(type_url="type.googleapis.com/one.too.many"))

    stream = make(cache, metrics)
    stream.receive(request(node={"id": NODE}, type_url=CLUSTER))
    names = [f"n{i}" for i in range(MAX_NAMES // 2 + 1)]
    if make is sotw:
        stream.receive(request(type_url=ENDPOINT, resource_names=names))
        with pytest.raises(ProtocolError, match="resource names"):
            stream.receive(request(type_url=ENDPOINT, resource_names=names + [f"m{i}" for i in range(MAX_NAMES)]))
    else:  # delta subscriptions add up over requests
        stream.receive(request(type_url=ENDPOINT, resource_names_subscribe=names))
        with pytest.raises(ProtocolError, match="names subscribed"):
            stream.receive(request(type_url=ENDPOINT, resource_names_subscribe=[f"m{i}" for i in range(len(names))]))


def test_a_long_node_id_is_refused():
    stream = sotw(SnapshotCache(), Metrics())
    with pytest.raises(ProtocolError, match="node.id"):
        stream.receive(DiscoveryRequest(node={"id": "n" * 5000}, type_url=CLUSTER))


def _nack_both(stream, response: bytes, message: str) -> None:
    if isinstance(stream, SotwStream):
        request = DiscoveryRequest(type_url=CLUSTER, response_nonce=DiscoveryResponse.FromString(response).nonce)
    else:
        nonce = DeltaDiscoveryResponse.FromString(response).nonce
        request = DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=nonce)
    request.error_detail.CopyFrom(Status(code=3, message=message))
    stream.receive(request)


@pytest.mark.parametrize("make", [sotw, delta])
def test_an_8_mb_nack_message_is_logged_and_kept_clipped(make, caplog):
    cache, metrics = SnapshotCache(), Metrics()
    cache.set(NODE, Snapshot.build({CLUSTER: [eds_cluster("a")]}))
    stream = make(cache, metrics)
    request = DiscoveryRequest if make is sotw else DeltaDiscoveryRequest
    [response] = stream.receive(request(node={"id": NODE}, type_url=CLUSTER))
    message = "bad cluster a:\n" + "x" * (8 * 1024 * 1024)
    with caplog.at_level(logging.DEBUG, logger="envoy_control_plane"):
        _nack_both(stream, response, message)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert "bad cluster a:\\nxxx" in text and len(text) < NACK_LIMIT + 300
    assert max(len(r.getMessage()) for r in caplog.records) < NACK_LIMIT + 300
    status = stream._info.types[CLUSTER]
    assert status.nacks == 1 and len(status.last_nack) <= NACK_LIMIT and "\n" not in status.last_nack


async def test_a_node_id_with_newlines_cannot_forge_a_log_line(caplog):
    cache, metrics, registry = SnapshotCache(), Metrics(), StreamRegistry()
    cache.set(NODE, Snapshot.build({CLUSTER: [eds_cluster("a")]}))
    evil = "n1\n2026-11-30 12:00:00,000 ERROR envoy_control_plane: forged\x1b[2J"
    with caplog.at_level(logging.DEBUG, logger="envoy_control_plane"):
        stream = sotw(cache, metrics, registry)
        [response] = stream.receive(DiscoveryRequest(node={"id": evil}, type_url=CLUSTER))
        _nack_both(stream, response, "rejected\r\nforged too")
        d = delta(cache, metrics)
        d.receive(DeltaDiscoveryRequest(node={"id": evil}, type_url=ENDPOINT, resource_names_subscribe=["x\ny"],
                                        response_nonce="z\nq"))  # fmt: skip
    assert len(caplog.records) >= 3
    for record in caplog.records:
        text = record.getMessage()
        assert "\n" not in text and "\r" not in text and "\x1b" not in text, text
    runner, port = await start_admin(make_app(cache, registry, metrics, list), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/debug/nodes") as r:
            body = await r.text()
            nodes = await r.json()
    finally:
        await runner.cleanup()
    assert list(nodes) == ["n1\\n2026-11-30 12:00:00,000 ERROR envoy_control_plane: forged\\x1b[2J"], body
    [stream_json] = nodes[next(iter(nodes))]["streams"]
    assert "\n" not in stream_json["types"]["CDS"]["last_nack"]
