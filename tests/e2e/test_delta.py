"""Incremental (delta) ADS against a real Envoy bootstrapped with `api_type: DELTA_GRPC`.

The shared fixtures start the control plane, the backends and Envoy (`start_envoy(..., delta=True)`).
"""

from __future__ import annotations

from collections.abc import Awaitable

import pytest

from envoy.config.cluster.v3 import cluster_pb2

from envoy_control_plane.xds.cache import Snapshot
from envoy_control_plane.xds.resource import Resource
from envoy_control_plane.xds.types import CLUSTER

from .harness import Envoy, PlaneAdmin, egress, free_port, ingress, pod, talk, talk_many, wait_until

pytestmark = pytest.mark.timeout(90)

NODE = "node-delta"
XDS = ("CDS", "EDS", "LDS")


async def responses(admin: PlaneAdmin) -> dict[str, float]:
    return {t: await admin.metric("xds_responses_total", type=t) for t in XDS}


async def assert_nothing_rejected(envoy: Envoy, admin: PlaneAdmin) -> None:
    rejected = await envoy.stats(r"update_rejected$")
    assert "cluster_manager.cds.update_rejected" in rejected and "listener_manager.lds.update_rejected" in rejected
    assert any(name.startswith("cluster.egress_") for name in rejected), rejected  # the EDS cluster's counter
    assert set(rejected.values()) == {0}, rejected
    for t in XDS:
        assert await admin.metric("xds_nacks_total", type=t) == 0, t


async def delta_streams(admin: PlaneAdmin, node: str) -> list[dict]:
    return (await admin.json("/debug/nodes")).get(node, {}).get("streams", [])


async def test_delta_envoy_gets_traffic_endpoint_and_listener_updates(
    manifests, start_plane, start_envoy, backends
):
    pods = await backends({"backend-a": "127.0.0.2", "backend-b": "127.0.0.3"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    listen, app_listen = free_port(), free_port()
    manifests.write("pods.yaml", pod("backend-a", "127.0.0.2", "backends"), pod("backend-b", "127.0.0.3", "backends"))
    manifests.write(
        "listeners.yaml",
        egress("backends", NODE, listen, pods.port, "backends"),
        ingress("app", NODE, app_listen, app.port),
    )
    plane = await start_plane()
    envoy = await start_envoy(NODE, plane.xds_port, delta=True)
    assert "DELTA_GRPC" in envoy.bootstrap_path.read_text()
    admin = plane.admin

    (stream,) = await delta_streams(admin, NODE)
    assert stream["mode"] == "delta" and stream["types"]["CDS"]["wildcard"] and stream["types"]["LDS"]["wildcard"]
    assert stream["types"]["EDS"]["subscribed"] == [f"backends:{pods.port}"]
    assert await admin.metric("xds_connected_streams", mode="delta") == 1
    await admin.wait_in_sync(NODE)

    # Traffic through both listeners.
    replies = await talk_many(listen, 20)
    assert set(replies) == {"backend-a", "backend-b"}, replies
    assert await talk(app_listen) == "app"

    # A pod leaves: one EDS push, and nothing else.
    before = await responses(admin)
    manifests.write("pods.yaml", pod("backend-a", "127.0.0.2", "backends"))
    await wait_until(
        lambda: _hosts(envoy, "egress_backends_cluster", [f"127.0.0.2:{pods.port}"]), what="the EDS update in envoy"
    )
    await admin.wait_in_sync(NODE)
    after = await responses(admin)
    assert after["EDS"] == before["EDS"] + 1 and after["CDS"] == before["CDS"] and after["LDS"] == before["LDS"]
    assert set(await talk_many(listen, 10)) == {"backend-a"}

    # Listeners change: the egress listener moves to another port, the ingress listener (and its cluster) go.
    new_listen = free_port()
    manifests.write("listeners.yaml", egress("backends", NODE, new_listen, pods.port, "backends"))
    await wait_until(
        lambda: _equal(envoy.listeners(), {"egress_backends": f"127.0.0.1:{new_listen}"}), what="the LDS update"
    )
    await wait_until(lambda: _lacks(envoy.clusters(), "ingress_app_cluster"), what="the ingress cluster's removal")
    await admin.wait_in_sync(NODE)
    assert await talk(new_listen) == "backend-a"
    await wait_until(lambda: _refused(listen), what="the old egress port to close")
    await wait_until(lambda: _refused(app_listen), what="the ingress listener to close")

    await assert_nothing_rejected(envoy, admin)
    assert await envoy.stat("control_plane.connected_state") == 1


async def test_delta_reconnect_to_a_restarted_control_plane_resends_nothing_unchanged(
    manifests, start_plane_process, start_envoy, backends
):
    """Envoy declares what it has (initial_resource_versions); the new process, with the same content, sends nothing
    until something changes, and then only that."""
    pods = await backends({"backend-a": "127.0.0.2", "backend-b": "127.0.0.3"})
    listen = free_port()
    manifests.write("pods.yaml", pod("backend-a", "127.0.0.2", "backends"), pod("backend-b", "127.0.0.3", "backends"))
    manifests.write("listeners.yaml", egress("backends", NODE, listen, pods.port, "backends"))
    plane = await start_plane_process()
    envoy = await start_envoy(NODE, plane.xds_port, delta=True)
    await plane.admin.wait_in_sync(NODE)
    assert set(await talk_many(listen, 10)) == {"backend-a", "backend-b"}

    plane.kill()
    await plane.start()
    await wait_until(lambda: delta_streams(plane.admin, NODE), 20, what="envoy to reconnect")
    await plane.admin.wait_in_sync(NODE)
    assert await responses(plane.admin) == {"CDS": 0, "EDS": 0, "LDS": 0}
    assert set(await talk_many(listen, 10)) == {"backend-a", "backend-b"}

    manifests.write("pods.yaml", pod("backend-b", "127.0.0.3", "backends"))
    await wait_until(
        lambda: _hosts(envoy, "egress_backends_cluster", [f"127.0.0.3:{pods.port}"]), what="the EDS update in envoy"
    )
    await plane.admin.wait_in_sync(NODE)
    assert await responses(plane.admin) == {"CDS": 0, "EDS": 1, "LDS": 0}
    assert set(await talk_many(listen, 10)) == {"backend-b"}
    await assert_nothing_rejected(envoy, plane.admin)


async def test_a_changed_eds_cluster_finishes_warming(manifests, start_plane, start_envoy, backends):
    """A CDS change to an EDS cluster whose endpoints did not change: the control plane resends its assignment, so
    the new cluster leaves warming at once. No manifest edit changes a cluster but not its endpoints, so the changed
    cluster is put into the node's snapshot directly."""
    pods = await backends({"backend-a": "127.0.0.2", "backend-b": "127.0.0.3"})
    listen = free_port()
    manifests.write("pods.yaml", pod("backend-a", "127.0.0.2", "backends"), pod("backend-b", "127.0.0.3", "backends"))
    manifests.write("listeners.yaml", egress("backends", NODE, listen, pods.port, "backends"))
    plane = await start_plane()
    envoy = await start_envoy(NODE, plane.xds_port, delta=True)
    await plane.admin.wait_in_sync(NODE)
    before = await responses(plane.admin)

    cache = plane.control_plane.cache
    current = cache.get(NODE)
    (old,) = current.of_type(CLUSTER).values()
    message = cluster_pb2.Cluster.FromString(old.body)
    message.connect_timeout.seconds = 7
    changed = Resource.of(CLUSTER, old.name, message, refs=old.refs)
    by_type = {t: list(rs.values()) for t, rs in current.resources.items()}
    cache.set(NODE, Snapshot.build({**by_type, CLUSTER: [changed]}))

    async def active_with_new_timeout() -> bool:
        sections = await envoy.dump_sections()
        clusters = sections["clusters"]
        warming = clusters.get("dynamic_warming_clusters", [])
        active = {c["cluster"]["name"]: c["cluster"] for c in clusters.get("dynamic_active_clusters", [])}
        return not warming and active.get(old.name, {}).get("connect_timeout") == "7s"

    await wait_until(active_with_new_timeout, 10, what="the changed cluster to be active (not warming)")
    await plane.admin.wait_in_sync(NODE)
    after = await responses(plane.admin)
    assert after == {**before, "CDS": before["CDS"] + 1, "EDS": before["EDS"] + 1}
    assert set(await talk_many(listen, 10)) == {"backend-a", "backend-b"}
    await assert_nothing_rejected(envoy, plane.admin)


async def _hosts(envoy: Envoy, cluster: str, expected: list[str]) -> bool:
    return (await envoy.clusters()).get(cluster) == expected


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _lacks(clusters: Awaitable[dict[str, list[str]]], name: str) -> bool:
    return name not in await clusters


async def _refused(port: int) -> bool:
    return await talk(port) is None
