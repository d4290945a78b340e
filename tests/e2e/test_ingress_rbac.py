"""Ingress RBAC: only the pods of rbacallowcluster may connect; an empty cluster admits nobody; none set admits all."""

from __future__ import annotations

import pytest

from .harness import free_port, ingress, pod, talk, wait_until

pytestmark = pytest.mark.timeout(40)

ALLOWED = "127.0.0.2"  # the pod of rbacallowcluster
STRANGER = "127.0.0.9"  # not a pod of anything


async def replies(port: int) -> tuple[str | None, str | None]:
    """(what the allowed pod's IP gets, what the stranger gets)."""
    return await talk(port, source=ALLOWED), await talk(port, source=STRANGER)


async def test_ingress_admits_only_the_allowed_cluster(manifests, start_plane, start_envoy, backends):
    app = (await backends({"app": "127.0.0.1"}))["app"]  # the local workload behind the ingress listener
    listen = free_port()
    manifests.write("pods.yaml", pod("client-a", ALLOWED, "clients"))
    manifests.write("listeners.yaml", ingress("app", "node-a", listen, app.port, rbacallowcluster="clients"))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)

    assert await replies(listen) == ("app", None)
    assert app.hits == 1  # the stranger never reached the app
    # The stranger is refused at accept time (the filter chain matches allowed sources only), before RBAC sees a byte.
    assert await envoy.stat(f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 1
    assert await envoy.stat("rbac_ingress.rbac.allowed") == 1

    # The cluster empties (its only pod leaves the manifest): nobody is admitted, not even the old pod's IP.
    manifests.write_text("pods.yaml", "# no pods\n")
    await wait_until(lambda: _refused_from(listen, ALLOWED), what="the old pod's IP to be refused")
    assert await replies(listen) == (None, None)

    # Without rbacallowcluster, the listener admits everybody.
    manifests.write("listeners.yaml", ingress("app", "node-a", listen, app.port))
    await wait_until(lambda: _admitted_from(listen, STRANGER), what="the stranger to be admitted")
    assert await replies(listen) == ("app", "app")


async def _refused_from(port: int, source: str) -> bool:
    return await talk(port, source=source) is None


async def _admitted_from(port: int, source: str) -> bool:
    return await talk(port, source=source) == "app"
