"""Bad input never takes down what works: invalid objects and broken files are reported and skipped (or keep their
last good version), and a config Envoy rejects (a NACK) is reported, not resent, and replaced by the next fix."""

from __future__ import annotations

import logging
import socket

import pytest

from .harness import egress, free_port, ingress, pod, settle, talk, talk_many, wait_until

pytestmark = pytest.mark.timeout(40)

MANIFEST_LOGGER = "envoy_control_plane.sources.manifests"


def problems_naming(plane, *fragments: str):
    """A predicate: the manifest source's /debug/sources problems, once one contains each fragment."""

    async def check() -> list[str] | None:
        sources = await plane.admin.json("/debug/sources")
        problems = [p for source in sources for p in source["problems"]]
        return problems if all(any(f in p for p in problems) for f in fragments) else None

    return check


async def test_invalid_listeners_are_reported_and_the_others_keep_working(
    manifests, start_plane, start_envoy, backends, caplog
):
    pods = await backends({"a": "127.0.0.2"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    egress_port, ingress_port = free_port(), free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write(
        "listeners.yaml",
        egress("backends", "node-a", egress_port, pods.port, "backends"),
        ingress("app", "node-a", ingress_port, app.port),
    )
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    assert await talk(egress_port) == "a" and await talk(ingress_port) == "app"

    # Two broken IngressListeners in a new file: a port out of range, and no targetport.
    manifests.write(
        "broken.yaml",
        ingress("bad-port", "node-a", 70000, app.port),
        ingress("no-target", "node-a", free_port(), None),
    )
    problems = await wait_until(
        problems_naming(
            plane,
            "IngressListener default/bad-port: spec.listenport",
            "IngressListener default/no-target: spec.targetport",
        ),
        what="/debug/sources to name both broken listeners and their fields",
    )
    assert any("broken.yaml" in p and "70000" in p for p in problems), problems
    assert await plane.admin.metric("source_problems", source="manifests") == 2
    logged = [r.getMessage() for r in caplog.records if r.name == MANIFEST_LOGGER and r.levelno >= logging.ERROR]
    assert any("IngressListener default/bad-port: spec.listenport" in m for m in logged), logged
    assert any("IngressListener default/no-target: spec.targetport" in m for m in logged), logged

    # A good listener turned bad keeps its last good version.
    manifests.write(
        "listeners.yaml",
        egress("backends", "node-a", egress_port, pods.port, "backends"),
        ingress("app", "node-a", 0, app.port),
    )
    await wait_until(problems_naming(plane, "IngressListener default/app: spec.listenport"), what="the app problem")

    # Envoy never saw any of it: the same two listeners, still serving, nothing rejected.
    assert sorted(await envoy.listeners()) == ["egress_backends", "ingress_app"]
    assert await talk(egress_port) == "a" and await talk(ingress_port) == "app"
    assert await envoy.stat("listener_manager.lds.update_rejected") == 0
    snapshot = await plane.admin.snapshot("node-a")
    assert sorted(r["name"] for r in snapshot["LDS"]["resources"]) == ["egress_backends", "ingress_app"]


async def test_a_file_with_a_yaml_syntax_error_keeps_the_objects_it_gave(manifests, start_plane, start_envoy, backends):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3"})
    listen = free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"), pod("b", "127.0.0.3", "backends"))
    manifests.write("listeners.yaml", egress("backends", "node-a", listen, pods.port, "backends"))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")
    eds_before = await envoy.stat("cluster.egress_backends_cluster.update_attempt")

    manifests.write_text("pods.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a\n  - : [\n")
    problems = await wait_until(problems_naming(plane, "not valid YAML"), what="the YAML error to be reported")
    assert any("pods.yaml" in p for p in problems), problems

    assert set(await talk_many(listen, 20)) == {"a", "b"}
    assert (await envoy.clusters())["egress_backends_cluster"] == [f"127.0.0.2:{pods.port}", f"127.0.0.3:{pods.port}"]
    assert await envoy.stat("cluster.egress_backends_cluster.update_attempt") == eds_before

    # Fixed: the file is read again (here: without b).
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))

    async def only_a() -> bool:
        return set(await talk_many(listen, 10)) == {"a"}

    await wait_until(only_a, what="the fixed file to be used")
    assert await wait_until(lambda: _no_problems(plane), what="the problem to clear")


async def _no_problems(plane) -> bool:
    sources = await plane.admin.json("/debug/sources")
    return all(not s["problems"] for s in sources)


async def test_a_listener_envoy_rejects_is_reported_not_resent_and_replaced_by_the_fix(
    manifests, start_plane, start_envoy, backends
):
    pods = await backends({"a": "127.0.0.2", "b": "127.0.0.3"})
    good = free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write("listeners.yaml", egress("good", "node-a", good, pods.port, "backends"))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")

    with socket.socket() as squatter:  # another process holds the port: Envoy cannot bind it and NACKs the LDS
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        manifests.write(
            "listeners.yaml",
            egress("good", "node-a", good, pods.port, "backends"),
            egress("clash", "node-a", taken, pods.port, "backends"),
        )
        await wait_until(
            lambda: _at_least(envoy.stat("listener_manager.lds.update_rejected"), 1), what="envoy to reject LDS"
        )
        assert await wait_until(lambda: _at_least(plane.admin.metric("xds_nacks_total", type="LDS"), 1))
        lds = (await plane.admin.node_types("node-a"))["LDS"]
        assert lds["nacks"] == 1 and str(taken) in (lds["last_nack"] or ""), lds
        assert lds["acked_version"] != lds["sent_version"], lds  # Envoy keeps the previous version
        assert await talk(good) == "a"  # the other listener keeps working

        # The rejected version is not sent again, even when the node's snapshot is rebuilt for another reason.
        lds_sent = await plane.admin.metric("xds_responses_total", type="LDS")
        manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"), pod("b", "127.0.0.3", "backends"))
        await wait_until(lambda: _reaches(good, "b"), what="the new pod b to get traffic (EDS still flows)")
        await settle(1.0)
        assert await plane.admin.metric("xds_responses_total", type="LDS") == lds_sent
        assert await envoy.stat("listener_manager.lds.update_rejected") == 1
        assert (await plane.admin.node_types("node-a"))["LDS"]["nacks"] == 1

        # The fix (another port) is the next version, and Envoy accepts it.
        fixed = free_port()
        manifests.write(
            "listeners.yaml",
            egress("good", "node-a", good, pods.port, "backends"),
            egress("clash", "node-a", fixed, pods.port, "backends"),
        )
        await wait_until(lambda: _answers(fixed), what="the fixed listener to serve")
    await plane.admin.wait_in_sync("node-a")
    lds = (await plane.admin.node_types("node-a"))["LDS"]
    assert lds["acked_version"] == lds["sent_version"] and lds["nacks"] == 1, lds
    assert await envoy.stat("listener_manager.lds.update_rejected") == 1
    assert sorted(await envoy.listeners()) == ["egress_clash", "egress_good"]


async def _at_least(value, minimum: float) -> bool:
    return (await value or 0) >= minimum


async def _reaches(port: int, name: str) -> bool:
    return name in await talk_many(port, 10)


async def _answers(port: int) -> bool:
    return await talk(port) is not None


async def test_self_proxying_open_rbac_and_unusable_pod_ips_never_reach_envoy(
    manifests, start_plane, start_envoy, backends
):
    """listenport == targetport (Envoy would proxy to itself until it runs out of descriptors), rbacallowcluster ""
    (a templating gap must not admit everybody) and pod IPs 0.0.0.0 / :: are invalid: reported, never sent."""
    pods = await backends({"a": "127.0.0.2"})
    app = (await backends({"app": "127.0.0.1"}))["app"]
    egress_port, ingress_port, loop_port, open_port = free_port(), free_port(), free_port(), free_port()
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write(
        "listeners.yaml",
        egress("backends", "node-a", egress_port, pods.port, "backends"),
        ingress("app", "node-a", ingress_port, app.port, "backends"),
    )
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    assert await talk(egress_port) == "a"

    manifests.write(
        "bad.yaml",
        ingress("loop", "node-a", loop_port, loop_port),
        ingress("open", "node-a", open_port, app.port, ""),
        pod("zero", "0.0.0.0", "backends"),
        pod("zero6", "::", "backends"),
    )
    await wait_until(
        problems_naming(
            plane,
            "IngressListener default/loop: spec.targetport: equals spec.listenport",
            "IngressListener default/open: spec.rbacallowcluster",
            "Pod default/zero: status.podIP: not an endpoint address",
            "Pod default/zero6: status.podIP: not an endpoint address",
        ),
        what="the four bad objects to be reported",
    )
    await plane.admin.wait_in_sync("node-a")
    assert sorted(await envoy.listeners()) == ["egress_backends", "ingress_app"]
    assert (await envoy.clusters())["egress_backends_cluster"] == [f"127.0.0.2:{pods.port}"]
    assert await talk(open_port) is None  # nothing listens there
    assert set(await talk_many(egress_port, 10)) == {"a"}
    assert await envoy.stat("listener_manager.lds.update_rejected") == 0
