"""The state file (config `state_dir`) keeps what works across restarts: an object whose current version is invalid
keeps the version that was in force, a cluster that cannot be reached at start is served as it was last seen, and
a damaged state file is logged and ignored."""

from __future__ import annotations

import json

import pytest

from envoy_control_plane.statefile import FILE_NAME

from .harness import egress, free_port, ingress, settle, talk, talk_many, wait_until
from .harness.manifests import write_egress_and_ingress
from .kube_fixtures import kegress, kpod

pytestmark = pytest.mark.timeout(60)


def saved_names(state_dir) -> set[str]:
    """The objects the state file holds (empty while there is none, or it is not one the control plane wrote)."""
    try:
        doc = json.loads((state_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return set()
    return {e["object"]["metadata"]["name"] for entries in doc["sources"].values() for e in entries}


async def test_a_listener_invalid_since_before_a_restart_keeps_its_last_good_version(
    manifests, start_plane_process, start_envoy, backends, tmp_path
):
    pods = await backends({"a": "127.0.0.2"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    egress_port, ingress_port = free_port(), free_port()
    write_egress_and_ingress(manifests, pods.port, app.port, egress_port, ingress_port)
    state_dir = tmp_path / "state"
    plane = await start_plane_process(state_dir=str(state_dir))
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")
    await wait_until(lambda: saved_names(state_dir) == {"a", "backends", "app"}, what="the state file")

    plane.kill()  # no goodbye: what is on disk is what the last write left
    manifests.write("ingress.yaml", ingress("app", "node-a", ingress_port, 70000, rbacallowcluster="backends"))
    manifests.write_text("egress.yaml", "kind: EgressListener\nmetadata: {name: backends\n  - : [\n")  # no YAML
    await plane.start()
    await wait_until(lambda: _connected(envoy), timeout=20, what="envoy to reconnect")
    await plane.admin.wait_in_sync("node-a")
    await settle(1.0)

    assert await envoy.stat("listener_manager.listener_removed") == 0
    assert set(await envoy.listeners()) == {"egress_backends", "ingress_app"}
    assert await talk(ingress_port, source="127.0.0.2") == "app"
    assert set(await talk_many(egress_port, 5)) == {"a"}
    sources = {s["name"]: s for s in await plane.admin.json("/debug/sources")}
    problems = " ".join(sources["manifests"]["problems"])
    assert "IngressListener default/app: spec.targetport" in problems and "egress.yaml" in problems


async def test_a_cluster_down_at_start_is_served_as_it_was_last_seen(fake_clusters, start_kube_plane, tmp_path):
    cluster = await fake_clusters("east")
    cluster.kube.upsert(kpod("web-1", "10.1.0.1", "web"))
    cluster.kube.upsert(kegress("to-web", "node-a", 9090, 8080, "web"))
    state_dir = tmp_path / "state"
    first = await start_kube_plane(cluster, state_dir=str(state_dir))
    await wait_until(lambda: saved_names(state_dir) == {"web-1", "to-web"}, what="the state file")
    await first.control_plane.stop()
    await cluster.kube.stop()

    # initial_sync_timeout_s would hold xDS for a minute for a cluster the state file does not know
    second = await start_kube_plane(cluster, state_dir=str(state_dir), xds={"initial_sync_timeout_s": 60})
    snapshot = await second.admin.snapshot("node-a")
    assert [r["name"] for r in snapshot["LDS"]["resources"]] == ["egress_to-web"], snapshot
    endpoints = json.dumps(snapshot["EDS"]["resources"])
    assert "10.1.0.1" in endpoints
    sources = {s["name"]: s for s in await second.admin.json("/debug/sources")}
    assert sources["east"]["stale"] and not sources["east"]["synced"]


async def test_a_damaged_state_file_is_logged_and_ignored(manifests, start_plane, tmp_path, caplog):
    manifests.write("egress.yaml", egress("backends", "node-a", free_port(), 80, "backends"))
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / FILE_NAME).write_text('{"format": 1, "sources": {"manifests": [{"object": {"kind": "Pod", "met')
    plane = await start_plane(state_dir=str(state_dir))
    assert f"state file {state_dir / FILE_NAME} ignored: JSONDecodeError" in caplog.text
    assert [r["name"] for r in (await plane.admin.snapshot("node-a"))["LDS"]["resources"]] == ["egress_backends"]
    await wait_until(lambda: saved_names(state_dir) == {"backends"}, what="a good state file written over it")


async def _connected(envoy) -> bool:
    return await envoy.stat("control_plane.connected_state") == 1
