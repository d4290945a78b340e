"""A hostile or broken API server: malformed objects in lists and watches are reported and skipped, and every other
object of the cluster keeps flowing (no relist loop); credentials in the server URL never show in /debug/sources."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from pathlib import Path

import pytest
import yaml

from envoy_control_plane.config import ClusterConfig
from envoy_control_plane.sources.kubernetes import KubernetesSource
from envoy_control_plane.state import World
from tests.fakekube import FakeKube
from tests.integration.kube_helpers import eventually, pod
from tests.integration.test_kubernetes_source import FAST, kube, running  # noqa: F401  (kube: a fixture)

pytestmark = pytest.mark.timeout(30)


def malformed(name: str, field: str, value: object) -> dict:
    """A pod of `backend` whose metadata or status field is replaced by a value of the wrong type."""
    doc = copy.deepcopy(pod(name, "10.0.9.9"))
    section, key = field.split(".")
    doc[section][key] = value
    return doc


BAD = [
    ("annotations", "metadata.annotations", ["x"], "Pod default/annotations: metadata.annotations: must be a mapping"),
    ("status", "status.podIP", 2130706433, "Pod default/status: status.podIP: must be a string, got 2130706433"),
    ("conditions", "status.conditions", 5, "Pod default/conditions: status.conditions: must be a list"),
    ("unspecified", "status.podIP", "0.0.0.0", "Pod default/unspecified: status.podIP: not an endpoint address"),
]


async def test_malformed_pods_are_reported_and_the_others_keep_flowing(kube: FakeKube, tmp_path: Path) -> None:
    kube.upsert(pod("a", "10.0.0.1"))
    for name, field, value, _ in BAD:
        kube.upsert(malformed(name, field, value))
    async with running(kube, tmp_path) as cluster:
        world, source = cluster.world, cluster.source
        await eventually(lambda: source.status.synced, "the first list")
        assert world.endpoints("backend") == ("10.0.0.1",)
        for _, _, _, message in BAD:
            assert any(p.startswith(message) for p in source.status.problems), (message, source.status.problems)
        # The watch keeps going: a malformed update is reported, later updates of other pods apply.
        kube.upsert(malformed("a", "metadata.annotations", {"cluster-name.envoy.uw.io": ["backend"]}))
        kube.upsert(pod("b", "10.0.0.2"))
        await eventually(lambda: world.endpoints("backend") == ("10.0.0.1", "10.0.0.2"), "b to arrive")
        assert any("Pod default/a: metadata.annotations.cluster-name.envoy.uw.io: must be a string" in p
                   for p in source.status.problems)
        pods = source.status.detail["kinds"]["Pod"]  # type: ignore[index]
        assert pods["relists"] == 1 and source.status.up


async def test_objects_without_a_usable_name_from_a_hostile_server(kube: FakeKube, tmp_path: Path) -> None:
    """What no real API server sends (metadata not a mapping, a name that is a number) is still only a problem."""
    kube.upsert(pod("a", "10.0.0.1"))
    hostile = [malformed("x", "metadata.name", 5), malformed("y", "metadata.namespace", ["default"])]
    real_list = kube.store.list

    def with_hostile(rtype, namespace, matches):
        items = real_list(rtype, namespace, matches)
        return items + copy.deepcopy(hostile) if rtype.kind == "Pod" else items

    kube.store.list = with_hostile  # type: ignore[method-assign]
    async with running(kube, tmp_path) as cluster:
        world, source = cluster.world, cluster.source
        await eventually(lambda: source.status.synced, "the first list")
        assert world.endpoints("backend") == ("10.0.0.1",)
        assert any("Pod (unnamed): metadata.name" in p or "metadata.namespace" in p for p in source.status.problems)
        kube.upsert(pod("b", "10.0.0.2"))
        await eventually(lambda: world.endpoints("backend") == ("10.0.0.1", "10.0.0.2"), "b to arrive")
        assert source.status.detail["kinds"]["Pod"]["relists"] == 1  # type: ignore[index]


async def test_credentials_in_the_server_url_are_redacted(kube: FakeKube, tmp_path: Path) -> None:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig")
    config = yaml.safe_load(path.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    scheme, rest = server.split("://")
    config["clusters"][0]["cluster"]["server"] = f"{scheme}://admin:hunter2@{rest}/?token=s3cret"
    path.write_text(yaml.safe_dump(config))
    source = KubernetesSource(ClusterConfig(name="east", kubeconfig=path), World(), FAST)
    task = asyncio.create_task(source.run())
    try:
        await eventually(lambda: source.status.detail.get("server") is not None, "the client to connect")
        shown = str(source.status.to_json())
        assert "hunter2" not in shown and "s3cret" not in shown and "admin" not in shown, shown
        assert f"{scheme}://***@{rest}" in shown, shown
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
