"""KubernetesSource against the fake API server: list, watch, outages, expiry, invalid objects, status."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from envoy_control_plane.config import ClusterConfig
from envoy_control_plane.model import ObjectRef, parse_object
from envoy_control_plane.sources.kubernetes import KubernetesSource, WatchSettings
from envoy_control_plane.state import World
from tests.fakekube import FakeKube

pytestmark = pytest.mark.timeout(30)

FAST = WatchSettings(watch_timeout=30, list_timeout=5, page_size=2, backoff_initial=0.01, backoff_max=0.1,
                     absent_retry=0.05)


def pod(name: str, ip: str, cluster: str = "backend", ready: bool = True, namespace: str = "default") -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {"cluster-name.envoy.uw.io": cluster}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def egress(name: str, port: int = 9090, node: str = "node-a") -> dict:
    return {
        "apiVersion": "egresslistener.envoy.uw.systems/v1alpha1", "kind": "EgressListener",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodename": node, "listenport": port, "targetport": 8080, "targetcluster": "backend"},
    }


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until `check()` holds; fail after a bound that only a broken implementation reaches."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never happened: {what}")


@dataclass
class Cluster:
    kube: FakeKube
    world: World
    source: KubernetesSource

    def refs(self, kind: str) -> set[str]:
        return {ref.name for (_, ref) in self.world.objects() if ref.kind == kind}

    def reflector(self, kind: str) -> dict:
        return self.source.status.detail["kinds"][kind]  # type: ignore[index]


@contextlib.asynccontextmanager
async def running(
    kube: FakeKube, tmp_path: Path, settings: WatchSettings = FAST, namespace: str | None = None
) -> AsyncIterator[Cluster]:
    config = ClusterConfig(name="east", kubeconfig=kube.write_kubeconfig(tmp_path / "east.kubeconfig"),
                           namespace=namespace)
    world = World()
    source = KubernetesSource(config, world, settings, rng=random.Random(7))
    task = asyncio.create_task(source.run())
    try:
        yield Cluster(kube, world, source)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.05) as kube:
        yield kube


@pytest.fixture
async def cluster(kube: FakeKube, tmp_path: Path) -> AsyncIterator[Cluster]:
    kube.upsert(pod("a", "10.0.0.1"))
    kube.upsert(pod("b", "10.0.0.2"))
    kube.upsert(pod("c", "10.0.0.3", ready=False))
    kube.upsert(egress("out"))
    async with running(kube, tmp_path) as cluster:
        await eventually(lambda: cluster.source.status.synced, "the first list")
        yield cluster


async def test_first_list_fills_the_world_and_the_status(cluster: Cluster) -> None:
    assert cluster.world.endpoints("backend") == ("10.0.0.1", "10.0.0.2")
    assert cluster.refs("Pod") == {"a", "b", "c"}  # over two pages of two
    assert [listener.ref.name for listener in cluster.world.listeners("node-a").accepted] == ["out"]
    status = cluster.source.status.to_json()
    assert (status["name"], status["kind"], status["up"], status["stale"]) == ("east", "kubernetes", True, False)
    assert status["server"] == cluster.kube.url
    assert status["kinds"]["IngressListener"] | {"resource_version": "", "watches": 0} == {
        "listed": True, "up": True, "absent": False, "resource_version": "", "objects": 0, "relists": 1,
        "watches": 0, "last_error": None,
    }


async def test_watch_follows_changes(cluster: Cluster) -> None:
    kube, world = cluster.kube, cluster.world
    kube.upsert(pod("d", "10.0.0.4"))
    kube.set_pod_ready("default", "a", False)
    kube.delete("EgressListener", "default", "out")
    kube.upsert(egress("other", port=9191, node="node-b"))
    await eventually(lambda: world.endpoints("backend") == ("10.0.0.2", "10.0.0.4"), "endpoints follow pods")
    await eventually(lambda: world.nodes() == ["node-b"], "listeners follow their objects")
    assert cluster.reflector("Pod")["relists"] == 1


async def test_finished_pods_leave_through_the_field_selector(cluster: Cluster) -> None:
    finished = pod("b", "10.0.0.2")
    finished["status"]["phase"] = "Succeeded"
    cluster.kube.upsert(finished)
    await eventually(lambda: cluster.refs("Pod") == {"a", "c"}, "a finished pod is dropped")


async def test_terminating_pods_stop_being_endpoints_before_they_go(cluster: Cluster) -> None:
    cluster.kube.hold_terminating()
    cluster.kube.delete("Pod", "default", "a")
    await eventually(lambda: cluster.world.endpoints("backend") == ("10.0.0.2",), "terminating is not an endpoint")
    assert "a" in cluster.refs("Pod")
    cluster.kube.finish_termination()
    await eventually(lambda: "a" not in cluster.refs("Pod"), "the pod goes once terminated")


async def test_an_outage_keeps_objects_stale_until_the_cluster_answers(cluster: Cluster) -> None:
    kube, status = cluster.kube, cluster.source.status
    await kube.stop()
    await eventually(lambda: status.stale and not status.up, "the source turns stale")
    assert status.synced and status.last_error
    assert cluster.world.endpoints("backend") == ("10.0.0.1", "10.0.0.2")  # nothing removed while down
    kube.delete("Pod", "default", "a")  # changes the source cannot see yet
    kube.upsert(pod("d", "10.0.0.4"))
    await kube.start()
    await eventually(lambda: cluster.world.endpoints("backend") == ("10.0.0.2", "10.0.0.4"), "resumed watch")
    await eventually(lambda: status.up and not status.stale and status.last_error is None, "the source recovers")
    assert cluster.reflector("Pod")["relists"] == 1  # resumed from the last version seen, no relist


async def test_an_expired_version_relists_and_deletes_what_vanished(cluster: Cluster) -> None:
    kube = cluster.kube
    await kube.stop()
    await eventually(lambda: cluster.source.status.stale, "the source turns stale")
    kube.delete("Pod", "default", "a")
    kube.delete("EgressListener", "default", "out")
    kube.compact()
    await kube.start()
    await eventually(lambda: cluster.refs("Pod") == {"b", "c"} and not cluster.world.nodes(), "relist deletes")
    assert cluster.reflector("Pod")["relists"] == 2
    assert cluster.reflector("EgressListener")["relists"] == 2


async def test_dropped_watches_resume_from_the_last_version(cluster: Cluster) -> None:
    await asyncio.sleep(0.1)  # let bookmarks and watches flow
    cluster.kube.drop_watches()
    cluster.kube.upsert(pod("d", "10.0.0.4"))
    await eventually(lambda: "10.0.0.4" in cluster.world.endpoints("backend"), "the change after the drop")
    assert cluster.reflector("Pod")["relists"] == 1


async def test_bookmarks_move_the_resume_point_of_quiet_kinds(cluster: Cluster) -> None:
    cluster.kube.upsert(pod("d", "10.0.0.4"))
    revision = str(cluster.kube.store.revision)
    await eventually(lambda: cluster.reflector("IngressListener")["resource_version"] == revision, "a bookmark")


async def test_failing_requests_are_retried(kube: FakeKube, tmp_path: Path) -> None:
    kube.upsert(pod("a", "10.0.0.1"))
    kube.fail_next(5, status=503)
    async with running(kube, tmp_path) as cluster:
        await eventually(lambda: cluster.source.status.synced and cluster.source.status.up, "retried to success")
        assert cluster.world.endpoints("backend") == ("10.0.0.1",)


async def test_server_side_timeouts_reopen_the_watch(kube: FakeKube, tmp_path: Path) -> None:
    settings = WatchSettings(watch_timeout=1, page_size=2, backoff_initial=0.01, backoff_max=0.1)
    async with running(kube, tmp_path, settings) as cluster:
        await eventually(lambda: cluster.source.status.synced, "the first list")
        await eventually(lambda: cluster.reflector("Pod")["watches"] >= 2, "the server ends the first watch")
        kube.upsert(pod("a", "10.0.0.1"))
        await eventually(lambda: cluster.world.endpoints("backend") == ("10.0.0.1",), "seen by a reopened watch")
        assert cluster.reflector("Pod")["relists"] == 1


async def test_invalid_objects_are_reported_and_keep_their_last_good_version(cluster: Cluster) -> None:
    bad = egress("out", port=9090)
    bad["spec"]["listenport"] = 0
    cluster.kube.upsert(bad)
    status = cluster.source.status
    await eventually(lambda: len(status.problems) == 1, "the problem is reported")
    assert "EgressListener default/out" in status.problems[0] and "spec.listenport" in status.problems[0]
    assert [listener.spec.listenport for listener in cluster.world.listeners("node-a").accepted] == [9090]
    cluster.kube.delete("EgressListener", "default", "out")
    await eventually(lambda: not status.problems and not cluster.world.nodes(), "deleting clears it all")


async def test_a_kind_the_cluster_does_not_serve_counts_as_empty(kube: FakeKube, tmp_path: Path) -> None:
    kube.upsert(egress("out"))
    kube.set_served("EgressListener", False)
    async with running(kube, tmp_path) as cluster:
        await eventually(lambda: cluster.source.status.synced, "synced without the CRD")
        assert cluster.reflector("EgressListener")["absent"] and cluster.source.status.up
        assert not cluster.world.nodes()
        kube.set_served("EgressListener", True)
        await eventually(lambda: cluster.world.nodes() == ["node-a"], "found once served")


async def test_a_namespaced_cluster_sees_only_its_namespace(kube: FakeKube, tmp_path: Path) -> None:
    kube.upsert(pod("mine", "10.0.0.1", namespace="team-a"))
    kube.upsert(pod("theirs", "10.0.0.2", namespace="team-b"))
    async with running(kube, tmp_path, namespace="team-a") as cluster:
        await eventually(lambda: cluster.source.status.synced, "the first list")
        assert cluster.world.endpoints("backend") == ("10.0.0.1",)
        assert {ref for (_, ref) in cluster.world.objects()} == {ObjectRef("Pod", "team-a", "mine")}


async def test_large_objects_cross_chunk_boundaries(cluster: Cluster) -> None:
    big = pod("big", "10.0.0.9")
    big["metadata"]["annotations"]["note"] = "x" * 300_000
    cluster.kube.upsert(big)
    await eventually(lambda: "10.0.0.9" in cluster.world.endpoints("backend"), "a 300 kB object arrives")


async def test_credentials_that_do_not_load_are_reported_and_retried(kube: FakeKube, tmp_path: Path) -> None:
    config = ClusterConfig(name="west", kubeconfig=kube.write_kubeconfig(tmp_path / "kc"), context="missing")
    source = KubernetesSource(config, World(), FAST)
    task = asyncio.create_task(source.run())
    try:
        await eventually(lambda: source.status.last_error is not None, "the error is reported")
        assert "missing" in source.status.last_error and not source.status.up and not source.status.synced
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def secret(name: str, secret_type: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": secret_type, "data": data,
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}}}


async def test_only_secrets_a_listener_can_use_are_read(kube: FakeKube, tmp_path: Path) -> None:
    import base64

    from demo.certs import CA

    ca = CA("ca")
    leaf = ca.issue("leaf", ["spiffe://a/b"])
    pem = {"tls.crt": leaf.cert, "tls.key": leaf.key, "ca.crt": ca.cert}
    data = {k: base64.b64encode(v).decode() for k, v in pem.items()}
    kube.upsert(secret("tls", "kubernetes.io/tls", data))
    kube.upsert(secret("ca", "Opaque", {"ca.crt": data["ca.crt"]}))
    kube.upsert(secret("opaque", "Opaque", {"password": "aHVudGVyMg=="}))
    kube.upsert(secret("token", "kubernetes.io/service-account-token", {"token": "dG9rZW4="}))
    kube.upsert(secret("mine", "kubernetes.io/tls", data, labels={"mesh": "true"}))
    async with running(kube, tmp_path) as cluster:
        await eventually(lambda: cluster.source.status.synced, "the first list")
        assert cluster.refs("Secret") == {"tls", "ca", "mine"}
        kept = cluster.world.secret(("east", ObjectRef("Secret", "default", "tls")))
        assert kept is not None and (kept.cert, kept.key, kept.ca) == (leaf.cert, leaf.key, ca.cert)
        # Watch events follow the same rule: an Opaque Secret gains ca.crt and becomes usable; a token never is.
        kube.upsert(secret("opaque", "Opaque", {"ca.crt": data["ca.crt"]}))
        kube.upsert(secret("token2", "kubernetes.io/service-account-token", {"token": "dG9rZW4="}))
        await eventually(lambda: "opaque" in cluster.refs("Secret"), "the Opaque Secret with ca.crt")
        assert "token2" not in cluster.refs("Secret")
        kube.delete("Secret", "default", "tls")
        await eventually(lambda: "tls" not in cluster.refs("Secret"), "the deletion")

    config = ClusterConfig(name="west", kubeconfig=kube.write_kubeconfig(tmp_path / "west.kubeconfig"),
                           secret_selector="mesh=true")
    world = World()
    task = asyncio.create_task(KubernetesSource(config, world, FAST).run())
    try:
        await eventually(lambda: any(ref.kind == "Secret" for _, ref in world.objects()), "the selected Secret")
        await asyncio.sleep(0.05)
        assert {ref.name for _, ref in world.objects() if ref.kind == "Secret"} == {"mine"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_role_without_secrets_holds_back_nothing_else(kube: FakeKube, tmp_path: Path) -> None:
    """An upgrade that did not grant the new Secret read: pods and listeners flow, the cluster is up, and Secrets
    count as none (looked for again) until the role allows them."""
    kube.upsert(pod("a", "10.0.0.1"))
    kube.upsert(secret("ca", "Opaque", {"ca.crt": "eA=="}))
    kube.set_forbidden("Secret", True)
    async with running(kube, tmp_path) as cluster:
        await eventually(lambda: cluster.source.status.synced, "the first list")
        assert cluster.world.endpoints("backend") == ("10.0.0.1",)
        assert cluster.source.status.up and cluster.reflector("Secret")["absent"]
        kube.set_forbidden("Secret", False)
        await eventually(lambda: "ca" in cluster.refs("Secret"), "the Secrets once the role allows them")


async def test_a_pods_only_cluster_drops_saved_listeners_and_never_asks_for_them(tmp_path: Path) -> None:
    """A cluster turned into `listenersource: false` since the state file was written: its saved listeners are not
    served (no reflector would ever remove them), its saved pods are, until its list replaces them."""
    async with FakeKube() as kube:
        kube.upsert(pod("a", "10.0.0.1"))
        kube.upsert(egress("e"))
        config = ClusterConfig(name="east", kubeconfig=kube.write_kubeconfig(tmp_path / "east.kubeconfig"),
                               listenersource=False)
        world = World()
        source = KubernetesSource(config, world, FAST)
        saved = [parse_object(pod("old", "10.0.0.9")), parse_object(egress("saved"))]
        kept = source.seed(saved)
        assert [obj.ref.name for obj in kept] == ["old"]
        task = asyncio.create_task(source.run())
        try:
            await eventually(lambda: source.status.synced, "the pods listed")
            assert {ref.name for (_, ref) in world.objects()} == {"a"}
            assert set(source.status.detail["kinds"]) == {"Pod"}  # type: ignore[arg-type]
            assert not [p for _, p in kube.requests if "listeners" in p or "secrets" in p]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
