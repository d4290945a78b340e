from envoy.config.core.v3.base_pb2 import Extension
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from envoy_control_plane.xds.server import _slim_node
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
