"""Turns changes in the World into new snapshots, for the touched nodes only, with bursts coalesced."""

from __future__ import annotations

import asyncio
import logging
import time

from .metrics import Metrics
from .state import World
from .translate.node import Addresses, node_resources
from .xds.cache import Snapshot, SnapshotCache
from .xds.types import short

log = logging.getLogger(__name__)


class Controller:
    def __init__(
        self, world: World, cache: SnapshotCache, metrics: Metrics, addresses: Addresses, debounce: float
    ) -> None:
        self.world = world
        self.cache = cache
        self.metrics = metrics
        self.addresses = addresses
        self.debounce = debounce
        self._changed = asyncio.Event()
        self._rejections: dict[str, tuple[str, ...]] = {}
        world.on_change = self._changed.set

    async def run(self) -> None:
        """Rebuild after each burst of changes: wait for a change, let the burst settle, rebuild what it touched."""
        while True:
            await self._changed.wait()
            if self.debounce:
                await asyncio.sleep(self.debounce)
            self._changed.clear()
            self.rebuild()

    def rebuild(self, everything: bool = False) -> None:
        nodes, _ = self.world.take_dirty()
        if everything:
            nodes |= set(self.world.nodes()) | set(self.cache.nodes())
        if not nodes:
            return
        started = time.perf_counter()
        for node in sorted(nodes):
            self._rebuild_node(node)
        self.metrics.snapshot_build.observe(time.perf_counter() - started)
        self.metrics.snapshot_nodes.inc(len(nodes))
        self.metrics.listener_conflicts.set(sum(len(r) for r in self._rejections.values()))

    def _rebuild_node(self, node: str) -> None:
        listeners = self.world.listeners(node)
        if listeners.rejected != self._rejections.get(node, ()):
            for message in listeners.rejected:
                log.error("listener conflict: %s", message)
        if listeners.rejected:
            self._rejections[node] = listeners.rejected
        else:
            self._rejections.pop(node, None)
        snapshot = Snapshot.build(node_resources(self.world, node, self.addresses))
        changed = self.cache.set(node, snapshot)
        if changed:
            log.info(
                "snapshot for node %s: %s",
                node,
                ", ".join(f"{short(t)} {snapshot.version(t)} ({len(snapshot.of_type(t))})" for t in sorted(changed)),
            )
