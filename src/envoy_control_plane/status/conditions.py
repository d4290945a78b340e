"""Status conditions of every listener the control plane knows: what the world rejected, folded with what the xDS
streams learned from the Envoys.

A sink: this module reads the world, the sources' records of invalid objects, the snapshot cache and the streams'
per-resource ACK/NACK knowledge, and changes none of them. /debug/listeners shows its result, and the Kubernetes status
writer sends it back to the cluster each object came from.

- `Accepted`: True; or False with reason InvalidSpec (the source could not parse the object: its last valid version,
  if any, stays in effect), PortConflict or NameConflict (the newer of two listeners on one node asking for one port or
  one Envoy listener name; the message names the older), SecretNotFound or SecretInvalid (a Secret its tls names
  cannot be served, so the listener is held back), SecretsNotServed (TLS listeners are not served at all: see
  xds.insecure_secrets). A listener served with the last good version of a Secret that has gone bad stays True, and
  the message says so.
- `Programmed`: True once at least one Envoy of the node has ACKed a version containing the listener; False (reason
  Rejected) with Envoy's message when an Envoy NACKed the listener's current version; False (NotAccepted) when the
  listener is not sent at all; Unknown while no Envoy of the node is connected (NoEnvoy) or none has answered yet
  (Pending).
- `endpoints`: the pods behind the listener (its targetcluster for egress, its rbacallowcluster for ingress).

A state-of-the-world NACK rejects a whole push: it is held against every listener whose version in that push differs
from what the Envoy had ACKed, narrowed to the listeners Envoy's message names when it names any.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..model import EgressListener, IngressListener, Listener, ObjectRef
from ..sources.status import InvalidObject, SourceStatus
from ..state import Rejection, SourceRef, World, listener_name, used_cluster
from ..text import clip
from ..translate.node import ListenerProblem
from ..xds.cache import SnapshotCache
from ..xds.streams import StreamRegistry, TypeStatus
from ..xds.streams import changes as streams_changes
from ..xds.types import LISTENER

ACCEPTED, PROGRAMMED = "Accepted", "Programmed"
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
MESSAGE_LIMIT = 1024  # a condition message, Envoy's NACK text included
_NO_LDS = TypeStatus()  # a stream that has not asked for LDS (made once: a new TypeStatus counts as a change)


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # True, False or Unknown
    reason: str  # CamelCase, as Kubernetes conditions have it
    message: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class ListenerStatus:
    """One listener object of one source, and its conditions."""

    source: str
    ref: ObjectRef
    node: str | None
    port: int | None
    endpoints: int
    generation: int  # metadata.generation of the spec these conditions describe (0 when unknown)
    conditions: tuple[Condition, ...]

    @property
    def key(self) -> SourceRef:
        return (self.source, self.ref)

    def condition(self, type_: str) -> Condition:
        return next(c for c in self.conditions if c.type == type_)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.ref.kind,
            "namespace": self.ref.namespace,
            "name": self.ref.name,
            "node": self.node,
            "port": self.port,
            "endpoints": self.endpoints,
            "conditions": [c.to_json() for c in self.conditions],
        }


def listener_statuses(
    world: World,
    sources: Iterable[SourceStatus],
    cache: SnapshotCache,
    streams: StreamRegistry,
    problems: Iterable[ListenerProblem] = (),
) -> list[ListenerStatus]:
    """Every listener object any source knows (valid, rejected or invalid), sorted by source, kind, namespace, name.
    `problems` are the controller's: listeners held back (or degraded) by their Secrets."""
    listeners = {key: obj for key, obj in world.objects().items() if isinstance(obj, IngressListener | EgressListener)}
    invalid = {(s.name, ref): record for s in sources for ref, record in s.invalid.items()}
    nodes = {listener.spec.nodename for listener in listeners.values()}
    rejections = {r.key: r for node in nodes for r in world.listeners(node).rejected}
    secret_problems = {(p.source, p.listener.ref): p for p in problems}
    lds_by_node = _lds_by_node(streams)
    result = []
    for key in sorted(listeners.keys() | invalid.keys()):
        listener, record = listeners.get(key), invalid.get(key)
        problem = secret_problems.get(key)
        accepted = _accepted(rejections.get(key), record, problem, kept=listener is not None)
        if listener is None:
            assert record is not None
            programmed = Condition(PROGRAMMED, FALSE, "NotAccepted", "not sent to any Envoy: the spec is invalid")
            node, port, endpoints, generation = record.node, record.port, 0, record.generation
        else:
            node, port = listener.spec.nodename, listener.spec.listenport
            cluster = used_cluster(listener)
            endpoints = len(world.endpoints(cluster)) if cluster else 0
            generation = record.generation if record is not None else listener.generation
            if key in rejections or (problem is not None and problem.held_back):
                programmed = Condition(PROGRAMMED, FALSE, "NotAccepted", "not sent to any Envoy: see Accepted")
            else:
                programmed = _programmed(listener, cache, lds_by_node.get(node, []))
        result.append(ListenerStatus(key[0], key[1], node, port, endpoints, generation, (accepted, programmed)))
    return result


def inputs_version(
    world_changes: int,
    sources: Iterable[SourceStatus],
    cache: SnapshotCache,
    problems: Iterable[ListenerProblem] = (),
) -> tuple[object, ...]:
    """What listener_statuses() reads, summed up cheaply: while this value stays equal, so do the statuses.
    `world_changes` counts the World's changes (Controller.world_changes); the streams' knowledge is counted by
    xds.streams.changes(); the sources' invalid objects and the controller's problems are few, and copied."""
    invalid = [(s.name, dict(s.invalid)) for s in sources]
    return world_changes, cache.changes, streams_changes(), invalid, list(problems)


def _lds_by_node(streams: StreamRegistry) -> dict[str, list[TypeStatus]]:
    """Each connected node's streams' LDS status (a stream that has not asked for LDS yet counts, with nothing)."""
    return {
        node: [info.types.get(LISTENER) or _NO_LDS for info in infos]
        for node, infos in streams.by_node().items()
        if node
    }


def _accepted(
    rejection: Rejection | None, record: InvalidObject | None, problem: ListenerProblem | None, kept: bool
) -> Condition:
    if record is not None:
        tail = " (its last valid version stays in effect)" if kept else ""
        return Condition(ACCEPTED, FALSE, "InvalidSpec", clip(record.message, MESSAGE_LIMIT - len(tail)) + tail)
    if rejection is not None:
        return Condition(ACCEPTED, FALSE, rejection.reason, clip(rejection.message, MESSAGE_LIMIT))
    if problem is not None and problem.held_back:
        return Condition(ACCEPTED, FALSE, problem.reason or "SecretInvalid", clip(problem.message, MESSAGE_LIMIT))
    message = "valid, and nothing else on its node asks for its port or name"
    if problem is not None:
        message = clip(f"{message}; but {problem.message}", MESSAGE_LIMIT)
    return Condition(ACCEPTED, TRUE, "Accepted", message)


def _programmed(listener: Listener, cache: SnapshotCache, lds: list[TypeStatus]) -> Condition:
    node, name = listener.spec.nodename, listener_name(listener)
    resource = cache.get(node).of_type(LISTENER).get(name)
    if not lds:
        return Condition(PROGRAMMED, UNKNOWN, "NoEnvoy", f"no Envoy of node {clip(node)} is connected")
    if resource is None:
        return Condition(PROGRAMMED, UNKNOWN, "Pending", f"not yet in node {clip(node)}'s configuration")
    version = resource.version
    if any(s.acked_resources.get(name) == version for s in lds):
        return Condition(PROGRAMMED, TRUE, "Programmed", f"an Envoy of node {clip(node)} runs it")
    for status in lds:
        if status.rejected_resources.get(name) == version and _blamed(name, status):
            message = clip((status.last_nack or "").strip(), MESSAGE_LIMIT - 60)
            return Condition(PROGRAMMED, FALSE, "Rejected", f"an Envoy of node {clip(node)} rejected it: {message}")
    if any(name in s.acked_resources for s in lds):
        return Condition(PROGRAMMED, TRUE, "Programmed",
                         f"an Envoy of node {clip(node)} runs an earlier version; the current one is on its way")
    return Condition(PROGRAMMED, UNKNOWN, "Pending", f"sent to node {clip(node)}, waiting for an Envoy's answer")


def _blamed(name: str, status: TypeStatus) -> bool:
    """Whether the last NACK concerns this listener: every rejected one, unless Envoy's message names some of them."""
    named = [n for n in status.rejected_resources if _names(status.last_nack or "", n)]
    return name in named if named else True


def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", message) is not None
