"""CDS: the local cluster behind each IngressListener and the EDS cluster behind each EgressListener.

An egress with `tls` presents its certificate to the upstream and validates it (tls.py); a `layer: http` listener's
cluster speaks whatever HTTP version the downstream spoke, so gRPC stays HTTP/2 end to end.
"""

from __future__ import annotations

from datetime import timedelta

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import health_check_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2, range_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import BoolValue, UInt32Value

from ..model import EgressListener, EgressSpec, HealthCheck, IngressListener, OutlierDetection
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
    add_health(message, listener.spec)
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

# ---- health: active health checks and outlier detection (EgressListener spec.healthcheck, spec.outlierDetection) ---

# Each interval is up to 10% longer, so a fleet's checks drift apart. The first check of a new pod is not delayed
# (no initial_jitter): Envoy sends a new pod no traffic until that check passes, and in a rollout the old pod may
# already be gone (measured: a 1 s initial jitter kept new pods out for 0.2-0.7 s, none kept them out for < 10 ms).
INTERVAL_JITTER_PERCENT = 10


def add_health(cluster: cluster_pb2.Cluster, spec: EgressSpec) -> None:
    """Add the spec's health check and outlier detection (each optional) to its egress cluster.

    With either, an endpoint that fails them gets no traffic: the panic threshold is off (Envoy's default of 50% would
    send traffic to every endpoint, failing ones too, once half of them fail), and an endpoint whose pod went away
    leaves at once (Envoy would otherwise keep a removed endpoint until it fails its health checks).
    """
    if spec.healthcheck is not None:
        cluster.health_checks.append(health_check(spec.healthcheck, spec.targetcluster))
        cluster.ignore_health_on_host_removal = True
    if spec.outlierDetection is not None:
        cluster.outlier_detection.CopyFrom(outlier_detection(spec.outlierDetection, spec.healthcheck is not None))
    if spec.healthcheck is not None or spec.outlierDetection is not None:
        cluster.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=0))


def health_check(check: HealthCheck, targetcluster: str) -> health_check_pb2.HealthCheck:
    """Each check is a new connection (like a kubelet probe), so an endpoint that stops accepting fails it.

    A cluster that has had no traffic yet is checked every `interval` too (Envoy's default there is once a minute).
    """
    message = health_check_pb2.HealthCheck(
        timeout=_duration(check.timeout),
        interval=_duration(check.interval),
        no_traffic_interval=_duration(check.interval),
        interval_jitter_percent=INTERVAL_JITTER_PERCENT,
        unhealthy_threshold=UInt32Value(value=check.unhealthy_threshold),
        healthy_threshold=UInt32Value(value=check.healthy_threshold),
        reuse_connection=BoolValue(value=False),
    )
    if check.type == "tcp":
        message.tcp_health_check.SetInParent()  # no payload: a connection that opens passes
    else:
        message.http_health_check.CopyFrom(
            health_check_pb2.HealthCheck.HttpHealthCheck(
                host=check.host or targetcluster,
                path=check.path,
                expected_statuses=_status_ranges(check.expected_statuses or (200,)),
            )
        )
    return message


def outlier_detection(detection: OutlierDetection, health_checked: bool) -> outlier_detection_pb2.OutlierDetection:
    """Eject an endpoint after `consecutive_errors` failures in a row, failed connections and 5xx alike.

    Without split_external_local_origin_errors, Envoy counts a failed connection (TCP or HTTP layer) as a 5xx, so
    consecutive_5xx is the one counter for both. Only this rule ejects (success-rate ejection is off); a passing
    active health check does not cut an ejection short, else a backend that accepts connections but answers 5xx
    would be back at the next check. At least one endpoint can always be ejected unless maxEjectionPercent is 0
    (Envoy would eject none of 2 endpoints at 10%).
    """
    message = outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=UInt32Value(value=detection.consecutive_errors),
        interval=_duration(detection.interval),
        base_ejection_time=_duration(detection.base_ejection_time),
        max_ejection_percent=UInt32Value(value=detection.max_ejection_percent),
        always_eject_one_host=BoolValue(value=detection.max_ejection_percent > 0),
        enforcing_success_rate=UInt32Value(value=0),
    )
    if health_checked:
        message.successful_active_health_check_uneject_host.value = False
    return message


def _status_ranges(statuses: tuple[int, ...]) -> list[range_pb2.Int64Range]:
    """HTTP statuses as Envoy's half-open ranges, adjacent ones merged: (200, 201, 204) -> [200, 202), [204, 205)."""
    ranges: list[range_pb2.Int64Range] = []
    for status in sorted(set(statuses)):
        if ranges and ranges[-1].end == status:
            ranges[-1].end = status + 1
        else:
            ranges.append(range_pb2.Int64Range(start=status, end=status + 1))
    return ranges


def _duration(value: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(value)
    return duration
