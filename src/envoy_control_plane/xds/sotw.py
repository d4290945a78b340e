"""State-of-the-world ADS: one stream's protocol, from requests and snapshots to responses.

The rules (see XDS_PROTOCOL.md) in the order this module applies them:
- the node is taken from the stream's first request and kept;
- a request whose response_nonce is not the last one sent for its type is stale: it ACKs or NACKs nothing, but its
  subscription is the client's current one and is applied (Envoy unsubscribes from EDS with an older nonce);
- a request echoing the last nonce is an ACK, or a NACK when error_detail is set: a NACK is logged and counted, and
  the rejected version is not sent again; the next push waits for new content;
- a type is sent only when its version differs from what the client has (its version_info on a first request, else
  what we last sent), when it subscribed names it was not sent, or after a CDS push (a fresh EDS ends warming); a
  named type with no names subscribed gets nothing, and a response in flight to it is not waited for (Envoy does
  not answer responses for a type it no longer watches);
- one response per type is in flight at a time, in the make-before-break order of ordering.py (EDS may follow an
  unanswered CDS, nothing else passes an unanswered type). A cluster the client's listeners still use stays in CDS
  until the new LDS is ACKed;
- no wait lasts longer than the stream's ack_timeout (stream.py): then the response counts as the client's version,
  and the other types go ahead;
- a reconnecting client declares a version of LDS and CDS: when it is one the cache remembers (SnapshotCache.recall),
  we know what the client runs; cluster removals then wait until its listeners no longer need them, also while it
  has not yet asked for listeners (Envoy re-sends CDS first). Until the world is complete (every source loaded
  once), such a client's next LDS/CDS still carries all it runs, and one whose version we cannot recall gets no
  LDS/CDS at all (the full set would delete what the world has not loaded); first-time clients are answered as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from .resource import Resource, version_of
from ..text import clip
from .stream import MAX_NAMES, ProtocolError, Stream
from .streams import TypeStatus
from .ordering import may_send
from .types import CLUSTER, ENDPOINT, LISTENER, WILDCARD_TYPES, short
from .wire import sotw_response

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
    # A wildcard type whose first request declared a version: the client runs config from before this stream, and
    # `unknown` while that version is not one the cache can recall (so what it runs is unknown until its next ACK).
    declared: bool = False
    unknown: bool = False


class SotwStream(Stream[DiscoveryRequest, bytes, _TypeState]):
    """Responses are serialised `DiscoveryResponse`s (wire.py)."""

    mode = "sotw"

    def _new_state(self) -> _TypeState:
        return _TypeState()

    # ---- requests ------------------------------------------------------------------------------------------------

    def _on_request(self, request: DiscoveryRequest) -> None:
        type_url = request.type_url
        state = self._state(type_url)
        status = state.status
        if request.response_nonce and request.response_nonce != status.nonce:
            # Superseded: it ACKs or NACKs nothing, but its subscription is the client's current one.
            log.debug("node %s %s: stale nonce %s (subscription changes still apply)", self._node, short(type_url),
                      clip(request.response_nonce))  # fmt: skip
        elif request.response_nonce:
            self._settle(type_url, state)
            if request.HasField("error_detail"):
                self._on_nack(type_url, state, request)
            else:
                status.acked_version = clip(request.version_info, 64)
                state.acked, state.unknown = state.sent, False
                status.acked_resources = {name: r.version for name, r in state.acked.items()}
                status.rejected_resources = {}
                self._count(self._metrics.acks, type_url)
                log.debug("node %s %s: ACK %s", self._node, short(type_url), status.acked_version)
        elif not state.subscribed:
            # A new stream knows only what the client declares: if it already has our version, nothing is sent.
            state.known_version = status.acked_version = clip(request.version_info, 64)  # ours have 16 characters
            had = self._recall(type_url, request.version_info)
            if had is not None:
                state.acked = dict(had)
                status.acked_resources = {name: r.version for name, r in state.acked.items()}
            if request.version_info and type_url in WILDCARD_TYPES:
                state.declared, state.unknown = True, had is None
                self._reconnecting()
        if len(request.resource_names) > MAX_NAMES:
            raise ProtocolError(f"more than {MAX_NAMES} resource names in one request")
        names = frozenset(request.resource_names)
        wildcard = type_url in WILDCARD_TYPES and (not names or "*" in names)
        if not wildcard and state.subscribed and names - status.names:
            state.force = True  # newly subscribed names are answered even when nothing changed
        state.subscribed = True
        status.names, status.wildcard = (frozenset(), True) if wildcard else (names, False)
        if not wildcard and not names and state.pending:
            # Envoy does not answer a response for a type it no longer watches: never wait for one.
            log.debug("node %s %s: unsubscribed from everything; not waiting for nonce %s", self._node,
                      short(type_url), status.nonce)  # fmt: skip
            self._settle(type_url, state)

    def _settle(self, type_url: str, state: _TypeState) -> None:
        """The response in flight was answered, or will not be: the type may send again, and stops blocking."""
        state.pending = False
        self._answered(type_url)

    def _give_up(self, type_url: str) -> None:
        # What was sent stays the version we believe the client has: the next change sends the whole set again.
        state = self._types[type_url]
        state.pending = state.unknown = False

    def _recall(self, type_url: str, version: str) -> Mapping[str, Resource] | None:
        """What a client that declares `version` on its first request has, when we know."""
        if not version or self._snapshot is None:
            return None
        if type_url in WILDCARD_TYPES:  # the whole set: this version or one the node had a moment ago
            return self._cache.recall(self._info.node, type_url, version)
        return self._snapshot.of_type(type_url) if version == self._snapshot.version(type_url) else None

    def _on_nack(self, type_url: str, state: _TypeState, request: DiscoveryRequest) -> None:
        status = state.status
        message = self._count_nack(type_url, status, request.error_detail.message)
        status.rejected_resources = {
            name: r.version for name, r in state.sent.items() if status.acked_resources.get(name) != r.version
        }
        log.warning(
            "node %s rejected %s version %s (the last version it accepted: %s): %s",
            self._node,
            short(type_url),
            status.sent_version,
            clip(request.version_info, 64) or "none",
            message,
        )

    # ---- responses -----------------------------------------------------------------------------------------------

    def _responses(self) -> Iterator[bytes]:
        unanswered: list[str] = []
        for type_url in self._order:
            state = self._types.get(type_url)
            if state is None or not state.subscribed:
                continue
            if not state.status.wildcard and not state.status.names:
                state.force = False  # nothing subscribed: Envoy would not even ACK a response
                continue
            if state.unknown and not self._cache.complete:
                continue  # the full set would delete what the world has not loaded yet: wait until it has
            if state.pending:
                unanswered.append(type_url)
                continue
            if not may_send(type_url, unanswered):
                return  # make-before-break (ordering.py)
            resources, version = self._resources(type_url, state)
            if not state.force and version == state.known_version:
                continue
            yield self._response(type_url, state, version, resources)
            unanswered.append(type_url)

    def _resources(self, type_url: str, state: _TypeState) -> tuple[list[Resource], str]:
        """What a response of the type would carry now, and its version.

        Called for every type on every request and new snapshot, so the usual case is cheap: when that is exactly
        the snapshot's set of the type, its version is the snapshot's (computed once per node and snapshot)."""
        assert self._snapshot is not None
        current = self._snapshot.of_type(type_url)
        if not state.status.wildcard:
            resources = [current[name] for name in sorted(state.status.names) if name in current]
        else:
            gone = state.sent.keys() - current.keys()
            if state.acked is not state.sent:
                gone |= state.acked.keys() - current.keys()
            kept = sorted(self._kept(type_url, state) & gone) if gone else []
            resources = [*current.values(), *(state.sent.get(name) or state.acked[name] for name in kept)]
        if len(resources) == len(current):  # the same names, so the same set
            return resources, self._snapshot.version(type_url)
        return resources, version_of(resources)

    def _kept(self, type_url: str, state: _TypeState) -> set[str]:
        """Names of a wildcard type the client has and we no longer do, that its next response must still carry.

        Until the world is complete, a reconnecting client keeps all it has. Removals last: a cluster stays while a
        listener the client runs (or was sent) uses it, and, on a reconnect, while the client has not yet said which
        listeners it runs, or runs ones we cannot see into (until it ACKs ours).
        """
        had = state.acked.keys() | state.sent.keys()
        if state.declared and not self._cache.complete:
            return set(had)
        if type_url != CLUSTER:
            return set()
        listeners = self._types.get(LISTENER)
        if listeners is None or not listeners.subscribed:
            return set(had) if state.declared and self._awaiting_holders() else set()
        if listeners.unknown:
            return set(had)
        return {ref for lds in (listeners.acked, listeners.sent) for r in lds.values() for ref in r.refs}

    def _response(
        self, type_url: str, state: _TypeState, version: str, resources: list[Resource]
    ) -> bytes:
        nonce = self._next_nonce()
        state.pending, state.force, state.known_version = True, False, version
        self._awaiting(type_url)
        state.sent = {r.name: r for r in resources}
        state.status.nonce, state.status.sent_version = nonce, version
        if type_url == CLUSTER:
            self._state(ENDPOINT).force = True  # envoy finishes warming an updated EDS cluster only on a new EDS
        size = sum(len(r.body) for r in resources)
        self._count(self._metrics.responses, type_url)
        self._count(self._metrics.response_bytes, type_url, size)
        log.debug(
            "node %s: sent %s version %s (%d resources, %d bytes)",
            self._node,
            short(type_url),
            version,
            len(resources),
            size,
        )
        return sotw_response(version, type_url, nonce, resources)
