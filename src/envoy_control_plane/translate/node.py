"""Assemble one node's resources from the world. Every piece is memoised by its inputs, so a rebuild is cheap."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import EgressListener
from ..state import World
from ..xds.resource import Resource
from ..xds.types import CLUSTER, ENDPOINT, LISTENER
from .clusters import egress_cluster, ingress_cluster
from .endpoints import load_assignment
from .listeners import egress_listener, ingress_listener


@dataclass(frozen=True)
class Addresses:
    ingress: str = "0.0.0.0"
    egress: str = "127.0.0.1"


def node_resources(world: World, node: str, addresses: Addresses) -> dict[str, list[Resource]]:
    """The node's clusters, endpoints and listeners."""
    clusters: list[Resource] = []
    endpoints: list[Resource] = []
    listeners: list[Resource] = []
    for listener in world.listeners(node).accepted:
        spec = listener.spec
        if isinstance(listener, EgressListener):
            clusters.append(egress_cluster(listener))
            endpoints.append(
                load_assignment(spec.targetcluster, spec.targetport, world.endpoints(spec.targetcluster))
            )
            listeners.append(egress_listener(listener, addresses.egress))
        else:
            clusters.append(ingress_cluster(listener))
            allowed = world.endpoints(spec.rbacallowcluster) if spec.rbacallowcluster else None
            listeners.append(ingress_listener(listener, addresses.ingress, allowed))
    unique_endpoints = list({r.name: r for r in endpoints}.values())
    return {CLUSTER: clusters, ENDPOINT: unique_endpoints, LISTENER: listeners}
