"""The control plane assembled: sources -> world -> controller -> snapshot cache -> xDS server, with admin beside."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from .admin import make_app, start_admin
from .config import Config
from .controller import Controller
from .metrics import Metrics, WatchCounters
from .sources.forked_parse import ForkedParse
from .sources.manifests import ManifestSource
from .sources.status import SourceStatus
from .model import ObjectRef
from .state import World
from .statefile import SavedState, StateKeeper
from .text import quote
from .status.conditions import ListenerStatus, inputs_version, listener_statuses
from .translate.node import Addresses
from .xds.cache import SnapshotCache
from .xds.server import check_port, start_xds_server
from .xds.streams import StreamRegistry

if TYPE_CHECKING:
    from .sources.kubernetes import KubernetesSource, WatchSettings
    from .status.writer import StatusWriter

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(
        self, config: Config, watch_settings: WatchSettings | None = None, forked_parse: ForkedParse | None = None
    ) -> None:
        """`watch_settings` tunes the Kubernetes watches (tests shorten timeouts and backoffs); `forked_parse` is a
        child parsing the manifests already (`run` starts it before importing the rest)."""
        self.config = config
        self.metrics = Metrics()
        self.world = World(self.metrics)
        self.cache = SnapshotCache(complete=False)  # complete once every source has loaded: see start()
        self.streams = StreamRegistry()
        addresses = Addresses(ingress=config.ingress_address, egress=config.egress_address)
        debounce_max = None if config.xds.debounce_max_ms is None else config.xds.debounce_max_ms / 1000
        self.controller = Controller(
            self.world, self.cache, self.metrics, addresses, config.xds.debounce_ms / 1000, config.may_serve_secrets,
            debounce_max,
        )
        self.controller.on_problems = self._publish_listener_problems
        self.manifests = (
            ManifestSource(config.manifests, self.world, delete_grace=config.manifest_delete_grace_s,
                           annotation=config.cluster_name_annotation, forked=forked_parse)
            if config.manifests
            else None
        )
        self.clusters: list[KubernetesSource] = []
        if config.clusters:
            # kubernetes_asyncio is heavy to import: only when it is used
            from .sources.kubernetes import KubernetesSource, WatchSettings

            settings = watch_settings or WatchSettings()
            self.clusters = [KubernetesSource(c, self.world, settings, annotation=config.cluster_name_annotation)
                             for c in config.clusters]
            counts = WatchCounters(lambda: [(c.cluster.name, c.watch_counts()) for c in self.clusters])
            self.metrics.registry.register(counts)
        self.status_writer: StatusWriter | None = None
        if config.clusters and config.status.write:
            from .status.lease import default_identity, own_namespace
            from .status.writer import StatusWriter

            status = config.status
            self.status_writer = StatusWriter(
                config.clusters, self.listener_statuses, status, status.identity or default_identity(), self.metrics,
                status.lease.namespace or own_namespace(), inputs=self._status_inputs,
            )
        self.keeper = StateKeeper(config.state_dir, self.world, self._origin) if config.state_dir else None
        self._restored: set[str] = set()  # sources whose last objects came from the state file
        self._keeping = False  # the state file is written from the World (only once the World was loaded)
        self.xds_port = 0
        self.serving = False  # xDS is served: what readiness means
        self.admin_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stoppers: list[Callable[[], Awaitable[None]]] = []

    def sources(self) -> list[SourceStatus]:
        return ([self.manifests.status] if self.manifests else []) + [c.status for c in self.clusters]

    def _publish_listener_problems(self) -> None:
        by_source: dict[str, list[str]] = {}
        for problem in self.controller.listener_problems():
            by_source.setdefault(problem.source, []).append(problem.message)
        for status in self.sources():
            status.listener_problems = by_source.get(status.name, [])

    def listener_statuses(self) -> list[ListenerStatus]:
        return listener_statuses(
            self.world, self.sources(), self.cache, self.streams, self.controller.listener_problems()
        )

    def _status_inputs(self) -> object:
        """What listener_statuses() reads, summed up: the status writer computes nothing while it stays equal."""
        return inputs_version(self.controller.world_changes, self.sources(), self.cache,
                              self.controller.listener_problems())

    async def start(self) -> None:
        """Restore the state file, start the sources and admin, wait for the sources' first load, then serve xDS.

        xDS waits because an Envoy that reconnects to a fresh process would otherwise be sent a world that is still
        loading, and remove what it runs. A source whose objects the state file restored does not hold xDS up (the
        World serves them until it loads); one that does not load within `xds.initial_sync_timeout_s` (a cluster
        that cannot be reached) stops holding up the others. Returns once both servers listen. Raises OSError at once
        when the xDS port is taken (another instance), before any source starts.
        """
        check_port(self.config.xds.address, self.config.xds.port)
        runner, self.admin_port = await start_admin(
            make_app(self.cache, self.streams, self.metrics, self.sources, self.listener_statuses,
                     serving=lambda: self.serving, debug_remote=self.config.admin.debug_remote),
            self.config.admin.address,
            self.config.admin.port,
        )
        self._stoppers.append(runner.cleanup)
        if self.keeper:
            self.keeper.prepare()
            self._restore(self.keeper.read())
        if self.manifests:
            with _gc_paused():
                await self.manifests.reload()
            self._tasks.append(asyncio.create_task(self.manifests.watch(), name="manifest-watch"))
        for cluster in self.clusters:
            self._tasks.append(asyncio.create_task(cluster.run(), name=f"cluster-{cluster.cluster.name}"))
        await self._initial_sync(self.config.xds.initial_sync_timeout_s)
        with _gc_paused():
            self.controller.rebuild(everything=True)
        self._tasks.append(asyncio.create_task(self.controller.run(), name="controller"))
        if all(s.synced for s in self.sources()):
            self.cache.set_complete()
        else:
            self._tasks.append(asyncio.create_task(self._complete_when_synced(), name="world-complete"))
        if self.keeper:
            self._tasks.append(asyncio.create_task(self.keeper.run(), name="state-file"))
            self._keeping = True
        xds, self.xds_port = await start_xds_server(
            self.config.xds.address,
            self.config.xds.port,
            self.cache,
            self.metrics,
            self.streams,
            self.config.xds.tls,
            self.config.xds.ack_timeout_s,
        )
        # No grace: open streams are closed at once, so that Envoys move to another replica now, not when we exit.
        self._stoppers.append(lambda: xds.stop(grace=None))
        self.serving = True
        if self.status_writer is not None:
            self._tasks.append(asyncio.create_task(self.status_writer.run(), name="status-writer"))

    async def _initial_sync(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while waiting := [s.name for s in self.sources() if not s.synced and s.name not in self._restored]:
            if loop.time() >= deadline:
                log.warning("serving xDS without sources that have not loaded in %.0fs: %s", timeout, ", ".join(waiting))
                return
            await asyncio.sleep(0.05)

    async def _complete_when_synced(self) -> None:
        """Tell the cache the world is complete once every source has loaded once.

        Until then, a reconnecting Envoy gets additions and updates but no removals of what it runs (xds/cache.py):
        what is missing may only be missing from a source that has not loaded. The snapshots are rebuilt first, so
        the removals that follow are computed from the complete world.
        """
        while any(not s.synced for s in self.sources()):
            await asyncio.sleep(0.1)
        self.controller.rebuild()
        self.cache.set_complete()
        log.info("every source has loaded: removals reach reconnected Envoys again")

    def _restore(self, saved: SavedState) -> None:
        """Seed each source, and the World with each cluster's objects, from what the state file kept.

        Manifests load before xDS serves anything; they need only the versions of objects that are invalid now."""
        clusters = {c.status.name: c for c in self.clusters}
        for name, items in saved.items():
            if self.manifests and name == self.manifests.status.name:
                self.manifests.seed(items)
            elif name in clusters:
                objects = clusters[name].seed([obj for obj in (item.parse() for item in items) if obj is not None])
                self.world.replace(name, objects)
                self._restored.add(name)
            else:
                log.info("state file: source %s is not configured any more; its objects are dropped", quote(name))

    def _origin(self, source: str, ref: ObjectRef) -> str | None:
        manifests = self.manifests
        return manifests.origin(ref) if manifests and source == manifests.status.name else None

    async def stop(self) -> None:
        """Stop serving first (xDS, then admin), then the sources and the controller."""
        self.serving = False
        for stop in reversed(self._stoppers):
            await stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.keeper and self._keeping:
            await self.keeper.save()  # what changed since the last write
        self._tasks.clear()
        self._stoppers.clear()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the first load builds its objects (a million, nearly all long-lived):
    each young collection would walk the new ones again, a third of the time of reading 10,000 pods. Then they are
    frozen (moved out of the collector's generations), so that no later collection walks them either; an object of
    theirs that is replaced later is still freed by its reference count."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
