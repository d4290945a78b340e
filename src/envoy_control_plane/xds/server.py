"""The gRPC wiring: the ADS service on grpc.aio, keepalive and stream limits, one protocol object per stream."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from google.protobuf.message import Message

from ..config import XdsTlsConfig
from ..metrics import Metrics
from ..text import clip
from .cache import SnapshotCache
from .credentials import ReloadingCredentials
from .delta import DeltaStream
from .identity import NodeNotPermitted, stream_authorizer
from .sotw import SotwStream
from .stream import ACK_TIMEOUT, ProtocolError
from .streams import StreamRegistry

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 1_000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # gRPC sets SO_REUSEPORT by default: a second instance would bind the same port and silently take half the Envoys.
    ("grpc.so_reuseport", 0),
]


class AdsService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        streams: StreamRegistry,
        bind_nodes: bool = False,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        """`bind_nodes`: a stream may only ask for a node id its client certificate names (xds.tls.client_ca)."""
        self._cache = cache
        self._metrics = metrics
        self._streams = streams
        self._bind_nodes = bind_nodes
        self._ack_timeout = ack_timeout

    async def StreamAggregatedResources(  # noqa: N802 (the generated API's name)
        self, request_iterator: AsyncIterator[DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """State-of-the-world ADS (Envoy's `api_type: GRPC`); yields serialised DiscoveryResponses."""
        async for response in self._serve(SotwStream, request_iterator, context):
            yield response

    async def DeltaAggregatedResources(  # noqa: N802 (the generated API's name)
        self, request_iterator: AsyncIterator[DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Incremental ADS (Envoy's `api_type: DELTA_GRPC`), beside state-of-the-world on the same server; yields
        serialised DeltaDiscoveryResponses."""
        async for response in self._serve(DeltaStream, request_iterator, context):
            yield response

    async def _serve(
        self, protocol: type[SotwStream] | type[DeltaStream], requests: AsyncIterator, context: grpc.aio.ServicerContext
    ) -> AsyncIterator:
        mode = protocol.mode
        info = self._streams.open(mode, context.peer())
        self._metrics.streams_total.labels(mode).inc()
        self._metrics.connected_streams.labels(mode).inc()
        authorize = stream_authorizer(context) if self._bind_nodes else None
        try:
            stream = protocol(self._cache, self._metrics, info, authorize, self._ack_timeout)
            # aclosing: the stream's watch on the cache ends with the RPC, not when the generator is collected.
            async with contextlib.aclosing(stream.run(requests)) as run:
                async for response in run:
                    yield response
        except NodeNotPermitted as e:
            log.warning("stream %d from %s refused: %s", info.id, info.peer, e)
            self._metrics.streams_denied.inc()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except ProtocolError as e:
            log.warning("stream %d from %s: %s", info.id, info.peer, e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        finally:
            self._metrics.connected_streams.labels(mode).dec()
            self._streams.close(info)
            log.info("stream %d: node %s disconnected (%s)", info.id, clip(info.node) or "(unknown)", mode)


def _slim_node(message_type: type[Message]) -> Callable[[bytes], Message]:
    """A request deserializer that drops the node's `extensions` and `client_features`.

    Envoy 1.40 describes itself in about 60 KB (every extension it was built with) on a stream's first request, and
    nothing here reads that part. Clearing fields does not shrink a parsed message (its memory is one arena), so the
    request is parsed again from its slim serialisation and the big one is freed; a thousand connecting Envoys then
    hold kilobytes each, not 60 KB.
    """

    def deserialize(data: bytes) -> Message:
        message = message_type.FromString(data)
        node = message.node  # type: ignore[attr-defined]
        if not (node.extensions or node.client_features):
            return message
        node.ClearField("extensions")
        node.ClearField("client_features")
        return message_type.FromString(message.SerializeToString())

    return deserialize


def _add_ads(service: AdsService, server: grpc.aio.Server) -> None:
    """The generated registration, with the slimming deserializers, and no response serializers: the streams yield
    responses already serialised (wire.py), which gRPC sends as they are."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            service.StreamAggregatedResources,
            request_deserializer=_slim_node(DiscoveryRequest),
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            service.DeltaAggregatedResources,
            request_deserializer=_slim_node(DeltaDiscoveryRequest),
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),))


def check_port(address: str, port: int) -> None:
    """Raise OSError, with a message naming the port, if the xDS port cannot be bound now.

    The control plane checks this before it starts anything, so a second instance fails at once with one line rather
    than after its sources' first load (the gRPC server binds only then).
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OSError(f"cannot listen for xDS on {address}:{port}: {e.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
            try:
                probe.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise OSError(f"xDS port {address}:{port} is already in use (another instance?)") from None
                raise OSError(f"cannot listen for xDS on {address}:{port}: {e.strerror}") from None


def exposure_warning(address: str, bind_nodes: bool) -> str | None:
    """What to warn about when the xDS port is reachable beyond this host and nobody is identified."""
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = address == "localhost"
    if bind_nodes or loopback:
        return None
    return (
        f"xDS listens on {address} without client certificates (xds.tls.client_ca): whoever reaches the port can "
        "ask for any node's configuration"
    )


async def start_xds_server(
    address: str,
    port: int,
    cache: SnapshotCache,
    metrics: Metrics,
    streams: StreamRegistry,
    tls: XdsTlsConfig | None = None,
    ack_timeout: float = ACK_TIMEOUT,
) -> tuple[grpc.aio.Server, int]:
    """Start serving ADS; returns the server and the port it bound (useful with port 0)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    bind_nodes = tls is not None and tls.client_ca is not None
    _add_ads(AdsService(cache, metrics, streams, bind_nodes, ack_timeout), server)
    target = f"{address}:{port}"
    credentials = ReloadingCredentials(tls).credentials if tls else None  # follows renewals of the files
    try:
        bound = server.add_secure_port(target, credentials) if credentials else server.add_insecure_port(target)
    except RuntimeError:  # gRPC says only "Failed to bind": find out why, for a message that helps
        check_port(address, port)
        raise OSError(f"cannot listen for xDS on {address}:{port}") from None
    if bound == 0:
        raise OSError(f"cannot listen for xDS on {address}:{port}")
    await server.start()
    security = "plaintext" if tls is None else "TLS, client certificates required" if bind_nodes else "TLS"
    log.info("xDS (ADS) listening on %s:%d (%s)", address, bound, security)
    if warning := exposure_warning(address, bind_nodes):
        log.warning("%s", warning)
    return server, bound
