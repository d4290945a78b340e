"""Turns changes in the World into new snapshots, for the touched nodes only, with bursts coalesced."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from .metrics import Metrics
from .state import World
from .text import clip
from .translate.node import Addresses, ListenerProblem, build_node
from .translate.secrets import ServedSecrets
from .xds.cache import Snapshot, SnapshotCache
from .xds.types import short

log = logging.getLogger(__name__)

_SHOWN = 5  # node names in the line that sums up a rebuild
DEBOUNCE_MAX_FACTOR = 10  # a burst that never goes quiet still rebuilds after this many debounce periods


class Controller:
    def __init__(
        self,
        world: World,
        cache: SnapshotCache,
        metrics: Metrics,
        addresses: Addresses,
        debounce: float,
        serve_secrets: bool = False,
        debounce_max: float | None = None,
    ) -> None:
        """`debounce`: the quiet period (seconds) a burst of changes must end with before the rebuild; `debounce_max`:
        the longest a pending change waits for that quiet (default DEBOUNCE_MAX_FACTOR x `debounce`).
        `serve_secrets`: whether listeners with tls (and so their Secrets) may be sent (Config.may_serve_secrets)."""
        self.world = world
        self.cache = cache
        self.metrics = metrics
        self.addresses = addresses
        self.debounce = debounce
        self.debounce_max = max(debounce, DEBOUNCE_MAX_FACTOR * debounce if debounce_max is None else debounce_max)
        self.rebuilds = 0  # rebuilds run() started (tests and benches count them)
        self.world_changes = 0  # World changes seen (the status writer's cue to look again)
        self._first_change = self._last_change = 0.0  # loop times of the first pending and the latest World change
        self.serve_secrets = serve_secrets
        self.secrets = ServedSecrets()
        self._changed = asyncio.Event()
        self._rejections: dict[str, tuple[str, ...]] = {}
        self._problems: dict[str, tuple[ListenerProblem, ...]] = {}  # node -> its listeners' Secret problems
        self.on_problems: Callable[[], None] | None = None  # told when listener_problems() changed
        world.on_change = self._on_change

    def listener_problems(self) -> list[ListenerProblem]:
        """Listeners held back (or served with a Secret's last good version), over every node, by node."""
        return [problem for node in sorted(self._problems) for problem in self._problems[node]]

    def _on_change(self) -> None:
        self.world_changes += 1
        try:
            self._last_change = asyncio.get_running_loop().time()
        except RuntimeError:  # a change made outside the loop (tests, start-up): no burst to time
            pass
        if not self._changed.is_set():
            self._first_change = self._last_change
        self._changed.set()

    async def run(self) -> None:
        """Rebuild after each burst of changes: wait for a change, then for `debounce` without one (a quiet period,
        so a burst applied event by event, such as a rollout's watch events, makes one rebuild), but never longer
        than `debounce_max` after the first change of the burst; rebuild what the burst touched."""
        loop = asyncio.get_running_loop()
        while True:
            await self._changed.wait()
            if self.debounce:
                deadline = self._first_change + self.debounce_max
                # Sleep to the end of the quiet period; a change meanwhile moves that end (Istio's debounce).
                while (wake := min(self._last_change + self.debounce, deadline)) > loop.time():
                    await asyncio.sleep(wake - loop.time())
            self._changed.clear()
            self.rebuilds += 1
            self.rebuild()

    def rebuild(self, everything: bool = False) -> None:
        nodes, _ = self.world.take_dirty()
        if everything:
            nodes |= set(self.world.nodes()) | set(self.cache.nodes())
        if not nodes:
            return
        started = time.perf_counter()
        problems_before = dict(self._problems)
        changed: Counter[str] = Counter()  # type -> nodes whose version of it changed
        changed_nodes: list[str] = []
        for node in sorted(nodes):
            types = self._rebuild_node(node)
            if types:
                changed.update(types)
                changed_nodes.append(node)
        self.secrets.forget_unused(self.world)
        if self._problems != problems_before and self.on_problems is not None:
            self.on_problems()
        elapsed = time.perf_counter() - started
        if changed_nodes:
            # One line per batch: a rollout touches every node, and a line per node cost more than its rebuild.
            # The per-node lines ("snapshot for node ...") are at DEBUG.
            shown = ", ".join(clip(node, 100) for node in changed_nodes[:_SHOWN])
            more = f" and {len(changed_nodes) - _SHOWN} more" if len(changed_nodes) > _SHOWN else ""
            log.info(
                "snapshots rebuilt: %d of %d nodes changed (%s) in %.1f ms: %s%s",
                len(changed_nodes),
                len(nodes),
                ", ".join(f"{short(t)} {changed[t]}" for t in sorted(changed)),
                elapsed * 1000,
                shown,
                more,
            )
        self.metrics.snapshot_build.observe(elapsed)
        self.metrics.snapshot_nodes.inc(len(nodes))
        self.metrics.listener_conflicts.set(sum(len(r) for r in self._rejections.values()))

    def _rebuild_node(self, node: str) -> list[str]:
        """Rebuild one node's snapshot; returns the types whose version changed."""
        listeners = self.world.listeners(node)
        if listeners.rejected != self._rejections.get(node, ()):
            for message in listeners.rejected:
                log.error("listener conflict: %s", message)
        if listeners.rejected:
            self._rejections[node] = listeners.rejected
        else:
            self._rejections.pop(node, None)
        build = build_node(self.world, node, self.addresses, self.secrets, self.serve_secrets)
        self._record_problems(node, tuple(build.problems))
        snapshot = Snapshot.build(build.resources, previous=self.cache.get(node))
        changed = self.cache.set(node, snapshot)
        if changed and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "snapshot for node %s: %s",
                clip(node),
                ", ".join(f"{short(t)} {snapshot.version(t)} ({len(snapshot.of_type(t))})" for t in sorted(changed)),
            )
        return changed

    def _record_problems(self, node: str, problems: tuple[ListenerProblem, ...]) -> None:
        """Log each problem once, when it appears (a problem's message names the listener, its source and Secret)."""
        before = {p.message for p in self._problems.get(node, ())}
        for problem in problems:
            if problem.message not in before:
                log.log(logging.ERROR if problem.held_back else logging.WARNING, "listener %s", problem.message)
        if problems:
            self._problems[node] = problems
        else:
            self._problems.pop(node, None)
