"""Snapshots per node: the resources of each type, with content versions, and who to tell when they change.

The cache also remembers each node's last few snapshots, so a client that reconnects declaring a version we served
a moment ago can be seen into (what it runs, and what that needs), and holds the "world complete" flag: False while
some source has not loaded once, so what is missing from a snapshot may only be missing from the world we have
loaded so far. Streams do not remove from a reconnecting client what it declares until the flag is set.
"""

from __future__ import annotations

from collections import defaultdict, deque
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
    def build(cls, by_type: Mapping[str, Iterable[Resource]], previous: Snapshot | None = None) -> Snapshot:
        """`previous`: the node's snapshot before, whose version of a type is kept when the type's resources are
        the same objects (most types of most rebuilds), instead of hashing them again."""
        resources = {t: {r.name: r for r in rs} for t, rs in by_type.items()}
        versions = {}
        for t, named in resources.items():
            before = previous.resources.get(t) if previous is not None else None
            if before is not None and len(before) == len(named) and all(before.get(n) is r for n, r in named.items()):
                versions[t] = previous.versions[t]  # type: ignore[union-attr]
            else:
                versions[t] = version_of(named.values())
        return cls(resources, versions)

    def of_type(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, {})

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url) or version_of(())


EMPTY = Snapshot.build({})
HISTORY = 4  # earlier snapshots remembered per node


class SnapshotCache:
    """Keyed by node id. `set` tells the node's watchers only when some type's version changed."""

    def __init__(self, complete: bool = True) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._history: dict[str, deque[Snapshot]] = {}
        self._watchers: dict[str, set[Listener]] = defaultdict(set)
        self._complete = complete
        self.changes = 0  # snapshots stored that changed some version (the status writer's cue to look again)

    @property
    def complete(self) -> bool:
        """Whether every source has loaded once (the app says so; True unless constructed otherwise)."""
        return self._complete

    def set_complete(self) -> None:
        """Every source has loaded once: from now on what a snapshot lacks is gone. Wakes every watcher."""
        if self._complete:
            return
        self._complete = True
        for node, watchers in list(self._watchers.items()):
            snapshot = self.get(node)
            for watcher in list(watchers):
                watcher(snapshot)

    def recall(self, node: str, type_url: str, version: str) -> Mapping[str, Resource] | None:
        """The node's resources of a type at `version`, if its snapshot now or one of its last few had that version."""
        for snapshot in (self.get(node), *self._history.get(node, ())):
            if snapshot.version(type_url) == version:
                return snapshot.of_type(type_url)
        return None

    def recall_resource(self, node: str, type_url: str, name: str, version: str) -> Resource | None:
        """A resource of the node at `version`, if its snapshot now or one of its last few had it."""
        for snapshot in (self.get(node), *self._history.get(node, ())):
            resource = snapshot.of_type(type_url).get(name)
            if resource is not None and resource.version == version:
                return resource
        return None

    def get(self, node: str) -> Snapshot:
        return self._snapshots.get(node, EMPTY)

    def nodes(self) -> list[str]:
        return sorted(self._snapshots)

    def set(self, node: str, snapshot: Snapshot) -> list[str]:
        """Store the node's snapshot; returns the types whose version changed (and tells watchers if any did)."""
        old = self.get(node)
        changed = [t for t in set(old.versions) | set(snapshot.versions) if old.version(t) != snapshot.version(t)]
        self._snapshots[node] = snapshot
        if changed and old is not EMPTY:
            self._history.setdefault(node, deque(maxlen=HISTORY)).appendleft(old)
        if changed:
            self.changes += 1
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
