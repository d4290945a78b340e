"""Protocol corner cases found under churn with real Envoys (issue 7): each one reproduced through a real Envoy."""

from __future__ import annotations

import logging

import pytest

from .harness import egress, free_port, ingress, pod, settle, start_backend, talk, wait_until
from .kube_fixtures import kingress

pytestmark = pytest.mark.timeout(60)

NODE = "node-a"


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_listeners_keep_coming_after_the_node_loses_its_last_eds_cluster(
    manifests, start_plane, start_envoy, backends, delta
):
    """SotW: Envoy unsubscribes from EDS with an older nonce and never ACKs an EDS response it no longer watches;
    that used to leave EDS pending and every later LDS push stuck behind it."""
    pods = await backends({"a": "127.0.0.2"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    out, in1, in2 = free_port(), free_port(), free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write("egress.yaml", egress("out", NODE, out, pods.port, "backends"))
    manifests.write("in1.yaml", ingress("in1", NODE, in1, app.port))
    plane = await start_plane()
    envoy = await start_envoy(NODE, plane.xds_port, delta=delta)
    assert await talk(out) == "a" and await talk(in1) == "app"

    manifests.remove("egress.yaml")
    await wait_until(lambda: _refused(out), what="the egress listener to go")
    await plane.admin.wait_in_sync(NODE, ("CDS", "LDS"))
    manifests.write("in2.yaml", ingress("in2", NODE, in2, app.port))
    await wait_until(lambda: _answers(in2), what="the second ingress listener to arrive")
    assert sorted(await envoy.listeners()) == ["ingress_in1", "ingress_in2"]
    assert await envoy.stat("listener_manager.lds.update_rejected") == 0


async def _refused(port: int) -> bool:
    return await talk(port) is None


async def _answers(port: int) -> bool:
    return await talk(port) == "app"


async def test_delta_nack_of_one_listener_leaves_the_others_applied_and_followed(
    manifests, start_plane, start_envoy, backends
):
    """Envoy rejects one listener of a delta LDS push (its port is taken) and applies the others: an allow-list that
    changed in that push, then changed back, must reach Envoy (it used to keep admitting the removed pod)."""
    app = (await backends({"app": "127.0.0.1"}))["app"]
    listen, blocked = free_port(), free_port()
    taken = await start_backend("squatter", "127.0.0.1", blocked)  # the port Envoy cannot bind
    old, new = "127.0.0.2", "127.0.0.3"

    def world(client_ip: str, *extra: dict) -> None:
        manifests.write("all.yaml", pod("client", client_ip, "clients"),
                        ingress("app", NODE, listen, app.port, rbacallowcluster="clients"), *extra)  # fmt: skip

    world(old)
    plane = await start_plane()
    envoy = await start_envoy(NODE, plane.xds_port, delta=True)
    assert await talk(listen, source=old) == "app" and await talk(listen, source=new) is None

    # One push: a listener whose port is taken (rejected), and the allow-list moves to the new pod (applied).
    world(new, egress("blocked", NODE, blocked, app.port, "clients"))
    await wait_until(lambda: _admits(listen, new, old), what="the new allow-list in force")
    await wait_until(lambda: _nacked(plane), what="the NACK of the blocked listener")
    assert "egress_blocked" not in await envoy.listeners()

    # The allow-list changes back (the rejected listener is unchanged): Envoy must follow.
    world(old, egress("blocked", NODE, blocked, app.port, "clients"))
    await wait_until(lambda: _admits(listen, old, new), what="the old allow-list back in force")
    await taken.close()


async def _admits(port: int, allowed: str, refused: str) -> bool:
    return await talk(port, source=allowed) == "app" and await talk(port, source=refused) is None


async def _nacked(plane) -> bool:
    return await plane.admin.metric("xds_nacks_total", type="LDS") >= 1


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_restart_during_an_api_server_outage_keeps_what_envoy_runs(
    fake_clusters, start_kube_plane, start_envoy, backends, delta
):
    """Issue 7 item 8: a control plane restarted while one Kubernetes cluster cannot be reached serves xDS without
    that cluster's objects after initial_sync_timeout_s; a reconnecting Envoy keeps what it runs from there (delta:
    additions and updates still arrive; SotW: nothing that would delete arrives), and real removals apply once the
    cluster answers."""
    app = (await backends({"app": "127.0.0.1"}))["app"]
    from_aws, from_gcp, added = free_port(), free_port(), free_port()
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    aws.kube.upsert(kingress("a", NODE, from_aws, app.port))
    gcp.kube.upsert(kingress("g", NODE, from_gcp, app.port))
    xds = {"address": "127.0.0.1", "debounce_ms": 10, "initial_sync_timeout_s": 0.3, "port": free_port()}
    first = await start_kube_plane(aws, gcp, xds=xds)
    envoy = await start_envoy(NODE, first.xds_port, delta=delta)
    assert await talk(from_aws) == "app" and await talk(from_gcp) == "app"

    await first.control_plane.stop()
    await gcp.kube.stop()
    gcp.kube.delete("IngressListener", "default", "g")  # deleted during the outage: seen only once gcp answers
    second = await start_kube_plane(aws, gcp, xds=xds)
    await wait_until(lambda: _reconnected(second), what="the Envoy to reconnect and declare its listeners")
    if delta:  # additions still arrive
        aws.kube.upsert(kingress("a2", NODE, added, app.port))
        await wait_until(lambda: _answers(added), what="a listener added during the outage")
    else:
        await settle()
    assert "ingress_g" in await envoy.listeners() and await talk(from_gcp) == "app"

    await gcp.kube.start()
    await wait_until(lambda: _refused(from_gcp), what="the listener deleted during the outage to go")
    assert await talk(from_aws) == "app"
    assert await envoy.stat("listener_manager.lds.update_rejected") == 0


async def _reconnected(plane) -> bool:
    return "LDS" in await plane.admin.node_types(NODE)


async def test_on_reconnect_a_delta_envoy_loses_a_listener_before_its_cluster(
    manifests, start_plane, start_envoy, backends, caplog
):
    """Issue 7 item 10: Envoy re-sends CDS before LDS when it reconnects; the cluster of a listener deleted while it
    was away must go only after the listener."""
    pods = await backends({"a": "127.0.0.2"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    out, inbound = free_port(), free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write("egress.yaml", egress("out", NODE, out, pods.port, "backends"))
    manifests.write("in.yaml", ingress("in", NODE, inbound, app.port))
    xds = {"address": "127.0.0.1", "debounce_ms": 10, "port": free_port()}
    first = await start_plane(xds=xds)
    envoy = await start_envoy(NODE, first.xds_port, delta=True)
    assert await talk(out) == "a"

    await first.control_plane.stop()
    manifests.remove("egress.yaml")
    caplog.set_level(logging.DEBUG, logger="envoy_control_plane")  # a line per push is at DEBUG
    caplog.clear()
    await start_plane(xds=xds)
    await wait_until(lambda: _refused(out), what="the egress listener to go")
    await wait_until(lambda: _no_egress_cluster(envoy), what="its cluster to go")
    sent = [r.getMessage() for r in caplog.records if "removed" in r.getMessage() and ": sent " in r.getMessage()]
    assert [line.split(": sent ")[1][:3] for line in sent] == ["LDS", "CDS"], sent
    assert await talk(inbound) == "app"


async def _no_egress_cluster(envoy) -> bool:
    return not any(name.startswith("egress_") for name in await envoy.clusters())
