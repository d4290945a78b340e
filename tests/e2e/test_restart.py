"""A control plane crash does not disturb Envoy's traffic, and the restarted control plane sends nothing new when
nothing changed: Envoy declares the versions it has, and they are the versions the new process computes."""

from __future__ import annotations

import pytest

from .harness import free_port, settle, talk, talk_many, wait_until
from .harness.manifests import write_two_pods_egress_and_ingress

pytestmark = pytest.mark.timeout(60)

# Updates Envoy applied or rejected, and the version it runs, per type. (update_attempt is left out: it counts every
# connection attempt too, and Envoy makes several while the control plane is down.)
UPDATES = (
    r"^(cluster_manager\.cds|listener_manager\.lds|cluster\.egress_backends_cluster)\."
    r"(update_success|update_rejected|version)$"
)


async def test_envoy_survives_a_control_plane_kill_and_gets_nothing_new_after_the_restart(
    manifests, start_plane_process, start_envoy, backends
):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    egress_port, ingress_port = free_port(), free_port()
    write_two_pods_egress_and_ingress(manifests, pods.port, app.port, egress_port, ingress_port)
    plane = await start_plane_process()
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")
    assert set(await talk_many(egress_port, 10)) == {"a", "b"}
    assert await talk(ingress_port, source="127.0.0.2") == "app"
    assert await envoy.stat("control_plane.connected_state") == 1

    plane.kill()  # SIGKILL: no goodbye on the stream
    await wait_until(lambda: _connected(envoy, 0), what="envoy to notice the control plane is gone")
    # Envoy keeps serving with what it has.
    assert set(await talk_many(egress_port, 10)) == {"a", "b"}
    assert await talk(ingress_port, source="127.0.0.2") == "app"
    assert await talk(ingress_port, source="127.0.0.9") is None
    before = await envoy.stats(UPDATES)
    assert len(before) == 9, before

    await plane.start()  # same config, same ports, nothing changed
    await wait_until(lambda: _connected(envoy, 1), timeout=20, what="envoy to reconnect")
    await plane.admin.wait_in_sync("node-a")  # Envoy declared the versions the new process has
    await settle(1.0)  # room for a needless push to arrive

    metrics = await plane.admin.metrics()
    for xds_type in ("CDS", "EDS", "LDS"):
        sent = await plane.admin.metric("xds_responses_total", type=xds_type)
        assert sent == 0, f"the restarted control plane sent {xds_type}:\n{metrics}"
    assert await plane.admin.metric("xds_requests_total", type="CDS") >= 1  # it did hear from Envoy
    assert await envoy.stats(UPDATES) == before
    assert set(await talk_many(egress_port, 10)) == {"a", "b"}


async def _connected(envoy, state: int) -> bool:
    return await envoy.stat("control_plane.connected_state") == state
