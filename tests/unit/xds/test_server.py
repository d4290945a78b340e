import pytest
from envoy.config.core.v3.base_pb2 import Extension
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from envoy_control_plane.metrics import Metrics
from envoy_control_plane.xds.cache import SnapshotCache
from envoy_control_plane.xds.server import _slim_node, exposure_warning, check_port, start_xds_server
from envoy_control_plane.xds.streams import StreamRegistry
from envoy_control_plane.xds.types import CLUSTER


def test_requests_lose_only_the_nodes_extension_list():
    request = DiscoveryRequest(type_url=CLUSTER, version_info="v1", resource_names=["a"], response_nonce="3")
    request.node.id, request.node.cluster = "node-1", "edge"
    request.node.user_agent_name = "envoy"
    request.node.extensions.extend(Extension(name=f"envoy.ext.{i}", category="c") for i in range(500))
    request.node.client_features.append("envoy.lb.does_not_support_overprovisioning")
    slim = _slim_node(DiscoveryRequest)(request.SerializeToString())
    expected = DiscoveryRequest()
    expected.CopyFrom(request)
    expected.node.ClearField("extensions")
    expected.node.ClearField("client_features")
    assert slim == expected


def test_requests_without_a_node_pass_unchanged():
    request = DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce="1")
    assert _slim_node(DeltaDiscoveryRequest)(request.SerializeToString()) == request


async def test_a_second_server_cannot_share_the_port():
    """gRPC's SO_REUSEPORT default would let two instances split the Envoys silently."""
    metrics = Metrics()
    first, port = await start_xds_server("127.0.0.1", 0, SnapshotCache(), metrics, StreamRegistry())
    try:
        with pytest.raises(OSError, match=f"xDS port 127.0.0.1:{port} is already in use"):
            await start_xds_server("127.0.0.1", port, SnapshotCache(), metrics, StreamRegistry())
        with pytest.raises(OSError, match=f"xDS port 127.0.0.1:{port} is already in use"):
            check_port("127.0.0.1", port)
    finally:
        await first.stop(None)


def test_an_open_xds_port_beyond_loopback_is_warned_about():
    assert "without client certificates" in exposure_warning("0.0.0.0", bind_nodes=False)
    assert "without client certificates" in exposure_warning("xds.example", bind_nodes=False)
    assert exposure_warning("0.0.0.0", bind_nodes=True) is None
    for loopback in ("127.0.0.1", "::1", "localhost"):
        assert exposure_warning(loopback, bind_nodes=False) is None
