"""Pods in Kubernetes clusters (fake API servers) as Envoy endpoints, seen through a real Envoy's traffic.

Each pod's IP is a loopback address where a backend answers with the pod's name, so a reply says which pods Envoy
balances over: pods of one name in two clusters merge, terminating and not-Ready pods leave at once, and a relist
after a 410 removes a pod deleted while the watch was down.
"""

from __future__ import annotations

import pytest

from .harness import free_port, wait_until
from .kube_fixtures import kegress, kpod, reaches, source_status

pytestmark = pytest.mark.timeout(30)


async def test_pods_of_one_name_in_two_clusters_share_the_traffic(
    fake_clusters, start_kube_plane, start_envoy, backends
):
    pods = await backends({"aws-1": "127.0.0.2", "gcp-1": "127.0.0.3", "aws-2": "127.0.0.4", "gcp-2": "127.0.0.5"})
    listen = free_port()
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    aws.kube.upsert(kpod("aws-1", "127.0.0.2", "backends"))
    gcp.kube.upsert(kpod("gcp-1", "127.0.0.3", "backends"))
    aws.kube.upsert(kegress("backends", "node-a", listen, pods.port, "backends"))
    plane = await start_kube_plane(aws, gcp)
    envoy = await start_envoy("node-a", plane.xds_port)

    await reaches(listen, {"aws-1", "gcp-1"})
    clusters = await envoy.clusters()
    assert clusters["egress_backends_cluster"] == [f"127.0.0.2:{pods.port}", f"127.0.0.3:{pods.port}"]

    # A pod added in either cluster joins the same pool.
    gcp.kube.upsert(kpod("gcp-2", "127.0.0.5", "backends"))
    await reaches(listen, {"aws-1", "gcp-1", "gcp-2"})
    aws.kube.upsert(kpod("aws-2", "127.0.0.4", "backends"))
    await reaches(listen, {"aws-1", "aws-2", "gcp-1", "gcp-2"})

    # The same IP in both clusters (a pod seen twice) is one endpoint; it stays while either still has it.
    gcp.kube.upsert(kpod("aws-2-copy", "127.0.0.4", "backends"))
    aws.kube.delete("Pod", "default", "aws-2")
    await wait_until(lambda: _sources_agree(plane, {"aws": 1, "gcp": 3}), what="the delete to arrive")
    await reaches(listen, {"aws-1", "aws-2", "gcp-1", "gcp-2"})
    assert len((await envoy.clusters())["egress_backends_cluster"]) == 4


async def _sources_agree(plane, pods_by_cluster: dict[str, int]) -> bool:
    for name, count in pods_by_cluster.items():
        if (await source_status(plane, name))["kinds"]["Pod"]["objects"] != count:
            return False
    return True


async def test_terminating_and_not_ready_pods_leave_the_pool(fake_clusters, start_kube_plane, start_envoy, backends):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"})
    listen = free_port()
    aws = await fake_clusters("aws")
    kube = aws.kube
    for name, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")):
        kube.upsert(kpod(name, ip, "backends"))
    kube.upsert(kegress("backends", "node-a", listen, pods.port, "backends"))
    plane = await start_kube_plane(aws)
    await start_envoy("node-a", plane.xds_port)
    await reaches(listen, {"a", "b", "c"})

    # Deleted, but held Terminating (a grace period): it leaves the pool now, while the API server still has it.
    kube.hold_terminating()
    kube.delete("Pod", "default", "a")
    assert kube.get("Pod", "default", "a")["metadata"]["deletionTimestamp"]
    await reaches(listen, {"b", "c"})  # backend "a" still listens: only Envoy's pool can keep traffic off it
    assert kube.get("Pod", "default", "a")["metadata"]["deletionTimestamp"]  # still there, still terminating
    kube.finish_termination()
    await wait_until(lambda: _sources_agree(plane, {"aws": 2}), what="the terminated pod to go")
    await reaches(listen, {"b", "c"})

    # Not Ready: out of the pool; Ready again: back in.
    kube.set_pod_ready("default", "b", False)
    await reaches(listen, {"c"})
    kube.set_pod_ready("default", "b", True)
    await reaches(listen, {"b", "c"})


async def test_a_pod_deleted_during_a_watch_gap_is_gone_after_the_410_relist(
    fake_clusters, start_kube_plane, start_envoy, backends
):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"})
    listen = free_port()
    aws = await fake_clusters("aws")
    kube = aws.kube
    kube.upsert(kpod("a", "127.0.0.2", "backends"))
    kube.upsert(kpod("b", "127.0.0.3", "backends"))
    kube.upsert(kegress("backends", "node-a", listen, pods.port, "backends"))
    plane = await start_kube_plane(aws)
    await start_envoy("node-a", plane.xds_port)
    await reaches(listen, {"a", "b"})
    assert (await source_status(plane, "aws"))["kinds"]["Pod"]["relists"] == 1

    # The watch breaks; meanwhile "a" is deleted, "c" is added, and the history is compacted, so no watch can
    # resume from the version the control plane holds: it gets 410 Expired and must relist.
    await kube.stop()
    kube.delete("Pod", "default", "a")
    kube.upsert(kpod("c", "127.0.0.4", "backends"))
    kube.compact()
    await kube.start()

    await reaches(listen, {"b", "c"})
    status = await source_status(plane, "aws")
    assert status["kinds"]["Pod"]["relists"] == 2, status  # the deletion came from the relist, not from an event
    assert status["up"] and not status["stale"] and status["last_error"] is None, status
