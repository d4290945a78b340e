"""EDS: one ClusterLoadAssignment per (Envoy cluster name, target port), shared by every node that uses it."""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2

from ..xds.resource import Resource
from ..xds.types import ENDPOINT
from .common import memo_latest


def service_name(cluster_name: str, port: int) -> str:
    """The EDS resource name: the pods of `cluster_name` on `port`."""
    return f"{cluster_name}:{port}"


@memo_latest(key=lambda cluster_name, port, _ips: (cluster_name, port))
def load_assignment(cluster_name: str, port: int, ips: tuple[str, ...]) -> Resource:
    """Built and encoded once per content; every node whose egress targets this cluster and port shares it."""
    name = service_name(cluster_name, port)
    return Resource.of(ENDPOINT, name, assignment(name, ips, port))


def assignment(name: str, ips: tuple[str, ...], port: int) -> endpoint_pb2.ClusterLoadAssignment:
    """The hosts `ips` on `port`, in one locality (no endpoints at all when there are none).

    Filled in place (`add()`): building each endpoint as its own message and handing the list over copies every
    one of them again, three times slower, and a rollout builds every cluster's assignment anew."""
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if ips:
        lb_endpoints = message.endpoints.add().lb_endpoints
        for ip in ips:
            address = lb_endpoints.add().endpoint.address.socket_address
            address.address = ip
            address.port_value = port
    return message
