"""CDS: the local cluster behind each IngressListener and the EDS cluster behind each EgressListener.

An egress with `tls` presents its certificate to the upstream and validates it (tls.py); a `layer: http` listener's
cluster speaks whatever HTTP version the downstream spoke, so gRPC stays HTTP/2 end to end.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf.duration_pb2 import Duration

from ..model import EgressListener, IngressListener
from ..state import listener_name
from ..xds.resource import Resource
from ..xds.types import CLUSTER
from .common import ads_config_source, listener_key, memo_latest, pack
from .endpoints import assignment, service_name
from .tls import TlsNames, upstream_tls

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

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
    _set_layer(message, listener.spec.layer)
    return Resource.of(CLUSTER, name, message)


@memo_latest(key=listener_key)
def egress_cluster(listener: EgressListener, tls: TlsNames | None = None) -> Resource:
    """An EDS cluster whose endpoints (the targetcluster pods on targetport) arrive over ADS; `tls` names the SDS
    secrets of the listener's `tls` (None: plaintext)."""
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
    if tls is not None:
        message.transport_socket.CopyFrom(upstream_tls(tls.certificate, tls.ca, listener.spec.tls and listener.spec.tls.sni))
    _set_layer(message, listener.spec.layer)
    return Resource.of(CLUSTER, name, message, refs=[eds_name, *(tls.names() if tls else ())])


def _set_layer(message: cluster_pb2.Cluster, layer: str) -> None:
    """HTTP listeners: the upstream connection uses the downstream request's protocol (HTTP/1.1 or HTTP/2)."""
    if layer == "http":
        options = http_protocol_options_pb2.HttpProtocolOptions(
            use_downstream_protocol_config=http_protocol_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
            )
        )
        message.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(pack(options))
