"""The merged world: every object from every source, and what a change to it touches.

Sources (Kubernetes clusters, manifest files) call `upsert`, `delete` and `replace`. The world keeps the objects, the
endpoints of each Envoy cluster name (pod IPs merged across sources; one IP seen twice counts once), the listeners of
each node, and the indexes "which nodes use which cluster name" and "which nodes use which Secret". A listener's
Secrets are those of its own namespace and source. Each change records the nodes it touches; the controller takes
them with `take_dirty()` and rebuilds only those.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .metrics import Metrics
from .model import EgressListener, IngressListener, KubeObject, Listener, ObjectRef, Pod, Secret

log = logging.getLogger(__name__)

SourceRef = tuple[str, ObjectRef]  # (source name, object) identifies an object across sources

# A `replace` changing more objects than this logs each change at DEBUG and a summary at INFO.
LOG_EACH = 20


@dataclass(frozen=True)
class Rejection:
    """A listener the world does not send to Envoy, and why: `reason` is its Accepted condition's reason
    (PortConflict, NameConflict), `holder` the older listener that keeps what it asked for."""

    key: SourceRef
    reason: str
    message: str
    holder: SourceRef | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class NodeListeners:
    """The listeners a node gets, after conflicts were resolved, and those rejected."""

    accepted: tuple[Listener, ...]
    rejected: tuple[Rejection, ...]
    sources: tuple[str, ...] = ()  # the source of each accepted listener, in the same order


def listener_name(listener: Listener) -> str:
    """The Envoy listener name, as the original project named it."""
    prefix = "ingress" if isinstance(listener, IngressListener) else "egress"
    return f"{prefix}_{listener.ref.name}"


def used_cluster(listener: Listener) -> str | None:
    """The Envoy cluster name (pod annotation value) whose endpoints shape this listener's config."""
    if isinstance(listener, EgressListener):
        return listener.spec.targetcluster
    return listener.spec.allow_cluster


def used_secrets(source: str, listener: Listener) -> frozenset[SourceRef]:
    """The Secrets a listener's tls names: in its own namespace and source."""
    tls = listener.spec.tls
    if tls is None:
        return frozenset()
    return frozenset(secret_key(source, listener.ref.namespace, name) for name in {tls.secret, tls.ca_secret})


def secret_key(source: str, namespace: str, name: str) -> SourceRef:
    return source, ObjectRef("Secret", namespace, name)


class World:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._objects: dict[SourceRef, KubeObject] = {}
        # cluster name -> pod IP -> the pods (by source) that carry it
        self._endpoints: dict[str, dict[str, set[SourceRef]]] = defaultdict(lambda: defaultdict(set))
        self._node_listeners: dict[str, dict[SourceRef, Listener]] = defaultdict(dict)
        self._cluster_users: dict[str, set[str]] = defaultdict(set)  # cluster name -> nodes
        self._secret_users: dict[SourceRef, set[str]] = defaultdict(set)  # Secret -> nodes whose listeners name it
        self._dirty_nodes: set[str] = set()
        self._dirty_clusters: set[str] = set()
        self._listeners_cache: dict[str, NodeListeners] = {}
        # endpoints() of each cluster name, until it changes: every node using the cluster asks during a rebuild
        self._sorted_endpoints: dict[str, tuple[str, ...]] = {}
        self._batch = False  # inside `replace`: endpoint changes are collected in _batch_clusters
        self._batch_clusters: set[str] = set()
        self.on_change: Callable[[], None] | None = None
        self.revision = 0  # counts changes: the state file is written when it moved

    # ---- writes (sources) ----------------------------------------------------------------------------------------

    def upsert(self, source: str, obj: KubeObject) -> None:
        what = self._put((source, obj.ref), obj)
        if what:
            self._changed(source, obj.ref, what)

    def delete(self, source: str, ref: ObjectRef) -> None:
        if self._pop((source, ref)):
            self._changed(source, ref, "deleted")

    def replace(self, source: str, objects: Iterable[KubeObject], kinds: Iterable[str] | None = None) -> None:
        """Make the source's objects (of these kinds, default all) exactly `objects`: a relist or a reread.

        One batch: each changed cluster's users are looked up once, and beyond LOG_EACH changes each is logged at
        DEBUG and the batch summed up at INFO (a first load of 15,000 objects is one line, not 15,000)."""
        wanted = {obj.ref: obj for obj in objects}
        kind_set = set(kinds) if kinds is not None else None
        gone = [
            ref
            for (src, ref) in self._objects
            if src == source and ref not in wanted and (kind_set is None or ref.kind in kind_set)
        ]
        self._batch = True
        try:
            changes: list[tuple[ObjectRef, str]] = [(ref, "deleted") for ref in gone if self._pop((source, ref))]
            for obj in wanted.values():
                what = self._put((source, obj.ref), obj)
                if what:
                    changes.append((obj.ref, what))
        finally:
            self._end_batch()
        if changes:
            self._changed_many(source, changes)

    # ---- reads (translation, admin) ------------------------------------------------------------------------------

    def endpoints(self, cluster_name: str) -> tuple[str, ...]:
        """The IPs of the pods that can take traffic for this cluster name, sorted."""
        cached = self._sorted_endpoints.get(cluster_name)
        if cached is None:
            ips = self._endpoints.get(cluster_name)
            cached = self._sorted_endpoints[cluster_name] = tuple(sorted(ips)) if ips else ()
        return cached

    def nodes(self) -> list[str]:
        return sorted(n for n, listeners in self._node_listeners.items() if listeners)

    def cluster_names(self) -> list[str]:
        return sorted(name for name, ips in self._endpoints.items() if ips)

    def objects(self) -> dict[SourceRef, KubeObject]:
        return dict(self._objects)

    def secret(self, key: SourceRef) -> Secret | None:
        obj = self._objects.get(key)
        return obj if isinstance(obj, Secret) else None

    def secret_in_use(self, key: SourceRef) -> bool:
        return bool(self._secret_users.get(key))

    def listeners(self, node: str) -> NodeListeners:
        """The node's listeners; of two on one port (or one Envoy name), the older stays and the newer is rejected
        (without creationTimestamps, the first by namespace/name)."""
        cached = self._listeners_cache.get(node)
        if cached is None:
            cached = self._listeners_cache[node] = self._resolve(node)
        return cached

    def take_dirty(self) -> tuple[set[str], set[str]]:
        """The nodes and cluster names changed since the last call."""
        nodes, clusters = self._dirty_nodes, self._dirty_clusters
        self._dirty_nodes, self._dirty_clusters = set(), set()
        return nodes, clusters

    # ---- internals -----------------------------------------------------------------------------------------------

    def _put(self, key: SourceRef, obj: KubeObject) -> str | None:
        """Store the object; what happened ("added", "updated"), or None when it is the same."""
        old = self._objects.get(key)
        if old == obj:
            return None
        self._remove(key, old)
        self._objects[key] = obj
        self._add(key, obj)
        return "updated" if old else "added"

    def _pop(self, key: SourceRef) -> bool:
        old = self._objects.pop(key, None)
        if old is None:
            return False
        self._remove(key, old)
        return True

    def _end_batch(self) -> None:
        """Mark the users of the clusters whose endpoints changed in the batch."""
        self._batch = False
        for cluster_name in self._batch_clusters:
            self._cluster_changed(cluster_name)
        self._batch_clusters.clear()

    def _changed(self, source: str, ref: ObjectRef, what: str) -> None:
        log.info("%s %s (source %s)", ref, what, source)
        self.revision += 1
        if self._metrics is not None:
            self._metrics.source_events.labels(source, ref.kind).inc()
        if self.on_change is not None:
            self.on_change()

    def _changed_many(self, source: str, changes: list[tuple[ObjectRef, str]]) -> None:
        each = log.info if len(changes) <= LOG_EACH else log.debug
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for ref, what in changes:
            each("%s %s (source %s)", ref, what, source)
            counts[(ref.kind, what)] += 1
        if len(changes) > LOG_EACH:
            summary = ", ".join(f"{n} {kind} {what}" for (kind, what), n in sorted(counts.items()))
            log.info("source %s: %d objects changed: %s", source, len(changes), summary)
        self.revision += len(changes)
        if self._metrics is not None:
            by_kind: dict[str, int] = defaultdict(int)
            for (kind, _), n in counts.items():
                by_kind[kind] += n
            for kind, n in by_kind.items():
                self._metrics.source_events.labels(source, kind).inc(n)
        if self.on_change is not None:
            self.on_change()

    def _add(self, key: SourceRef, obj: KubeObject) -> None:
        if isinstance(obj, Pod):
            if obj.is_endpoint:
                assert obj.cluster_name and obj.ip
                holders = self._endpoints[obj.cluster_name][obj.ip]
                holders.add(key)
                if len(holders) == 1:
                    self._cluster_changed(obj.cluster_name)
            return
        if isinstance(obj, Secret):
            self._secret_changed(key)
            return
        node = obj.spec.nodename
        self._node_listeners[node][key] = obj
        cluster = used_cluster(obj)
        if cluster:
            self._cluster_users[cluster].add(node)
        for secret in used_secrets(key[0], obj):
            self._secret_users[secret].add(node)
        self._node_changed(node)

    def _remove(self, key: SourceRef, obj: KubeObject | None) -> None:
        if obj is None:
            return
        if isinstance(obj, Pod):
            if obj.is_endpoint:
                assert obj.cluster_name and obj.ip
                by_ip = self._endpoints[obj.cluster_name]
                holders = by_ip[obj.ip]
                holders.discard(key)
                if not holders:
                    del by_ip[obj.ip]
                    if not by_ip:
                        del self._endpoints[obj.cluster_name]
                    self._cluster_changed(obj.cluster_name)
            return
        if isinstance(obj, Secret):
            self._secret_changed(key)
            return
        node = obj.spec.nodename
        self._node_listeners[node].pop(key, None)
        if not self._node_listeners[node]:
            del self._node_listeners[node]
        others = self._node_listeners.get(node, {})
        cluster = used_cluster(obj)
        if cluster and not any(used_cluster(other) == cluster for other in others.values()):
            self._cluster_users[cluster].discard(node)
            if not self._cluster_users[cluster]:
                del self._cluster_users[cluster]
        still_named = {s for other_key, other in others.items() for s in used_secrets(other_key[0], other)}
        for secret in used_secrets(key[0], obj) - still_named:
            self._secret_users[secret].discard(node)
            if not self._secret_users[secret]:
                del self._secret_users[secret]
        self._node_changed(node)

    def _secret_changed(self, key: SourceRef) -> None:
        self._dirty_nodes.update(self._secret_users.get(key, ()))

    def _cluster_changed(self, cluster_name: str) -> None:
        if self._batch:
            self._batch_clusters.add(cluster_name)  # its users are marked once, at the end of the batch
            return
        self._dirty_clusters.add(cluster_name)
        self._sorted_endpoints.pop(cluster_name, None)
        for node in self._cluster_users.get(cluster_name, ()):
            self._dirty_nodes.add(node)

    def _node_changed(self, node: str) -> None:
        self._dirty_nodes.add(node)
        self._listeners_cache.pop(node, None)

    def _resolve(self, node: str) -> NodeListeners:
        # The older (by creationTimestamp) wins; without one, the order is still the same on every start and for
        # any file order: by namespace, name, kind and source.
        entries = sorted(
            self._node_listeners.get(node, {}).items(),
            key=lambda item: (item[1].created or "~", item[0][1].namespace, item[0][1].name, item[0][1].kind, item[0][0]),
        )
        accepted: list[Listener] = []
        sources: list[str] = []
        rejected: list[Rejection] = []
        by_port: dict[int, SourceRef] = {}
        by_name: dict[str, SourceRef] = {}
        for key, listener in entries:
            port, name = listener.spec.listenport, listener_name(listener)
            holder = by_port.get(port) or by_name.get(name)
            if holder is not None:
                on_port = by_port.get(port) == holder
                clash = f"port {port}" if on_port else f"Envoy name {name}"
                rejected.append(Rejection(
                    key,
                    "PortConflict" if on_port else "NameConflict",
                    f"{listener.ref} (source {key[0]}) rejected on node {node}: {clash} is already taken by "
                    f"{holder[1]} (source {holder[0]}; older, or first by namespace/name)",
                    holder,
                ))
                continue
            by_port[port], by_name[name] = key, key
            accepted.append(listener)
            sources.append(key[0])
        return NodeListeners(tuple(accepted), tuple(rejected), tuple(sources))
