"""How a Kubernetes source rides out a misbehaving API server: relist storms, a server that went back in time,
throttling, watches that are accepted and end at once, restarts that rebuild the watch cache, expired continue
tokens."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from envoy_control_plane.config import ClusterConfig
from envoy_control_plane.sources.kubernetes import KubernetesSource, WatchSettings
from envoy_control_plane.state import World
from tests.fakekube import FakeKube

from tests.integration.kube_helpers import eventually, pod

pytestmark = pytest.mark.timeout(30)

FAST = WatchSettings(watch_timeout=30, list_timeout=5, page_size=2, backoff_initial=0.01, backoff_max=0.1,
                     absent_retry=0.05)






class Cluster:
    def __init__(self, kube: FakeKube, source: KubernetesSource, world: World) -> None:
        self.kube, self.source, self.world = kube, source, world

    def kind(self, kind: str) -> dict:
        return self.source.status.detail["kinds"][kind]  # type: ignore[index]

    def relists(self) -> int:
        return sum(self.kind(k)["relists"] for k in ("Pod", "IngressListener", "EgressListener"))


@contextlib.asynccontextmanager
async def running(kube: FakeKube, tmp_path: Path, settings: WatchSettings = FAST) -> AsyncIterator[Cluster]:
    world = World()
    config = ClusterConfig(name="east", kubeconfig=kube.write_kubeconfig(tmp_path / "kc"))
    source = KubernetesSource(config, world, settings, rng=random.Random(5))
    task = asyncio.create_task(source.run())
    try:
        cluster = Cluster(kube, source, world)
        await eventually(lambda: source.status.synced and source.status.up, "the first list")
        yield cluster
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.05) as kube:
        yield kube


async def test_repeated_410s_back_off_between_relists(kube: FakeKube, tmp_path: Path) -> None:
    settings = WatchSettings(watch_timeout=30, list_timeout=5, backoff_initial=0.4, backoff_max=2.0)
    kube.upsert(pod("a", "10.0.0.1"))
    async with running(kube, tmp_path, settings) as cluster:
        before = cluster.kind("Pod")["relists"]
        kube.answer_watches("expired")  # etcd compacting faster than the watch can start
        kube.drop_watches()
        await eventually(lambda: cluster.kind("Pod")["relists"] >= before + 2, "the first relists")
        start = cluster.kind("Pod")["relists"]
        await asyncio.sleep(1.0)
        # Without backoff this is dozens (one relist per round trip); with it, the waits double from 0.2-0.4 s.
        assert cluster.kind("Pod")["relists"] - start <= 3
        kube.answer_watches(None)
        kube.upsert(pod("b", "10.0.0.2"))
        await eventually(lambda: cluster.world.endpoints("backend") == ("10.0.0.1", "10.0.0.2"), "healthy again")


async def test_a_watch_ahead_of_a_restored_server_relists_from_scratch(kube: FakeKube, tmp_path: Path) -> None:
    backup = kube.backup()  # an empty cluster, revision 0
    kube.upsert(pod("a", "10.0.0.1"))
    kube.upsert(pod("b", "10.0.0.2"))
    async with running(kube, tmp_path) as cluster:
        assert cluster.world.endpoints("backend") == ("10.0.0.1", "10.0.0.2")
        kube.restore(backup)  # etcd restored from the backup: its resourceVersion is behind the watches'
        kube.upsert(pod("c", "10.0.0.3"))
        await eventually(lambda: cluster.world.endpoints("backend") == ("10.0.0.3",), "the restored state")
        assert cluster.kind("Pod")["relists"] == 2
        await eventually(lambda: cluster.source.status.up, "watching again")


async def test_429_waits_as_long_as_retry_after_says(kube: FakeKube, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    async with running(kube, tmp_path) as cluster:
        kube.throttle_next(4, retry_after=1)  # the four watches that reopen (one per kind)
        kube.drop_watches()
        throttled = loop.time()
        kube.upsert(pod("a", "10.0.0.1"))
        await eventually(lambda: "10.0.0.1" in cluster.world.endpoints("backend"), "the change after the wait")
        assert loop.time() - throttled >= 0.9  # the backoff alone (<= 0.1 s) would have come back sooner
        assert kube.throttle.count == 0 and "429" in str(cluster.kind("Pod")["last_error"] or "429")


async def test_429_on_the_first_list_waits_too(kube: FakeKube, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    kube.throttle_next(1, retry_after=1)
    started = loop.time()
    async with running(kube, tmp_path):
        assert loop.time() - started >= 0.9


async def test_a_watch_that_ends_at_once_is_not_up(kube: FakeKube, tmp_path: Path) -> None:
    async with running(kube, tmp_path) as cluster:
        status = cluster.source.status
        kube.answer_watches("empty")  # accepted with a 200, then nothing: a broken proxy
        kube.drop_watches()
        await eventually(lambda: "ended at once" in str(status.last_error), "the empty watches are failures")
        assert not status.up and status.stale
        watches = cluster.kind("Pod")["watches"]
        await eventually(lambda: cluster.kind("Pod")["watches"] >= watches + 3, "more such watches")
        assert not status.up and not cluster.kind("Pod")["up"]
        kube.answer_watches(None)
        await eventually(lambda: status.up and status.last_error is None, "up with the first event (a bookmark)")


async def test_a_restarted_server_answers_old_versions_with_410_and_the_source_relists(
    kube: FakeKube, tmp_path: Path
) -> None:
    kube.upsert(pod("a", "10.0.0.1"))
    async with running(kube, tmp_path) as cluster:
        await kube.stop()
        kube.delete("Pod", "default", "a")  # written through another API server meanwhile
        await kube.restart()
        await eventually(lambda: cluster.world.endpoints("backend") == (), "the deletion, through a relist")
        assert cluster.kind("Pod")["relists"] == 2


async def test_an_expired_continue_token_restarts_the_list(kube: FakeKube, tmp_path: Path) -> None:
    for i in range(5):
        kube.upsert(pod(f"p{i}", f"10.0.0.{i + 1}"))
    original = kube._pager.page

    def compacting_page(current, revision, compacted, query):  # before the second page: a write, then etcd compacts
        if query.get("continue"):
            kube._pager.page = original  # type: ignore[method-assign]
            kube.upsert(pod("p9", "10.0.0.9"))
            kube.compact()
            compacted = kube.store.compacted
        return original(current, revision, compacted, query)

    kube._pager.page = compacting_page  # type: ignore[method-assign]
    async with running(kube, tmp_path) as cluster:
        assert len(cluster.world.endpoints("backend")) == 6  # listed again from the start, p9 included
        assert cluster.kind("Pod")["relists"] == 1
