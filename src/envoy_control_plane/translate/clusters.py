"""CDS: the local cluster behind each IngressListener and the EDS cluster behind each EgressListener."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.duration_pb2 import Duration

from ..model import EgressListener, IngressListener
from ..state import listener_name
from ..xds.resource import Resource
from ..xds.types import CLUSTER
from .common import ads_config_source, listener_key, memo_latest
from .endpoints import assignment, service_name

CONNECT_TIMEOUT = Duration(seconds=1)
LOCAL_ADDRESS = "127.0.0.1"


def cluster_name_for(listener: IngressListener | EgressListener) -> str:
    return f"{listener_name(listener)}_cluster"


@memo_latest(key=listener_key)
def ingress_cluster(listener: IngressListener) -> Resource:
    """A static cluster with one endpoint, the local workload on 127.0.0.1:targetport."""
    name = cluster_name_for(listener)
    message = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=CONNECT_TIMEOUT,
        load_assignment=assignment(name, (LOCAL_ADDRESS,), listener.spec.targetport),
    )
    return Resource.of(CLUSTER, name, message)


@memo_latest(key=listener_key)
def egress_cluster(listener: EgressListener) -> Resource:
    """An EDS cluster whose endpoints (the targetcluster pods on targetport) arrive over ADS."""
    name = cluster_name_for(listener)
    eds_name = service_name(listener.spec.targetcluster, listener.spec.targetport)
    message = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=CONNECT_TIMEOUT,
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_config_source(),
            service_name=eds_name,
        ),
    )
    return Resource.of(CLUSTER, name, message, refs=[eds_name])
