"""Egress: a connection to the egress listener reaches the pods of its targetcluster, spread over all of them."""

from __future__ import annotations

import pytest

from .harness import egress, free_port, pod, talk_many, wait_until

pytestmark = pytest.mark.timeout(30)


async def test_egress_traffic_is_spread_over_the_target_cluster_pods(manifests, start_plane, start_envoy, backends):
    pods = await backends({"backend-a": "127.0.0.2", "backend-b": "127.0.0.3"})
    listen = free_port()
    manifests.write(
        "pods.yaml",
        pod("backend-a", "127.0.0.2", "backends"),
        pod("backend-b", "127.0.0.3", "backends"),
        pod("elsewhere", "127.0.0.5", "other"),  # another cluster's pod: never an endpoint of this listener
    )
    manifests.write("listeners.yaml", egress("backends", "node-a", listen, pods.port, "backends"))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)

    # Envoy holds exactly the two pods, on the targetport, for the listener's cluster.
    clusters = await wait_until(envoy.clusters, what="envoy /clusters")
    assert clusters["egress_backends_cluster"] == [f"127.0.0.2:{pods.port}", f"127.0.0.3:{pods.port}"]
    assert (await envoy.listeners())["egress_backends"] == f"127.0.0.1:{listen}"

    replies = await talk_many(listen, 20)
    assert set(replies) == {"backend-a", "backend-b"}, replies
    assert pods["backend-a"].hits + pods["backend-b"].hits == 20
