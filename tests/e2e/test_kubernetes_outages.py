"""A Kubernetes cluster that cannot be reached: the others are served regardless, readiness names it, and a cluster
whose API server goes away mid-stream keeps its pods in Envoy (stale) until it answers again."""

from __future__ import annotations

import asyncio

import pytest

from envoy_control_plane.app import ControlPlane
from envoy_control_plane.sources.kubernetes import WatchSettings

from .harness import PlaneAdmin, free_port, loopback_config, settle, wait_until
from .kube_fixtures import (
    kegress,
    kpod,
    reaches,
    source_status,
    wait_synced,
)

pytestmark = pytest.mark.timeout(30)


async def test_an_unreachable_cluster_does_not_hold_back_the_others(
    fake_clusters, start_kube_plane, start_envoy, backends
):
    pods = await backends({"aws-1": "127.0.0.2", "gcp-1": "127.0.0.3"})
    listen = free_port()
    aws = await fake_clusters("aws")
    gcp = await fake_clusters("gcp", start=False)  # its kubeconfig points at a port nobody listens on yet
    aws.kube.upsert(kpod("aws-1", "127.0.0.2", "backends"))
    aws.kube.upsert(kegress("backends", "node-a", listen, pods.port, "backends"))
    gcp.kube.upsert(kpod("gcp-1", "127.0.0.3", "backends"))
    # xDS waits for every cluster's first list, up to initial_sync_timeout_s; then it serves what has loaded.
    xds = {"address": "127.0.0.1", "debounce_ms": 10, "initial_sync_timeout_s": 0.5}
    plane = await start_kube_plane(aws, gcp, xds=xds)
    envoy = await start_envoy("node-a", plane.xds_port)

    # aws's listener and pod are served while gcp is down.
    await reaches(listen, {"aws-1"})
    assert (await envoy.listeners())["egress_backends"] == f"127.0.0.1:{listen}"

    # Ready, as xDS is served (a rescheduled pod must get Service endpoints); the cluster still waiting for its first
    # list is named, and shows in /debug/sources and the metrics.
    await wait_until(lambda: _last_error(plane, "gcp"), what="gcp's connection error to be reported")
    status, body = await plane.admin.get("/readyz")
    assert (status, body) == (200, "ready; not loaded yet: gcp\n")
    assert await plane.admin.metric("source_synced", source="gcp") == 0
    assert await plane.admin.metric("source_synced", source="aws") == 1
    down = await source_status(plane, "gcp")
    assert (down["kind"], down["synced"], down["up"], down["stale"]) == ("kubernetes", False, False, False), down
    assert down["server"] == gcp.kube.url and "Connect" in down["last_error"], down
    assert not any(kind["listed"] for kind in down["kinds"].values()), down
    up = await source_status(plane, "aws")
    assert up["synced"] and up["up"] and up["last_error"] is None, up
    assert await plane.admin.metric("source_up", source="gcp") == 0
    assert await plane.admin.metric("source_up", source="aws") == 1

    # gcp comes up: its pod joins, and the control plane is ready.
    await gcp.kube.start()
    await reaches(listen, {"aws-1", "gcp-1"})
    await wait_synced(plane, "aws", "gcp")
    assert await plane.admin.get("/readyz") == (200, "ready\n")
    assert await plane.admin.metric("source_up", source="gcp") == 1
    for cluster in ("aws", "gcp"):
        for kind in ("Pod", "IngressListener", "EgressListener"):
            assert await plane.admin.metric("kubernetes_relists_total", cluster=cluster, kind=kind) >= 1
            assert await plane.admin.metric("kubernetes_watches_total", cluster=cluster, kind=kind) >= 1


async def _last_error(plane, name: str) -> str | None:
    return (await source_status(plane, name))["last_error"]


async def test_an_api_server_restart_drops_no_endpoint_and_updates_resume(
    fake_clusters, start_kube_plane, start_envoy, backends
):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4", "g": "127.0.0.5"})
    listen = free_port()
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    aws.kube.upsert(kpod("a", "127.0.0.2", "backends"))
    aws.kube.upsert(kpod("b", "127.0.0.3", "backends"))
    gcp.kube.upsert(kpod("g", "127.0.0.5", "backends"))
    gcp.kube.upsert(kegress("backends", "node-a", listen, pods.port, "backends"))
    plane = await start_kube_plane(aws, gcp)
    envoy = await start_envoy("node-a", plane.xds_port)
    await reaches(listen, {"a", "b", "g"})
    await plane.admin.wait_in_sync("node-a")
    membership = "cluster.egress_backends_cluster.membership_change"
    changes_before = await envoy.stat(membership)
    assert changes_before is not None
    eds_pushes_before = await plane.admin.metric("xds_responses_total", type="EDS")

    # aws's API server goes away (its watches are cut, the port is closed).
    await aws.kube.stop()

    async def stale() -> bool:
        status = await source_status(plane, "aws")
        return status["stale"] and not status["up"] and bool(status["last_error"])

    await wait_until(stale, what="aws to turn stale")
    assert await plane.admin.metric("source_stale", source="aws") == 1
    assert await plane.admin.metric("source_up", source="aws") == 0
    assert await plane.admin.metric("source_stale", source="gcp") == 0
    assert (await source_status(plane, "aws"))["synced"]  # it was listed once: still counts as ready
    assert await plane.admin.get("/readyz") == (200, "ready\n")
    # Nothing leaves Envoy while aws is down: traffic still reaches its pods, and the control plane sent no EDS.
    await settle(0.5)  # several failed retries (backoff <= 0.25 s) happen meanwhile
    await reaches(listen, {"a", "b", "g"})
    assert await envoy.stat(membership) == changes_before
    assert await envoy.stat("cluster.egress_backends_cluster.membership_total") == 3
    assert await plane.admin.metric("xds_responses_total", type="EDS") == eds_pushes_before

    # Changes made while it was down arrive once it is back on the same port, by resuming the watch.
    aws.kube.delete("Pod", "default", "a")
    aws.kube.upsert(kpod("c", "127.0.0.4", "backends"))
    await aws.kube.start()
    await reaches(listen, {"b", "c", "g"})

    async def recovered() -> bool:
        status = await source_status(plane, "aws")
        return status["up"] and not status["stale"] and status["last_error"] is None

    await wait_until(recovered, what="aws to recover")
    assert await plane.admin.metric("source_stale", source="aws") == 0
    assert (await source_status(plane, "aws"))["kinds"]["Pod"]["relists"] == 1  # resumed, not relisted

    # And later updates keep flowing.
    aws.kube.set_pod_ready("default", "b", False)
    await reaches(listen, {"c", "g"})


async def test_readiness_waits_for_xds_to_be_served_then_ignores_clusters_that_cannot_be_reached(fake_clusters):
    """Not ready while xDS waits for the first lists (up to initial_sync_timeout_s), ready from when it is served."""
    gcp = await fake_clusters("gcp", start=False)  # nobody listens there
    config = loopback_config(clusters=[gcp.config()], xds={"address": "127.0.0.1", "initial_sync_timeout_s": 1.5})
    plane = ControlPlane(config, WatchSettings(connect_timeout=0.2, backoff_initial=0.02, backoff_max=0.1))
    starting = asyncio.create_task(plane.start())
    try:
        await wait_until(lambda: plane.admin_port != 0, what="the admin port")
        admin = PlaneAdmin(plane.admin_port)
        assert await admin.get("/readyz") == (503, "waiting for sources: gcp\n")
        assert not starting.done()
        await starting  # the timeout passes: xDS is served without gcp
        assert plane.xds_port != 0
        assert await admin.get("/readyz") == (200, "ready; not loaded yet: gcp\n")
    finally:
        if not starting.done():
            starting.cancel()
        await plane.stop()
