"""Live edits of manifest files reach Envoy without restarting anything, and reach only the Envoys they concern."""

from __future__ import annotations

import pytest

from .harness import egress, free_port, pod, settle, talk, talk_many, wait_until

pytestmark = pytest.mark.timeout(40)


def reached(port: int, name: str, rounds: int = 10):
    """A predicate: one of `rounds` connections reached backend `name`."""

    async def check() -> bool:
        return name in await talk_many(port, rounds)

    return check


def avoided(port: int, name: str, rounds: int = 10):
    """A predicate: `rounds` connections in a row all answered, none by backend `name`."""

    async def check() -> bool:
        replies = await talk_many(port, rounds)
        return name not in replies and None not in replies

    return check


async def test_pod_edits_change_where_traffic_goes(manifests, start_plane, start_envoy, backends):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3"})
    listen = free_port()
    manifests.write("pod-a.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write("listeners.yaml", egress("backends", "node-a", listen, pods.port, "backends"))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    assert set(await talk_many(listen, 5)) == {"a"}

    async def b_gets_traffic(why: str) -> None:
        await wait_until(reached(listen, "b"), what=f"pod b to get traffic ({why})")

    async def b_gets_none(why: str) -> None:
        await wait_until(avoided(listen, "b"), what=f"pod b to get no traffic ({why})")
        assert (await envoy.clusters())["egress_backends_cluster"] == [f"127.0.0.2:{pods.port}"], why
        hits = pods["b"].hits
        assert set(await talk_many(listen, 10)) == {"a"} and pods["b"].hits == hits, why

    manifests.write("pod-b.yaml", pod("b", "127.0.0.3", "backends"))  # a new pod, in a new file
    await b_gets_traffic("added")
    manifests.remove("pod-b.yaml")
    await b_gets_none("deleted")

    manifests.write("pod-b.yaml", pod("b", "127.0.0.3", "backends"))
    await b_gets_traffic("back")
    manifests.write("pod-b.yaml", pod("b", "127.0.0.3", "backends", terminating=True))
    await b_gets_none("terminating: metadata.deletionTimestamp set")

    manifests.write("pod-b.yaml", pod("b", "127.0.0.3", "backends"))
    await b_gets_traffic("back again")
    manifests.write("pod-b.yaml", pod("b", "127.0.0.3", "backends", ready=False))
    await b_gets_none("Ready condition False")

    # Each change was one push (a new snapshot, answered by Envoy): the push latency histogram saw them.
    await plane.admin.wait_in_sync("node-a")
    pushes = await plane.admin.metric("xds_push_seconds_count", mode="sotw")
    assert 6 <= pushes <= await plane.admin.metric("xds_responses_total", type="EDS"), pushes


async def test_listenport_change_moves_the_listener(manifests, start_plane, start_envoy, backends):
    pods = await backends({"a": "127.0.0.2"})
    old, new = free_port(), free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write("listeners.yaml", egress("backends", "node-a", old, pods.port, "backends"))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    assert await talk(old) == "a"

    manifests.write("listeners.yaml", egress("backends", "node-a", new, pods.port, "backends"))

    async def moved() -> bool:
        return await talk(new) == "a" and await talk(old) is None

    await wait_until(moved, what="the new port to answer and the old one to refuse")
    assert (await envoy.listeners())["egress_backends"] == f"127.0.0.1:{new}"
    assert await envoy.stat("listener_manager.lds.update_rejected") == 0



async def test_new_listeners_and_their_clusters_arrive_live(manifests, start_plane, start_envoy, backends):
    """A listener added while Envoy runs brings a new EDS cluster, which Envoy warms before it ACKs the CDS update."""
    first = await backends({"a": "127.0.0.2"})
    second = await backends({"x": "127.0.0.6"})
    port_a, port_same, port_x = free_port(), free_port(), free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"), pod("x", "127.0.0.6", "others"))
    manifests.write("listeners.yaml", egress("a", "node-a", port_a, first.port, "backends"))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    assert await talk(port_a) == "a"

    # A second listener to the same pods and port: a new cluster whose EDS resource Envoy already has.
    manifests.write(
        "listeners.yaml",
        egress("a", "node-a", port_a, first.port, "backends"),
        egress("same", "node-a", port_same, first.port, "backends"),
    )
    await wait_until(lambda: _answered_by(port_same, "a"), what="the listener sharing an EDS resource to serve")

    # A third to other pods: a new cluster and a new EDS resource.
    manifests.write(
        "listeners.yaml",
        egress("a", "node-a", port_a, first.port, "backends"),
        egress("same", "node-a", port_same, first.port, "backends"),
        egress("x", "node-a", port_x, second.port, "others"),
    )
    await wait_until(lambda: _answered_by(port_x, "x"), what="the listener with a new EDS resource to serve")

    # A changed cluster: the first listener's targetport moves (a new EDS resource for a cluster Envoy has).
    moved = await backends({"a-moved": "127.0.0.2"})
    manifests.write(
        "listeners.yaml",
        egress("a", "node-a", port_a, moved.port, "backends"),
        egress("same", "node-a", port_same, first.port, "backends"),
        egress("x", "node-a", port_x, second.port, "others"),
    )
    await wait_until(lambda: _answered_by(port_a, "a-moved"), what="the changed cluster to use the new targetport")
    assert await talk(port_same) == "a"
    await plane.admin.wait_in_sync("node-a")
    stats = await envoy.stats(r"^cluster_manager\.(warming_clusters|active_clusters|cds\.update_rejected)$")
    assert stats == {
        "cluster_manager.active_clusters": 4,  # xds_cluster and the three egress clusters
        "cluster_manager.cds.update_rejected": 0,
        "cluster_manager.warming_clusters": 0,
    }, stats


async def _answered_by(port: int, name: str) -> bool:
    return await talk(port) == name

# Envoy's counters of xDS updates received: CDS and LDS, and EDS per cluster (and each type's version gauge).
UPDATE_STATS = r"^(cluster_manager\.cds\.|listener_manager\.lds\.|cluster\.egress_[^.]+\.(update_|version))"


async def test_a_pod_change_is_pushed_only_to_the_node_that_uses_its_cluster(
    manifests, start_plane, start_envoy, backends
):
    alpha = await backends({"a1": "127.0.0.2", "a2": "127.0.0.3"})
    beta = await backends({"b1": "127.0.0.4"})
    port_a, port_b = free_port(), free_port()
    manifests.write("pods-alpha.yaml", pod("a1", "127.0.0.2", "alpha"))
    manifests.write("pods-beta.yaml", pod("b1", "127.0.0.4", "beta"))
    manifests.write(
        "listeners.yaml",
        egress("to-alpha", "node-a", port_a, alpha.port, "alpha"),
        egress("to-beta", "node-b", port_b, beta.port, "beta"),
    )
    plane = await start_plane()
    envoy_a = await start_envoy("node-a", plane.xds_port)
    envoy_b = await start_envoy("node-b", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")
    await plane.admin.wait_in_sync("node-b")
    assert await talk(port_a) == "a1" and await talk(port_b) == "b1"

    b_sent_before = await plane.admin.node_types("node-b")
    b_stats_before = await envoy_b.stats(UPDATE_STATS)
    a_stats_before = await envoy_a.stats(UPDATE_STATS)
    assert b_stats_before["cluster.egress_to-beta_cluster.update_success"] >= 1, b_stats_before

    manifests.write("pods-alpha.yaml", pod("a1", "127.0.0.2", "alpha"), pod("a2", "127.0.0.3", "alpha"))
    await wait_until(reached(port_a, "a2"), what="node-a to send traffic to the new pod a2")
    await plane.admin.wait_in_sync("node-a")
    await settle(1.0)  # room for a wrong push to node-b to arrive

    # node-a got a new EDS for its cluster, and nothing else (CDS and LDS did not change).
    a_stats = await envoy_a.stats(UPDATE_STATS)
    eds_updates = "cluster.egress_to-alpha_cluster.update_success"
    assert a_stats[eds_updates] > a_stats_before[eds_updates]
    for name in ("cluster_manager.cds.update_attempt", "listener_manager.lds.update_attempt"):
        assert a_stats[name] == a_stats_before[name], name
    # node-b: no response on any type (same nonces and versions on our side), no update seen by its Envoy.
    assert await plane.admin.node_types("node-b") == b_sent_before
    assert await envoy_b.stats(UPDATE_STATS) == b_stats_before
    assert await talk(port_b) == "b1"
