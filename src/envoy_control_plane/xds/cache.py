"""Snapshots per node: the resources of each type, with content versions, and who to tell when they change."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .resource import Resource, version_of

Listener = Callable[["Snapshot"], None]


@dataclass(frozen=True)
class Snapshot:
    """Immutable: a stream may keep one while the cache moves on."""

    resources: Mapping[str, Mapping[str, Resource]]
    versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, by_type: Mapping[str, Iterable[Resource]]) -> Snapshot:
        resources = {t: {r.name: r for r in rs} for t, rs in by_type.items()}
        return cls(resources, {t: version_of(rs.values()) for t, rs in resources.items()})

    def of_type(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, {})

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url) or version_of(())


EMPTY = Snapshot.build({})


class SnapshotCache:
    """Keyed by node id. `set` tells the node's watchers only when some type's version changed."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Listener]] = defaultdict(set)

    def get(self, node: str) -> Snapshot:
        return self._snapshots.get(node, EMPTY)

    def nodes(self) -> list[str]:
        return sorted(self._snapshots)

    def set(self, node: str, snapshot: Snapshot) -> list[str]:
        """Store the node's snapshot; returns the types whose version changed (and tells watchers if any did)."""
        old = self.get(node)
        changed = [t for t in set(old.versions) | set(snapshot.versions) if old.version(t) != snapshot.version(t)]
        self._snapshots[node] = snapshot
        if changed:
            for watcher in list(self._watchers.get(node, ())):
                watcher(snapshot)
        return changed

    def watch(self, node: str, watcher: Listener) -> Callable[[], None]:
        """Call `watcher` with each new snapshot of the node; returns the function that stops it."""
        self._watchers[node].add(watcher)

        def cancel() -> None:
            watchers = self._watchers.get(node)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[node]

        return cancel
