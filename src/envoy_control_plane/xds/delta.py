"""Incremental (delta) ADS: one stream's protocol, from DeltaDiscoveryRequests and snapshots to responses.

What the client has is tracked per type as name -> version (the resource's content hash, the same on every replica
and after a restart). Each push carries only what differs from that: changed or missing resources in `resources`,
names the client has and should not keep in `removed_resources`.

The rules (see XDS_PROTOCOL.md and Envoy's "Incremental xDS" protocol section), in the order this module applies them:
- The node is taken from the stream's first request and kept.
- The first request of a type on a stream may carry `initial_resource_versions`: that is what the client has (a
  reconnect); it is ignored on later requests. Names it declares at our version are not sent again, names it
  declares that we no longer have are sent in `removed_resources`, so a reconnect where nothing changed sends nothing.
- Wildcard: for CDS and LDS, a first request with empty subscribe and unsubscribe lists is a wildcard subscription
  (the legacy form), and so is "*" in `resource_names_subscribe` (for any type); "*" in `resource_names_unsubscribe`
  leaves the wildcard (the client drops what it had only through it; nothing is sent). Other names are subscribed
  and unsubscribed one by one.
- Subscription changes are honoured whatever the nonce: a stale nonce only means the request ACKs or NACKs nothing.
- A request whose response_nonce is the type's response in flight is its ACK, or its NACK when error_detail is set.
  The client's versions are committed on ACK, not on send. A NACK is logged (node, type, nonce, Envoy's message),
  counted in `metrics.nacks` and kept in the stream's TypeStatus for /debug/nodes. Envoy applies the resources of
  a delta response it can and rejects the others by name ("Error adding/updating listener(s) NAME: reason"): the
  named ones are rejected (the client keeps what it had), the others are committed as applied. When the message
  names none of them, what the client has of each is unknown. Either way a rejected (or unknown) resource is not
  sent again until it changes, so a bad resource cannot make a NACK loop, and is sent on its next change whatever
  that version is (back to one the client had before, too), so the client always converges.
- No response is waited for longer than the stream's ack_timeout (stream.py): after that its resources count as
  unknown to the client, like those of a NACK that names nothing, and the other types go ahead.
- Every newly subscribed name is answered, even if we believe the client has it (the protocol requires it: the client
  may have dropped it): with the resource, or in `removed_resources` when we do not have it, so Envoy never waits out
  its initial fetch timeout for a name we do not know. Unsubscribing a name while a wildcard is active is answered
  too (the resource if the wildcard covers it, else its removal), as the protocol requires; other unsubscriptions
  need no answer.
- Empty responses. Envoy completes the initialisation of a type on its first response, and for delta an empty
  response (no resources, no removals) is valid and does that. So a wildcard subscription from a client that declares
  it has nothing (a first connection, or a reconnect before anything arrived) is answered even when there is nothing
  to send; a reconnecting client that declares resources has had a response for the type already, and gets nothing
  when nothing changed. A named subscription is always answered through the rule above.
- Make-before-break: one response per type in flight, in the order of ordering.py (EDS may follow an unanswered
  CDS response, nothing else passes an unanswered type). After a CDS response carrying an EDS cluster, that cluster's
  ClusterLoadAssignment is sent again even if unchanged (Envoy finishes warming an updated cluster only on a new EDS
  response; tests/e2e/test_delta.py checks both against Envoy 1.40). Removals last: a cluster is not removed while a
  listener the client has (ACKed or in flight) routes to it, nor an endpoint assignment while a cluster the client has
  uses it, nor a secret while a listener or cluster the client has names it; when the client declared a holder we
  cannot see into (a reconnect with a version the cache cannot recall), the removals it could need wait until that
  one is replaced. On a reconnect Envoy re-sends CDS before LDS: removals also wait until the client has requested
  their holder types (listeners for clusters and secrets, clusters for endpoints) and so declared what it runs, for
  at most ack_timeout (a client may not use LDS).
- Until the world is complete (SnapshotCache.complete: every source loaded once), names the client declared on its
  first request are not removed: they may be missing only from a source that has not loaded. Additions and updates
  flow; the removals follow once the cache says the world is complete.
- Every resource's bytes are the shared `Resource.body`, written into each response as they are (wire.py).
- `system_version_info` (debugging only, per the protocol) is the version of the set the client has once it applies
  the response, computed like `Snapshot.version`: when the client has everything, it equals the snapshot's version
  of the type, so /debug/nodes `acked_version` compares with /debug/snapshot as in SotW.

Not supported: aliases, resource locators (dynamic parameters), TTLs; none is used by Envoy's ADS for these types.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from ..text import clip
from .ordering import HOLDERS, may_send
from .resource import Resource, content_hash
from .stream import MAX_NAMES, ProtocolError, Stream
from .streams import TypeStatus
from .types import CLUSTER, ENDPOINT, WILDCARD_TYPES, short
from .wire import delta_response

log = logging.getLogger(__name__)

WILDCARD = "*"
_UNKNOWN = ""  # the version of a resource the client may or may not have applied: any version we send differs
_UNSET = object()


class _Everything:
    def __contains__(self, name: object) -> bool:
        return True


_EVERYTHING = _Everything()


@dataclass
class _InFlight:
    nonce: str
    sent: dict[str, Resource]
    removed: tuple[str, ...]
    after: dict[str, str]  # what the client has once it applies all of it (name -> version), and its version
    version: str


@dataclass
class _TypeState:
    status: TypeStatus = field(default_factory=TypeStatus)
    wildcard: bool = False
    subscribed: set[str] = field(default_factory=set)  # explicit names, "*" aside
    known: dict[str, str] = field(default_factory=dict)  # what the client has: name -> version (ACKed or declared)
    content: dict[str, Resource] = field(default_factory=dict)  # the Resource behind each known version we can see
    fresh: set[str] = field(default_factory=set)  # names to answer whatever the client has
    rejected: dict[str, str | None] = field(default_factory=dict)  # name -> version (None: removal) NACKed
    declared: set[str] = field(default_factory=set)  # names of initial_resource_versions: not removed until complete
    # For a name whose version the client has is unknown (_UNKNOWN): every Resource it may have, when we know them all.
    possible: dict[str, tuple[Resource, ...]] = field(default_factory=dict)
    answer: bool = False  # send a response even when empty
    in_flight: _InFlight | None = None

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.subscribed

    def forget(self, name: str) -> None:
        self.known.pop(name, None)
        self.content.pop(name, None)
        self.possible.pop(name, None)
        self.fresh.discard(name)
        self.rejected.pop(name, None)


class DeltaStream(Stream[DeltaDiscoveryRequest, bytes, _TypeState]):
    """Responses are serialised `DeltaDiscoveryResponse`s (wire.py)."""

    mode = "delta"

    def _new_state(self) -> _TypeState:
        return _TypeState()

    # ---- requests ------------------------------------------------------------------------------------------------

    def _on_request(self, request: DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        first = type_url not in self._types
        state = self._state(type_url)
        subscribe = list(request.resource_names_subscribe)
        unsubscribe = list(request.resource_names_unsubscribe)
        if len(request.initial_resource_versions) > MAX_NAMES:
            raise ProtocolError(f"more than {MAX_NAMES} initial_resource_versions")
        log.debug(
            "node %s %s: request nonce %s, subscribe %s, unsubscribe %s, initial versions %d%s",
            self._node,
            short(type_url),
            clip(request.response_nonce),
            _names(subscribe),
            _names(unsubscribe),
            len(request.initial_resource_versions),
            ", error" if request.HasField("error_detail") else "",
        )

        if first:
            self._on_first(type_url, state, request, subscribe, unsubscribe)
        elif request.initial_resource_versions:
            log.debug("node %s %s: initial_resource_versions ignored (not a first request)", self._node,
                      short(type_url))  # fmt: skip
        if request.response_nonce:
            flight = state.in_flight
            if flight is not None and request.response_nonce == flight.nonce:
                state.in_flight = None
                self._answered(type_url)
                if request.HasField("error_detail"):
                    self._on_nack(type_url, state, flight, request)
                else:
                    self._on_ack(type_url, state, flight)
            else:
                log.debug("node %s %s: stale nonce %s (subscription changes still apply)", self._node,
                          short(type_url), clip(request.response_nonce))  # fmt: skip
        self._on_subscriptions(type_url, state, first, subscribe, unsubscribe)
        if len(state.subscribed) > MAX_NAMES:
            raise ProtocolError(f"more than {MAX_NAMES} names subscribed to {short(type_url)}")

    def _on_subscriptions(
        self, type_url: str, state: _TypeState, first: bool, subscribe: list[str], unsubscribe: list[str]
    ) -> None:
        for name in subscribe:
            if name == WILDCARD:
                if state.wildcard and not first:  # asked again: the client may have dropped what it had
                    state.fresh.update(self._current(type_url))
                elif not first or not state.known:
                    state.answer = True
                state.wildcard = True
            else:
                state.subscribed.add(name)
                if not first or name not in state.known:
                    state.fresh.add(name)  # answered even if we think the client has it
        for name in unsubscribe:
            if name == WILDCARD:
                state.wildcard = False
                for known in [n for n in state.known if n not in state.subscribed]:
                    state.forget(known)
            elif name in state.subscribed:
                state.subscribed.discard(name)
                if state.wildcard:
                    state.fresh.add(name)  # the wildcard may still cover it: tell the client whether to keep it
                else:
                    state.forget(name)
            elif not state.wildcard:
                state.forget(name)  # a phantom unsubscription: nothing to answer
        if first:
            for name in [n for n in state.known if not state.covers(n)]:
                state.forget(name)  # declared but not subscribed to: not ours to follow
            if state.known:
                state.status.acked_version = _version(state.known)
                state.status.acked_resources = dict(state.known)
        state.status.names = frozenset(state.subscribed)
        state.status.wildcard = state.wildcard

    def _on_first(
        self,
        type_url: str,
        state: _TypeState,
        request: DeltaDiscoveryRequest,
        subscribe: list[str],
        unsubscribe: list[str],
    ) -> None:
        """The first request of a type: what the client declares it has, and the legacy wildcard."""
        state.known = dict(request.initial_resource_versions)
        state.declared = set(state.known)
        for name, version in state.known.items():  # what we can see into: now, or a snapshot of a moment ago
            resource = self._cache.recall_resource(self._info.node, type_url, name, version)
            if resource is not None:
                state.content[name] = resource
        if state.known:
            self._reconnecting()
        if type_url in WILDCARD_TYPES and not subscribe and not unsubscribe:
            state.wildcard = True
            state.answer = not state.known

    def _on_ack(self, type_url: str, state: _TypeState, flight: _InFlight) -> None:
        for name, resource in flight.sent.items():
            self._applied(state, name, resource)
        for name in flight.removed:
            self._applied(state, name, None)
        # Usually the client now has exactly what the response said it would: its version was computed then.
        state.status.acked_version = flight.version if state.known == flight.after else _version(state.known)
        state.status.acked_resources = dict(state.known)
        state.status.rejected_resources = {
            n: v for n, v in state.status.rejected_resources.items() if n not in flight.sent and n not in flight.removed
        }
        self._count(self._metrics.acks, type_url)
        log.debug("node %s %s: ACK %s", self._node, short(type_url), flight.nonce)

    def _on_nack(
        self, type_url: str, state: _TypeState, flight: _InFlight, request: DeltaDiscoveryRequest
    ) -> None:
        """Envoy applies the resources of a delta response it can and rejects the others, naming them in its message
        ("Error adding/updating listener(s) NAME: reason, ..."). The named ones are rejected: the client keeps what
        it had, and the rejected version is not sent again. The others were applied. When the message names none of
        them, which were applied is unknown: each is held back like a rejected one, and sent again on its next change
        (whatever that version is, even one the client had before)."""
        message = self._count_nack(type_url, state.status, request.error_detail.message)
        named = _named_in(request.error_detail.message, [*flight.sent, *flight.removed])
        for name, resource in flight.sent.items():
            if named and name not in named:
                self._applied(state, name, resource)
            else:
                self._rejected(state, name, resource, sure=bool(named))
        for name in flight.removed:
            if named and name not in named:
                self._applied(state, name, None)
            else:
                self._rejected(state, name, None, sure=bool(named))
        state.status.acked_resources = dict(state.known)
        state.status.rejected_resources = {
            name: resource.version for name, resource in flight.sent.items() if not named or name in named
        }
        log.warning(
            "node %s rejected %s nonce %s (%s; %s): %s",
            self._node,
            short(type_url),
            flight.nonce,
            _describe(flight.sent, flight.removed),
            f"rejected {_names(sorted(named))}, the rest applied" if named else "held back until they change",
            message,
        )

    def _applied(self, state: _TypeState, name: str, resource: Resource | None) -> None:
        """The client has this resource now (None: it removed it)."""
        state.rejected.pop(name, None)
        state.possible.pop(name, None)
        if resource is None or not state.covers(name):
            state.known.pop(name, None)
            state.content.pop(name, None)
        else:
            state.known[name] = resource.version
            state.content[name] = resource

    def _rejected(self, state: _TypeState, name: str, resource: Resource | None, sure: bool) -> None:
        """Not sent again until it changes; when not `sure`, what the client has of it is unknown from now on."""
        if not state.covers(name):
            state.forget(name)  # unsubscribed meanwhile: no longer ours to follow
            return
        state.rejected[name] = resource.version if resource is not None else None
        if not sure:
            # It has what it had or what was sent (None: a removal): both are known if we could see what it had.
            had = state.content.get(name)
            if had is not None or name not in state.known:
                state.possible[name] = tuple(r for r in (had, resource) if r is not None)
            state.known[name] = _UNKNOWN
            state.content.pop(name, None)

    def _give_up(self, type_url: str) -> None:
        # Unanswered: whether the client applied it is unknown, as after a NACK that names nothing.
        state = self._types[type_url]
        flight, state.in_flight = state.in_flight, None
        if flight is not None:
            for name, resource in flight.sent.items():
                self._rejected(state, name, resource, sure=False)
            for name in flight.removed:
                self._rejected(state, name, None, sure=False)

    def _current(self, type_url: str) -> Mapping[str, Resource]:
        return self._snapshot.of_type(type_url) if self._snapshot is not None else {}

    # ---- responses -----------------------------------------------------------------------------------------------

    def _responses(self) -> Iterator[bytes]:
        unanswered: list[str] = []
        for type_url in self._order:
            state = self._types.get(type_url)
            if state is None:
                continue
            if state.in_flight is not None:
                unanswered.append(type_url)
                continue
            if not may_send(type_url, unanswered):
                return  # make-before-break (ordering.py)
            updates, removals = self._changes(type_url, state)
            if updates or removals or state.answer:
                yield self._response(type_url, state, updates, removals)
                unanswered.append(type_url)

    def _changes(self, type_url: str, state: _TypeState) -> tuple[list[Resource], list[str]]:
        """What the client lacks (resources) and has but should not keep (names), with removals held back."""
        current = self._current(type_url)
        names = state.fresh | state.subscribed | state.known.keys()
        if state.wildcard:
            names |= current.keys()
        updates: list[Resource] = []
        removals: list[str] = []
        needed: Container[str] | None = None  # computed on the first removal
        for name in sorted(names):
            if not state.covers(name):
                continue
            resource = current.get(name)
            want = resource.version if resource is not None else None
            if name not in state.fresh:
                if want == state.known.get(name) or state.rejected.get(name, _UNSET) == want:
                    continue
                if resource is None:
                    if name in state.declared and not self._cache.complete:
                        continue  # maybe only not loaded yet: the client keeps it until the world is complete
                    if needed is None:
                        needed = self._needed(type_url)
                    if name in needed:
                        continue
            if resource is not None:
                updates.append(resource)
            else:
                removals.append(name)
        return updates, removals

    def _needed(self, type_url: str) -> Container[str]:
        """Names of this type that a resource the client holds (or is being sent) needs: they are not removed yet."""
        needed: set[str] = set()
        for holder_type in HOLDERS.get(type_url, ()):
            holder = self._types.get(holder_type)
            if holder is None:  # on a reconnect, the client has not said yet what it runs of the holder type
                if self._types[type_url].declared and self._awaiting_holders():
                    return _EVERYTHING
                continue
            if any(
                n not in holder.possible and (n not in holder.content or holder.content[n].version != v)
                for n, v in holder.known.items()
            ):
                return _EVERYTHING  # the client has something we cannot see into: it may need anything
            holding: list[Resource] = [*holder.content.values(), *(r for rs in holder.possible.values() for r in rs)]
            if holder.in_flight is not None:
                holding = [*holding, *holder.in_flight.sent.values()]
            needed.update(name for resource in holding for name in resource.refs)
        return needed

    def _response(
        self, type_url: str, state: _TypeState, updates: list[Resource], removals: list[str]
    ) -> bytes:
        nonce = self._next_nonce()
        after = dict(state.known)
        for name in removals:
            after.pop(name, None)
        after.update((r.name, r.version) for r in updates)
        version = _version(after)
        state.in_flight = _InFlight(nonce, {r.name: r for r in updates}, tuple(removals), after, version)
        self._awaiting(type_url)
        state.fresh.clear()
        state.answer = False
        state.status.nonce, state.status.sent_version = nonce, version
        if type_url == CLUSTER and ENDPOINT in self._types:
            endpoints = self._types[ENDPOINT]
            for resource in updates:
                for eds_name in resource.refs:  # a cluster's refs are the load assignments it subscribes to
                    if endpoints.covers(eds_name):
                        endpoints.fresh.add(eds_name)  # Envoy finishes warming an updated EDS cluster only on EDS
        size = sum(len(r.body) for r in updates)
        self._count(self._metrics.responses, type_url)
        self._count(self._metrics.response_bytes, type_url, size)
        if log.isEnabledFor(logging.DEBUG):  # _describe sorts and clips names
            log.debug(
                "node %s: sent %s nonce %s: %s (%d bytes), version %s",
                self._node,
                short(type_url),
                nonce,
                _describe(state.in_flight.sent, removals),
                size,
                version,
            )
        return delta_response(version, type_url, nonce, updates, removals)


def _version(versions: Mapping[str, str]) -> str:
    """The version of what a client has, computed like `version_of` so that it equals the snapshot's when in sync."""
    return content_hash(*sorted(f"{name}={version}" for name, version in versions.items()))


def _named_in(message: str, names: list[str], scan: int = 65_536) -> set[str]:
    """The names Envoy's error message mentions, each as a word of its own ("NAME: reason" in Envoy's lists)."""
    words = {w.strip("'\"`()[]{}").rstrip(":") for w in re.split(r"[\s,;]+", message[:scan])}
    return {name for name in names if name in words}


def _describe(sent: Mapping[str, Resource], removed: Iterable[str]) -> str:
    parts = []
    for what, names in (("", sorted(sent)), ("removed ", sorted(removed))):
        if names:
            parts.append(f"{what}{len(names)} {_names(names)}")
    return "; ".join(parts) or "empty"


def _names(names: list[str], limit: int = 5) -> str:
    """A few names, for a log line: each clipped and escaped (a client chooses them), and how many more."""
    shown = ", ".join(clip(name, 100) for name in names[:limit])
    return f"[{shown}" + (f" and {len(names) - limit} more]" if len(names) > limit else "]")
