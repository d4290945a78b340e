"""Responses written from the resources' bytes (xds/wire.py) are exactly what protobuf serialises for the same
message: any field, length or name a response can carry."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.any_pb2 import Any
from hypothesis import given, settings
from hypothesis import strategies as st

from envoy_control_plane.xds.resource import Resource
from envoy_control_plane.xds.types import CLUSTER
from envoy_control_plane.xds.wire import delta_response, sotw_response

# Lengths around the varint boundaries (1, 2 and 3 bytes), and empty.
BODY_SIZES = st.sampled_from([0, 1, 126, 127, 128, 300, 16_383, 16_384, 70_000])
TEXT = st.text(max_size=40)
TYPE_URLS = st.sampled_from([CLUSTER, "t", "type.googleapis.com/" + "x" * 150, "type.googleapis.com/é"])


@st.composite
def resources(draw: st.DrawFn, type_url: str) -> list[Resource]:
    names = draw(st.lists(TEXT, max_size=4, unique=True))
    return [
        Resource(type_url, name, draw(st.text(max_size=20)), bytes([i % 256]) * draw(BODY_SIZES))
        for i, name in enumerate(names)
    ]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), type_url=TYPE_URLS, version=TEXT, nonce=TEXT)
def test_a_sotw_response_is_protobufs_serialisation(data, type_url, version, nonce):
    items = data.draw(resources(type_url))
    anys = [Any(type_url=type_url, value=r.body) for r in items]
    expected = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce, resources=anys)
    assert sotw_response(version, type_url, nonce, items) == expected.SerializeToString()


@settings(max_examples=150, deadline=None)
@given(data=st.data(), type_url=TYPE_URLS, version=TEXT, nonce=TEXT, removed=st.lists(TEXT, max_size=4))
def test_a_delta_response_is_protobufs_serialisation(data, type_url, version, nonce, removed):
    items = data.draw(resources(type_url))
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=version,
        type_url=type_url,
        nonce=nonce,
        removed_resources=removed,
        resources=[
            discovery_pb2.Resource(name=r.name, version=r.version, resource=Any(type_url=type_url, value=r.body))
            for r in items
        ],
    )
    assert delta_response(version, type_url, nonce, items, removed) == expected.SerializeToString()


def test_a_response_carries_each_body_as_it_is():
    body = b"\x0a\x03abc" * 1000
    raw = sotw_response("v", CLUSTER, "1", [Resource(CLUSTER, "a", "h", body)])
    response = discovery_pb2.DiscoveryResponse.FromString(raw)
    assert [(a.type_url, a.value) for a in response.resources] == [(CLUSTER, body)]
