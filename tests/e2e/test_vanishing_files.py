"""Files that vanish for a moment (an editor, `git checkout`, rsync) change nothing in any Envoy; files deleted for
good are deleted after the grace; a ConfigMap volume's `..data` swap applies at once, removed keys included."""

from __future__ import annotations

import os

import pytest
import yaml

from .harness import egress, free_port, pod, settle, talk, talk_many, wait_until
from .harness.manifests import configmap_update, write_egress_and_ingress

pytestmark = pytest.mark.timeout(60)


async def test_a_directory_emptied_briefly_removes_nothing_and_a_real_deletion_lands(
    manifests, start_plane, start_envoy, backends, tmp_path
):
    pods = await backends({"a": "127.0.0.2"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    egress_port, ingress_port = free_port(), free_port()
    write_egress_and_ingress(manifests, pods.port, app.port, egress_port, ingress_port)
    plane = await start_plane(manifest_delete_grace_s=3)
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")
    assert set(await talk_many(egress_port, 5)) == {"a"}

    aside = tmp_path / "aside"
    aside.mkdir()
    names = sorted(os.listdir(manifests.path))
    since = plane.manifest_status.last_change
    for name in names:  # emptied, as `git checkout` or `rsync --delete` leave it for a moment
        os.rename(manifests.path / name, aside / name)
    await plane.wait_reloaded(since)  # the source has seen the directory empty
    since = plane.manifest_status.last_change
    for name in names:
        os.rename(aside / name, manifests.path / name)
    await plane.wait_reloaded(since)
    assert plane.manifest_status.detail["vanishing"] == []
    await settle(1.0)
    assert await envoy.stat("listener_manager.listener_removed") == 0
    assert set(await envoy.listeners()) == {"egress_backends", "ingress_app"}
    assert set(await talk_many(egress_port, 5)) == {"a"}
    assert await talk(ingress_port, source="127.0.0.2") == "app"

    manifests.remove("ingress.yaml")  # for good: gone once the grace has passed
    await wait_until(lambda: _listeners(envoy, {"egress_backends"}), what="the deleted file's listener to go")
    assert await envoy.stat("listener_manager.listener_removed") == 1


async def test_a_configmap_volume_swap_applies_at_once(manifests, start_plane, start_envoy, backends):
    pods = await backends({"a": "127.0.0.2"})
    first, second, moved = free_port(), free_port(), free_port()
    volume = manifests.path / "configmap"
    configmap_update(volume, "..v1", {
        "pods.yaml": yaml.safe_dump(pod("a", "127.0.0.2", "backends")),
        "first.yaml": yaml.safe_dump(egress("first", "node-a", first, pods.port, "backends")),
        "second.yaml": yaml.safe_dump(egress("second", "node-a", second, pods.port, "backends")),
    })
    plane = await start_plane(manifest_delete_grace_s=3)  # "at once" is then well inside the grace
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")
    assert set(await envoy.listeners()) == {"egress_first", "egress_second"}

    configmap_update(volume, "..v2", {  # second.yaml removed from the ConfigMap, first.yaml changed
        "pods.yaml": yaml.safe_dump(pod("a", "127.0.0.2", "backends")),
        "first.yaml": yaml.safe_dump(egress("first", "node-a", moved, pods.port, "backends")),
    })
    await wait_until(lambda: _listeners(envoy, {"egress_first"}), what="the swap to remove egress_second")
    await wait_until(lambda: _port_of(envoy, "egress_first", moved), what="the swap to move egress_first")
    assert set(await talk_many(moved, 5)) == {"a"}
    assert plane.manifest_status.problems == []


async def _listeners(envoy, names: set[str]) -> bool:
    return set(await envoy.listeners()) == names


async def _port_of(envoy, name: str, port: int) -> bool:
    return (await envoy.listeners()).get(name, "").endswith(f":{port}")
