"""State-of-the-world ADS: one stream's protocol, from requests and snapshots to responses.

The rules (see XDS_PROTOCOL.md) in the order this module applies them:
- the node is taken from the stream's first request and kept;
- a request whose response_nonce is not the last one sent for its type is stale and ignored;
- a request echoing the last nonce is an ACK, or a NACK when error_detail is set: a NACK is logged and counted, and
  the rejected version is not sent again; the next push waits for new content;
- a type is sent only when its version differs from what the client has (its version_info on a first request, else
  what we last sent), when it subscribed names it was not sent, or after a CDS push (a fresh EDS ends warming); a
  named type with no names subscribed gets nothing (Envoy does not ACK responses to an empty subscription);
- one response per type is in flight at a time, and a type waits while an earlier type of PUSH_ORDER is unanswered
  (make-before-break), with one exception: EDS does not wait for a CDS answer, because Envoy holds its CDS ACK until
  the new clusters have warmed, and an EDS cluster warms only on an EDS response. A cluster the client's listeners
  still use stays in CDS until the new LDS is ACKed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from .resource import Resource, version_of
from ..text import clip
from .stream import MAX_NAMES, ProtocolError, Stream
from .streams import TypeStatus
from .types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, WILDCARD_TYPES, label, short

log = logging.getLogger(__name__)


@dataclass
class _TypeState:
    status: TypeStatus = field(default_factory=TypeStatus)
    subscribed: bool = False
    pending: bool = False  # a response is out and neither ACKed nor NACKed
    force: bool = False  # answer even if the version did not change
    known_version: str | None = None  # what the client has or was last sent on this stream
    sent: dict[str, Resource] = field(default_factory=dict)
    acked: dict[str, Resource] = field(default_factory=dict)


class SotwStream(Stream[DiscoveryRequest, DiscoveryResponse, _TypeState]):
    mode = "sotw"

    def _new_state(self) -> _TypeState:
        return _TypeState()

    # ---- requests ------------------------------------------------------------------------------------------------

    def _on_request(self, request: DiscoveryRequest) -> None:
        type_url = request.type_url
        state = self._state(type_url)
        status = state.status
        if request.response_nonce:
            if request.response_nonce != status.nonce:
                log.debug("node %s %s: stale nonce %s ignored", self._node, short(type_url), clip(request.response_nonce))
                return
            state.pending = False
            if request.HasField("error_detail"):
                self._on_nack(type_url, state, request)
            else:
                status.acked_version = clip(request.version_info, 64)
                state.acked = state.sent
                status.acked_resources = {name: r.version for name, r in state.acked.items()}
                status.rejected_resources = {}
                self._metrics.acks.labels(label(type_url)).inc()
                log.debug("node %s %s: ACK %s", self._node, short(type_url), status.acked_version)
        elif not state.subscribed:
            # A new stream knows only what the client declares: if it already has our version, nothing is sent.
            state.known_version = status.acked_version = clip(request.version_info, 64)  # ours have 16 characters
            if self._snapshot is not None and request.version_info == self._snapshot.version(type_url):
                state.acked = dict(self._snapshot.of_type(type_url))
                status.acked_resources = {name: r.version for name, r in state.acked.items()}
        if len(request.resource_names) > MAX_NAMES:
            raise ProtocolError(f"more than {MAX_NAMES} resource names in one request")
        names = frozenset(request.resource_names)
        wildcard = type_url in WILDCARD_TYPES and (not names or "*" in names)
        if not wildcard and state.subscribed and names - status.names:
            state.force = True  # newly subscribed names are answered even when nothing changed
        state.subscribed = True
        status.names, status.wildcard = (frozenset(), True) if wildcard else (names, False)

    def _on_nack(self, type_url: str, state: _TypeState, request: DiscoveryRequest) -> None:
        status = state.status
        message = self._count_nack(type_url, status, request.error_detail.message)
        status.rejected_resources = {
            name: r.version for name, r in state.sent.items() if status.acked_resources.get(name) != r.version
        }
        log.warning(
            "node %s rejected %s version %s (keeps %s): %s",
            self._node,
            short(type_url),
            status.sent_version,
            clip(request.version_info, 64) or "nothing",
            message,
        )

    # ---- responses -----------------------------------------------------------------------------------------------

    def _responses(self) -> Iterator[DiscoveryResponse]:
        order = list(PUSH_ORDER) + sorted(set(self._types) - set(PUSH_ORDER))
        cds_unanswered = False
        for type_url in order:
            state = self._types.get(type_url)
            if state is None or not state.subscribed:
                continue
            if cds_unanswered and type_url != ENDPOINT:
                return  # only EDS may pass an unanswered CDS
            if state.pending:
                if type_url == CLUSTER:
                    cds_unanswered = True  # Envoy ACKs CDS once its new clusters warm, which takes an EDS response
                    continue
                return  # later types wait until this one is answered
            if not state.status.wildcard and not state.status.names:
                state.force = False  # nothing subscribed: Envoy would not even ACK a response
                continue
            resources = self._resources(type_url, state)
            version = version_of(resources)
            if not state.force and version == state.known_version:
                continue
            yield self._response(type_url, state, version, resources)
            if type_url != CLUSTER:
                return
            cds_unanswered = True

    def _resources(self, type_url: str, state: _TypeState) -> list[Resource]:
        assert self._snapshot is not None
        current = self._snapshot.of_type(type_url)
        if not state.status.wildcard:
            return [current[name] for name in sorted(state.status.names) if name in current]
        resources = list(current.values())
        if type_url == CLUSTER and LISTENER in self._types:
            # Removals last: keep what the listeners the client runs (or was sent) route to, until it ACKs new ones.
            listeners = self._types[LISTENER]
            still_used = {ref for lds in (listeners.acked, listeners.sent) for r in lds.values() for ref in r.refs}
            resources += [state.sent[name] for name in sorted(still_used - current.keys()) if name in state.sent]
        return resources

    def _response(
        self, type_url: str, state: _TypeState, version: str, resources: list[Resource]
    ) -> DiscoveryResponse:
        nonce = self._next_nonce()
        state.pending, state.force, state.known_version = True, False, version
        state.sent = {r.name: r for r in resources}
        state.status.nonce, state.status.sent_version = nonce, version
        if type_url == CLUSTER:
            self._state(ENDPOINT).force = True  # envoy finishes warming an updated EDS cluster only on a new EDS
        size = sum(len(r.body) for r in resources)
        self._metrics.responses.labels(label(type_url)).inc()
        self._metrics.response_bytes.labels(label(type_url)).inc(size)
        log.info(
            "node %s: sent %s version %s (%d resources, %d bytes)",
            self._node,
            short(type_url),
            version,
            len(resources),
            size,
        )
        return DiscoveryResponse(
            version_info=version, resources=[r.to_any() for r in resources], type_url=type_url, nonce=nonce
        )
