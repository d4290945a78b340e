"""The control plane's admin endpoints, with a real Envoy connected: health, readiness, metrics and debug dumps."""

from __future__ import annotations

import pytest

from .harness import egress, free_port, ingress, metric_value, pod, wait_until

pytestmark = pytest.mark.timeout(30)


async def test_admin_endpoints_describe_the_connected_envoy(manifests, start_plane, start_envoy, backends):
    pods = await backends({"a": "127.0.0.2"})
    egress_port, ingress_port, app_port = free_port(), free_port(), free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"), pod("c", "127.0.0.4", "clients"))
    manifests.write(
        "listeners.yaml",
        egress("backends", "node-a", egress_port, pods.port, "backends"),
        ingress("app", "node-a", ingress_port, app_port, rbacallowcluster="clients"),
    )
    plane = await start_plane()
    admin = plane.admin
    envoy = await start_envoy("node-a", plane.xds_port)
    await admin.wait_in_sync("node-a")

    assert await admin.get("/healthz") == (200, "ok\n")
    assert await admin.get("/readyz") == (200, "ready\n")

    metrics = await admin.metrics()
    for name in ("xds_connected_streams", "xds_responses_total", "snapshot_build_seconds"):
        assert f"\nenvoy_cp_{name}" in metrics, name
    assert metric_value(metrics, "xds_connected_streams", mode="sotw") == 1
    for xds_type in ("CDS", "EDS", "LDS"):
        assert metric_value(metrics, "xds_responses_total", type=xds_type) == 1, xds_type
        assert metric_value(metrics, "xds_acks_total", type=xds_type) == 1, xds_type
    assert metric_value(metrics, "snapshot_build_seconds_count") >= 1

    nodes = await admin.json("/debug/nodes")
    assert list(nodes) == ["node-a"]
    [stream] = nodes["node-a"]["streams"]
    assert stream["mode"] == "sotw" and stream["peer"].startswith("ipv4:127.0.0.1:")
    snapshot = await admin.snapshot("node-a")
    for xds_type in ("CDS", "EDS", "LDS"):
        status = stream["types"][xds_type]
        assert status["nonce"] and status["nacks"] == 0 and status["last_nack"] is None, status
        assert status["sent_version"] == status["acked_version"] == snapshot[xds_type]["version"], status
    assert stream["types"]["CDS"]["wildcard"] and stream["types"]["LDS"]["wildcard"]
    assert stream["types"]["EDS"]["subscribed"] == [f"backends:{pods.port}"]

    def names(xds_type: str) -> list[str]:
        return sorted(r.get("name") or r.get("clusterName") for r in snapshot[xds_type]["resources"])

    assert names("LDS") == ["egress_backends", "ingress_app"]
    assert names("CDS") == ["egress_backends_cluster", "ingress_app_cluster"]
    assert names("EDS") == [f"backends:{pods.port}"]
    listeners = {r["name"]: r for r in snapshot["LDS"]["resources"]}
    assert listeners["ingress_app"]["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert listeners["ingress_app"]["address"]["socketAddress"] == {"address": "127.0.0.1", "portValue": ingress_port}
    # The snapshot is what Envoy runs.
    assert sorted(await envoy.listeners()) == names("LDS")
    assert set(names("CDS")) <= set(await envoy.clusters())

    [sync] = await admin.json("/debug/syncz")
    assert (sync["node"], sync["mode"], sync["in_sync"]) == ("node-a", "sotw", True), sync
    assert sync["connected"].endswith("Z") and stream["opened"] == sync["connected"]  # RFC 3339, UTC
    for xds_type in ("CDS", "EDS", "LDS"):
        entry = sync["types"][xds_type]
        assert entry["sent"] == entry["acked"] == entry["current"] == snapshot[xds_type]["version"], entry
    assert "/debug/syncz" in await admin.json("/debug")

    status, body = await admin.get("/debug/snapshot/no-such-node")
    assert status == 404 and "no-such-node" in body

    [source] = await admin.json("/debug/sources")
    assert source["name"] == "manifests" and source["kind"] == "manifests"
    assert source["synced"] and source["up"] and not source["stale"] and source["problems"] == []
    assert source["paths"] == [str(manifests.path)]

    # Envoy goes away: the stream is closed and the node leaves /debug/nodes.
    envoy.stop()

    async def disconnected() -> bool:
        return await admin.metric("xds_connected_streams", mode="sotw") == 0 and await admin.json("/debug/nodes") == {}

    await wait_until(disconnected, what="the stream to close")
