"""IngressListener and EgressListener objects served by Kubernetes API servers (fakes) become Envoy listeners that
work: the ingress admits exactly the pod IPs of its rbacallowcluster, which live in another Kubernetes cluster."""

from __future__ import annotations

import pytest

from .harness import free_port, talk, talk_many, wait_until
from .kube_fixtures import kegress, kingress, kpod

pytestmark = pytest.mark.timeout(30)

CLIENT_1, CLIENT_2, STRANGER = "127.0.0.6", "127.0.0.7", "127.0.0.9"


async def test_listeners_from_custom_resources_carry_traffic_and_rbac_across_clusters(
    fake_clusters, start_kube_plane, start_envoy, backends
):
    app = (await backends({"app": "127.0.0.1"}))["app"]  # the workload behind node-a's ingress
    pods = await backends({"backend-1": "127.0.0.2"})
    ingress_port, egress_port = free_port(), free_port()
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    # The listeners live in aws; the pods allowed in (clients) live in gcp, and the egress target (backends) in aws.
    aws.kube.upsert(kingress("app", "node-a", ingress_port, app.port, rbacallowcluster="clients"))
    aws.kube.upsert(kegress("backends", "node-a", egress_port, pods.port, "backends"))
    aws.kube.upsert(kpod("backend-1", "127.0.0.2", "backends"))
    gcp.kube.upsert(kpod("client-1", CLIENT_1, "clients"))
    plane = await start_kube_plane(aws, gcp)
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")

    # The config dump holds the original project's names, on the addresses the objects ask for.
    assert await envoy.listeners() == {
        "ingress_app": f"127.0.0.1:{ingress_port}",
        "egress_backends": f"127.0.0.1:{egress_port}",
    }
    sections = await envoy.dump_sections()
    clusters = {c["cluster"]["name"] for c in sections["clusters"]["dynamic_active_clusters"]}
    assert clusters == {"ingress_app_cluster", "egress_backends_cluster"}
    assert _rbac_sources(sections["listeners"], "ingress_app") == {f"{CLIENT_1}/32"}

    # Ingress: gcp's client pod is admitted, anybody else refused; egress reaches aws's pod.
    assert await talk(ingress_port, source=CLIENT_1) == "app"
    assert await talk(ingress_port, source=STRANGER) is None
    assert await talk_many(egress_port, 2) == {"backend-1": 2}

    # A second client pod in gcp is admitted; the first, once deleted, is refused.
    gcp.kube.upsert(kpod("client-2", CLIENT_2, "clients"))
    await wait_until(lambda: _answers(ingress_port, CLIENT_2), what="client-2 to be admitted")
    gcp.kube.delete("Pod", "default", "client-1")
    await wait_until(lambda: _refused(ingress_port, CLIENT_1), what="client-1 to be refused")
    assert await talk(ingress_port, source=CLIENT_2) == "app"
    assert _rbac_sources((await envoy.dump_sections())["listeners"], "ingress_app") == {f"{CLIENT_2}/32"}

    # An edited object moves its listener; a deleted object removes it.
    new_port = free_port()
    aws.kube.upsert(kingress("app", "node-a", new_port, app.port, rbacallowcluster="clients"))
    await wait_until(lambda: _answers(new_port, CLIENT_2), what="the ingress listener to move")
    aws.kube.delete("EgressListener", "default", "backends")

    async def egress_gone() -> bool:
        return set(await envoy.listeners()) == {"ingress_app"}

    await wait_until(egress_gone, what="the egress listener to be removed")
    await plane.admin.wait_in_sync("node-a")
    assert "egress_backends_cluster" not in await envoy.clusters()


def _rbac_sources(listeners_dump: dict, name: str) -> set[str]:
    """The source prefixes of the listener's filter chain match (the pods admitted)."""
    for listener in listeners_dump.get("dynamic_listeners", []):
        if listener["name"] == name:
            chains = listener["active_state"]["listener"]["filter_chains"]
            return {
                f"{r['address_prefix']}/{r['prefix_len']}"
                for chain in chains
                for r in chain.get("filter_chain_match", {}).get("source_prefix_ranges", [])
            }
    raise AssertionError(f"no listener {name} in {listeners_dump}")


async def _answers(port: int, source: str) -> bool:
    try:
        return await talk(port, source=source) == "app"
    except TimeoutError:
        return False


async def _refused(port: int, source: str) -> bool:
    return await talk(port, source=source) is None
