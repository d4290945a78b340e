"""A simulated Envoy: an asyncio ADS client that subscribes, ACKs and NACKs the way Envoy 1.40 does.

Request sequence of a real Envoy 1.40 (observed with a logging ADS server, bootstrap with cds/lds over ADS):

State of the world (StreamAggregatedResources); the node (61 KB: 516 `extensions`) is on *every* request (unless the
bootstrap sets `set_node_on_first_message_only`, as `envoy-control-plane bootstrap` does: then only on a stream's
first request; `node_on_first_request_only=True` does that):
  1. CDS version_info="" resource_names=[] (wildcard).
  2. On a CDS response: first an EDS request naming `eds_cluster_config.service_name` (or the cluster name) of every
     EDS cluster in CDS order, with the last EDS version_info/nonce received (""/"" at first, possibly stale),
     then the CDS ACK (version_info and response_nonce of the response, resource_names=[]).
  3. When every EDS cluster of the first CDS has its first ClusterLoadAssignment (clusters warmed; or after the
     15 s initial fetch timeout): LDS version_info="" resource_names=[], then the EDS ACK.
  4. On LDS: an RDS request naming the RDS route configs, then the LDS ACK. RDS responses are ACKed.
  A removed cluster gives an EDS request with the shorter name list, then the CDS ACK; with no EDS cluster left, an
  EDS request with resource_names=[]. A response for a type with no names watched is not ACKed: if empty, its
  version is taken silently; if not, Envoy re-sends its request with the old version and the new nonce.
  Reconnect: CDS, EDS, LDS, RDS at once, each with the last version_info taken, response_nonce="" and its names.
Delta (DeltaAggregatedResources): the same order, but subscription changes and ACKs are separate requests:
  1. CDS resource_names_subscribe=[] (Envoy 1.40 uses the legacy wildcard, an empty list, not "*").
  2. On CDS: EDS subscribe=[new names, sorted] unsubscribe=[names of removed clusters] with response_nonce="",
     then the CDS ACK (only type_url and response_nonce). 3. LDS subscribe=[] then the EDS ACK. 4. RDS likewise.
  Reconnect: CDS subscribe=[] with initial_resource_versions {name: version}, EDS subscribe=[names] (only if any) with
  their versions, LDS, RDS, all at once. Every response is ACKed, even for a type with nothing subscribed.
NACK: error_detail code 13 (INTERNAL) with the new nonce; SotW keeps the old version_info, delta sends only
type_url, response_nonce and error_detail. (For a CDS with a duplicate cluster, SotW Envoy still applied the rest, and
sent its EDS change before the NACK; this client applies nothing of a response it NACKs.)

`SotwClient` and `DeltaClient` replay these sequences. Decoding is limited to what Envoy needs to subscribe:
clusters (EDS names), listeners (RDS names) and load assignments (endpoints); decoded resources are cached by their
bytes, so N clients receiving the same resource decode it once.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

_PREFIX = "type.googleapis.com/envoy."
CDS = _PREFIX + "config.cluster.v3.Cluster"
EDS = _PREFIX + "config.endpoint.v3.ClusterLoadAssignment"
LDS = _PREFIX + "config.listener.v3.Listener"
RDS = _PREFIX + "config.route.v3.RouteConfiguration"
_HCM = _PREFIX + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
_ROUTABLE = frozenset({health_check_pb2.UNKNOWN, health_check_pb2.HEALTHY, health_check_pb2.DEGRADED})
_NACK_CODE = 13  # Envoy reports rejected config as INTERNAL

Endpoints = frozenset[str]
Predicate = Callable[["AdsClient"], bool]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One response as the client saw it. `endpoints`: for EDS the routable "ip:port" set of every load assignment
    in it (removed ones: empty); for CDS the EDS names dropped with their clusters; else None."""

    t: float  # time.monotonic() at receipt
    type_url: str
    version: str  # SotW version_info; delta system_version_info
    nonce: str
    resources: int
    removed: int  # delta removed_resources
    nbytes: int  # serialized size of the response
    nacked: bool
    endpoints: dict[str, Endpoints] | None


@functools.lru_cache(maxsize=65536)
def decode_cluster(raw: bytes) -> tuple[str, str | None]:
    """(cluster name, EDS name or None when the cluster is not of type EDS)."""
    cluster = cluster_pb2.Cluster.FromString(raw)
    if cluster.type != cluster_pb2.Cluster.EDS:
        return cluster.name, None
    return cluster.name, cluster.eds_cluster_config.service_name or cluster.name


@functools.lru_cache(maxsize=65536)
def decode_cla(raw: bytes) -> tuple[str, Endpoints]:
    """(cluster_name, routable endpoints as "ip:port"): health UNKNOWN, HEALTHY or DEGRADED, as Envoy routes."""
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(raw)
    endpoints = frozenset(
        f"{lb.endpoint.address.socket_address.address}:{lb.endpoint.address.socket_address.port_value}"
        for locality in cla.endpoints
        for lb in locality.lb_endpoints
        if lb.health_status in _ROUTABLE
    )
    return cla.cluster_name, endpoints


@functools.lru_cache(maxsize=16384)
def decode_listener(raw: bytes) -> tuple[str, tuple[str, ...]]:
    """(listener name, RDS route config names of its HTTP connection managers)."""
    listener = listener_pb2.Listener.FromString(raw)
    names: dict[str, None] = {}
    for chain in [*listener.filter_chains, listener.default_filter_chain]:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url == _HCM:
                hcm = hcm_pb2.HttpConnectionManager.FromString(network_filter.typed_config.value)
                if hcm.HasField("rds"):
                    names[hcm.rds.route_config_name] = None
    return listener.name, tuple(names)


@functools.cache
def _envoy_node_extras(wrapper: type[Message]) -> bytes:
    """What Envoy 1.40 adds to id/cluster (user agent, 516 extensions: about 60 KB), as a `node` field of wrapper."""
    node = base_pb2.Node(user_agent_name="envoy")
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    categories = ("envoy.filters.http", "envoy.filters.network", "envoy.matching.http.input", "envoy.upstreams")
    for i in range(516):
        category = categories[i % len(categories)]
        extension = node.extensions.add(name=f"{category}.extension_{i}", category=category)
        extension.type_urls.append(f"envoy.extensions.{category[6:]}.extension_{i}.v3.Config")
    return wrapper(node=node).SerializeToString()


def node_field(wrapper: type[Message], node_id: str, cluster: str, profile: str) -> bytes:
    """Serialized `node` field to append to every request (protobuf merges repeated message fields).

    profile "envoy": id, cluster and about the 61 KB an Envoy 1.40 sends; "minimal": id and cluster only."""
    own = wrapper(node=base_pb2.Node(id=node_id, cluster=cluster)).SerializeToString()
    return own + _envoy_node_extras(wrapper) if profile == "envoy" else own


class AdsClient(abc.ABC):
    """One simulated Envoy on one ADS stream, reconnecting; use SotwClient or DeltaClient."""

    _method = ""
    _wrapper: type[Message]

    def __init__(
        self,
        node_id: str,
        cluster: str = "simfleet",
        *,
        node_profile: str = "envoy",
        init_fetch_timeout: float = 15.0,
        max_failures: int = 20,
        node_on_first_request_only: bool = False,
    ) -> None:
        self.node_id = node_id
        self.messages_received = 0
        self.bytes_received = 0
        self.nacks_sent = 0
        self.streams = 0
        self.connected = False  # a response arrived on the current stream
        self.acked_versions: dict[str, str] = {}
        self.arrivals: list[Arrival] = []
        self.clusters: dict[str, str | None] = {}  # name -> EDS name (None: not EDS)
        self.endpoints: dict[str, Endpoints] = {}  # EDS name -> routable endpoints
        self.listeners: dict[str, tuple[str, ...]] = {}  # name -> RDS names
        self._node = node_field(self._wrapper, node_id, cluster, node_profile)
        self._node_first_only = node_on_first_request_only  # Envoy's set_node_on_first_message_only
        self._node_sent = False  # on the current stream
        self._init_fetch_timeout = init_fetch_timeout
        self._max_failures = max_failures
        self._nack: dict[str, str] = {}
        self._waiters: list[tuple[Predicate, asyncio.Future[float]]] = []
        self._pending: list[bytes] | None = None  # requests to write on the current stream, in order
        self._call: grpc.aio.StreamStreamCall | None = None
        self._changes: dict[str, Endpoints] = {}
        self._cds_seen = False
        self._init_done = False
        self._init_deadline: float | None = None
        self._stopped = False

    def nack_next(self, type_url: str, message: str) -> None:
        """Reject (and ignore) the next response of type_url with this error message."""
        self._nack[type_url] = message

    async def wait_for(self, predicate: Predicate, timeout: float) -> float | None:
        """Wait until predicate(self) holds; return the monotonic time of the arrival that made it hold (the latest
        arrival if it holds already), or None after timeout seconds."""
        if predicate(self):
            return self.arrivals[-1].t if self.arrivals else time.monotonic()
        entry = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(entry[1], timeout)
        except TimeoutError:
            return None
        finally:
            self._waiters.remove(entry)

    def stop(self) -> None:
        """End the stream and the run() loop."""
        self._stopped = True
        if self._call:
            self._call.cancel()

    async def run(self, channel: grpc.aio.Channel) -> None:
        """Keep a stream open until stop(), reconnecting with jittered back-off (at most max_failures in a row)."""
        method = channel.stream_stream(_ADS + self._method)  # no (de)serializers: bytes both ways
        failures = 0
        while not self._stopped and failures <= self._max_failures:
            failures = 0 if await self._stream_once(method) else failures + 1
            if not self._stopped:
                await asyncio.sleep(random.uniform(0, min(4.0, 0.5 * 2**failures)))

    async def _stream_once(self, method: grpc.aio.StreamStreamMultiCallable) -> bool:
        """Run one stream; True if it delivered a response. Only this coroutine writes to the call."""
        self.streams += 1
        self._pending = []
        self._node_sent = False
        if self._init_deadline is None:
            self._init_deadline = time.monotonic() + self._init_fetch_timeout
        self._on_connect()
        self._call = call = method()
        answered = False
        try:
            await self._flush(call)
            while (raw := await self._read(call)) is not grpc.aio.EOF:
                self.connected = answered = True
                self._receive(raw)
                await self._flush(call)
        except grpc.aio.AioRpcError:
            pass
        except asyncio.CancelledError:
            if not self._stopped:
                raise
        finally:
            self.connected = False
            self._pending = self._call = None
        return answered

    async def _read(self, call: grpc.aio.StreamStreamCall) -> Any:
        """The next response (or grpc.aio.EOF); while LDS waits for warm clusters, subscribe it at the deadline."""
        if self._init_done:
            return await call.read()
        read = asyncio.ensure_future(call.read())
        done, _ = await asyncio.wait({read}, timeout=self._init_deadline - time.monotonic())
        if not done:
            self._finish_init()
            await self._flush(call)
        return await read

    def _receive(self, raw: bytes) -> None:
        arrived = time.monotonic()
        self.messages_received += 1
        self.bytes_received += len(raw)
        self.arrivals.append(self._handle(raw, arrived))
        self._changes = {}
        for predicate, future in self._waiters:
            if not future.done() and predicate(self):
                future.set_result(arrived)

    def _send(self, request: Message) -> None:
        """Queue a request (with the node) for the current stream; dropped when there is none."""
        if self._pending is not None:
            node = b"" if self._node_first_only and self._node_sent else self._node
            self._node_sent = True
            self._pending.append(request.SerializeToString() + node)

    async def _flush(self, call: grpc.aio.StreamStreamCall) -> None:
        while self._pending:
            await call.write(self._pending.pop(0))

    def _update_clusters(self, clusters: dict[str, str | None], removed: Iterable[str]) -> None:
        """Apply CDS, then subscribe EDS (dropping endpoints of EDS names no longer used)."""
        self.clusters.update(clusters)
        for name in removed:
            self.clusters.pop(name, None)
        eds_names = list(dict.fromkeys(name for name in self.clusters.values() if name is not None))
        for gone in self.endpoints.keys() - set(eds_names):
            del self.endpoints[gone]
            self._changes[gone] = frozenset()
        self._subscribe(EDS, eds_names)
        self._cds_seen = True
        self._check_init()

    def _update_endpoints(self, bodies: Iterable[bytes], removed: Iterable[str], wanted: Iterable[str]) -> None:
        """Apply EDS for the watched names."""
        wanted = set(wanted)
        for raw in bodies:
            name, endpoints = decode_cla(raw)
            if name in wanted:
                self.endpoints[name] = self._changes[name] = endpoints
        for name in removed:
            if self.endpoints.pop(name, None) is not None:
                self._changes[name] = frozenset()
        self._check_init()

    def _update_listeners(self, listeners: dict[str, tuple[str, ...]], removed: Iterable[str]) -> None:
        """Apply LDS, then subscribe RDS."""
        self.listeners.update(listeners)
        for name in removed:
            self.listeners.pop(name, None)
        self._subscribe(RDS, list(dict.fromkeys(name for names in self.listeners.values() for name in names)))

    def _check_init(self) -> None:
        if not self._init_done and self._cds_seen:
            if all(name in self.endpoints for name in self.clusters.values() if name is not None):
                self._finish_init()

    def _finish_init(self) -> None:
        """Cluster manager initialised (or initial fetch timed out): subscribe LDS."""
        if not self._init_done:
            self._init_done = True
            self._subscribe_lds()

    @abc.abstractmethod
    def _on_connect(self) -> None:
        """Queue the first requests of a new stream."""

    @abc.abstractmethod
    def _handle(self, raw: bytes, arrived: float) -> Arrival:
        """Decode, apply and answer (ACK/NACK) one response."""

    @abc.abstractmethod
    def _subscribe(self, type_url: str, names: list[str]) -> None:
        """Watch exactly these names of a by-name type (EDS, RDS)."""

    @abc.abstractmethod
    def _subscribe_lds(self) -> None:
        """Start the wildcard LDS watch."""


class SotwClient(AdsClient):
    """State-of-the-world ADS (StreamAggregatedResources)."""

    _method = "StreamAggregatedResources"
    _wrapper = discovery_pb2.DiscoveryRequest

    def __init__(self, node_id: str, cluster: str = "simfleet", **options: Any) -> None:
        super().__init__(node_id, cluster, **options)
        self._names: dict[str, list[str]] = {}  # type -> names watched ([] for the wildcard CDS/LDS), in order
        self._version: dict[str, str] = {}  # last version_info taken
        self._nonce: dict[str, str] = {}  # last nonce received on this stream

    def _on_connect(self) -> None:
        self._nonce.clear()
        self._names.setdefault(CDS, [])
        for type_url in self._names:
            self._request(type_url)

    def _request(self, type_url: str, error: status_pb2.Status | None = None) -> None:
        self._send(
            discovery_pb2.DiscoveryRequest(
                version_info=self._version.get(type_url, ""),
                resource_names=self._names.get(type_url, []),
                type_url=type_url,
                response_nonce=self._nonce.get(type_url, ""),
                error_detail=error,
            )
        )

    def _subscribe(self, type_url: str, names: list[str]) -> None:
        old = self._names.get(type_url)
        if (old is None and names) or (old is not None and set(old) != set(names)):
            self._names[type_url] = names
            self._request(type_url)

    def _subscribe_lds(self) -> None:
        self._names[LDS] = []
        self._request(LDS)

    def _handle(self, raw: bytes, arrived: float) -> Arrival:
        response = discovery_pb2.DiscoveryResponse.FromString(raw)
        type_url, version = response.type_url, response.version_info
        self._nonce[type_url] = response.nonce
        message = self._nack.pop(type_url, None)
        names = self._names.get(type_url)
        if message is not None:
            self.nacks_sent += 1
            self._request(type_url, status_pb2.Status(code=_NACK_CODE, message=message))
        elif names is None or (not names and type_url in (EDS, RDS)):  # unwatched type
            if response.resources:
                self._request(type_url)
            else:
                self._version[type_url] = version
        else:
            self._apply(type_url, [resource.value for resource in response.resources])
            self._version[type_url] = self.acked_versions[type_url] = version
            self._request(type_url)
        return Arrival(
            arrived, type_url, version, response.nonce, len(response.resources), 0, len(raw),
            message is not None, self._changes or None,
        )  # fmt: skip

    def _apply(self, type_url: str, bodies: list[bytes]) -> None:
        if type_url == CDS:
            clusters = dict(map(decode_cluster, bodies))
            self._update_clusters(clusters, self.clusters.keys() - clusters.keys())
        elif type_url == EDS:
            self._update_endpoints(bodies, (), self._names[EDS])
        elif type_url == LDS:
            listeners = dict(map(decode_listener, bodies))
            self._update_listeners(listeners, self.listeners.keys() - listeners.keys())


class DeltaClient(AdsClient):
    """Incremental ADS (DeltaAggregatedResources)."""

    _method = "DeltaAggregatedResources"
    _wrapper = discovery_pb2.DeltaDiscoveryRequest

    def __init__(self, node_id: str, cluster: str = "simfleet", **options: Any) -> None:
        super().__init__(node_id, cluster, **options)
        self._subs: dict[str, set[str]] = {}  # type -> names subscribed (empty for the wildcard CDS/LDS)
        self.resource_versions: dict[str, dict[str, str]] = {}  # type -> name -> version held

    def _on_connect(self) -> None:
        self._subs.setdefault(CDS, set())
        for type_url, names in self._subs.items():
            if names or type_url in (CDS, LDS):
                self._send(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=type_url,
                        resource_names_subscribe=sorted(names),
                        initial_resource_versions=self.resource_versions.get(type_url, {}),
                    )
                )

    def _subscribe(self, type_url: str, names: list[str]) -> None:
        old, new = self._subs.get(type_url, set()), set(names)
        self._subs[type_url] = new
        versions = self.resource_versions.setdefault(type_url, {})
        for name in old - new:
            versions.pop(name, None)
        if old != new:
            self._send(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url,
                    resource_names_subscribe=sorted(new - old),
                    resource_names_unsubscribe=sorted(old - new),
                )
            )

    def _subscribe_lds(self) -> None:
        self._subs[LDS] = set()
        self._send(discovery_pb2.DeltaDiscoveryRequest(type_url=LDS))

    def _handle(self, raw: bytes, arrived: float) -> Arrival:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        type_url = response.type_url
        message = self._nack.pop(type_url, None)
        error = None
        if message is not None:
            self.nacks_sent += 1
            error = status_pb2.Status(code=_NACK_CODE, message=message)
        else:
            self._apply(response)
            self.acked_versions[type_url] = response.system_version_info
        ack = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce, error_detail=error)
        self._send(ack)
        return Arrival(
            arrived, type_url, response.system_version_info, response.nonce, len(response.resources),
            len(response.removed_resources), len(raw), message is not None, self._changes or None,
        )  # fmt: skip

    def _apply(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        type_url, removed = response.type_url, list(response.removed_resources)
        versions = self.resource_versions.setdefault(type_url, {})
        bodies: dict[str, bytes] = {}
        for resource in response.resources:
            versions[resource.name] = resource.version
            if resource.HasField("resource"):  # else a TTL heartbeat
                bodies[resource.name] = resource.resource.value
        for name in removed:
            versions.pop(name, None)
        if type_url == CDS:
            self._update_clusters({name: decode_cluster(raw)[1] for name, raw in bodies.items()}, removed)
        elif type_url == EDS:
            self._update_endpoints(bodies.values(), removed, self._subs.get(EDS, ()))
        elif type_url == LDS:
            self._update_listeners({name: decode_listener(raw)[1] for name, raw in bodies.items()}, removed)
