"""Replicas are interchangeable: two control planes on the same manifests serve the same versions, so an Envoy whose
xDS cluster lists both, when its replica goes away, reconnects to the other and re-applies nothing. On SIGTERM a
control plane closes its streams at once (Envoys move before it exits) and exits by itself, promptly."""

from __future__ import annotations

import pytest

from .harness import PlaneProcess, free_port, settle, talk, talk_many, wait_until
from .harness.manifests import write_two_pods_egress_and_ingress

pytestmark = pytest.mark.timeout(90)

# What Envoy applied: any re-applied listener or cluster moves one of these.
APPLIED = (
    r"^(listener_manager\.(listener_added|listener_modified|listener_removed|lds\.update_success|lds\.version)"
    r"|cluster_manager\.(cluster_added|cluster_modified|cluster_removed|cds\.update_success|cds\.version)"
    r"|cluster\.egress_backends_cluster\.(update_success|version))$"
)


async def _serving(plane: PlaneProcess, node: str) -> bool:
    return node in await plane.admin.json("/debug/nodes")


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_moves_to_the_other_replica_on_sigterm_and_reapplies_nothing(
    manifests, start_plane_process, start_envoy, backends, delta: bool
):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    egress_port, ingress_port = free_port(), free_port()
    write_two_pods_egress_and_ingress(manifests, pods.port, app.port, egress_port, ingress_port)
    one, two = await start_plane_process("one"), await start_plane_process("two")
    envoy = await start_envoy("node-a", one.xds_port, delta=delta, replica_ports=[two.xds_port])
    # Both replicas hold the same snapshot, with the same versions.
    assert await one.admin.snapshot("node-a") == await two.admin.snapshot("node-a")

    async def connected() -> tuple[PlaneProcess, PlaneProcess] | None:
        if await _serving(one, "node-a"):
            return one, two
        if await _serving(two, "node-a"):
            return two, one
        return None

    current, other = await wait_until(connected, what="envoy connected to a replica")
    await current.admin.wait_in_sync("node-a")
    assert set(await talk_many(egress_port, 6)) == {"a", "b"}
    before = await envoy.stats(APPLIED)
    assert before["listener_manager.listener_added"] == 2, before

    assert current.proc is not None
    current.proc.terminate()  # SIGTERM
    current.proc.wait(10)  # it exits by itself, within the time a Deployment's grace period allows
    assert current.proc.returncode == 0, current.log_tail()
    assert "node-a disconnected" in current.log_tail()

    await wait_until(lambda: _serving(other, "node-a"), timeout=20, what="envoy on the other replica")
    await other.admin.wait_in_sync("node-a")  # from the versions Envoy declared: the same on both replicas
    await settle(1.0)  # room for a needless push to arrive
    for xds_type in ("CDS", "EDS", "LDS"):
        assert await other.admin.metric("xds_responses_total", type=xds_type) == 0, xds_type
    assert await envoy.stats(APPLIED) == before
    assert set(await talk_many(egress_port, 6)) == {"a", "b"}
    assert await talk(ingress_port, source="127.0.0.2") == "app"
