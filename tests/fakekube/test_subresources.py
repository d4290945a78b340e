"""The fake's status subresource, Events and Leases, checked through the control plane's own Kubernetes adapter
(the client the status writer uses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from envoy_control_plane.sources.kubernetes.client import KubeClient, KubeError, Resource, connect

from .server import FakeKube

pytestmark = pytest.mark.timeout(20)

LISTENERS = Resource("IngressListener", "ingresslistener.envoy.uw.systems/v1alpha1", "ingresslisteners")
EVENTS = Resource("Event", "v1", "events")
LEASES = Resource("Lease", "coordination.k8s.io/v1", "leases")


def listener(port: int = 8080, status: dict | None = None) -> dict:
    obj = {
        "apiVersion": LISTENERS.api_version, "kind": "IngressListener", "metadata": {"name": "in"},
        "spec": {"nodename": "n", "listenport": port, "targetport": 8081},
    }
    return {**obj, "status": status} if status is not None else obj


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube() as kube:
        yield kube


@pytest.fixture
async def api(kube: FakeKube, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = await connect(kube.write_kubeconfig(tmp_path / "kubeconfig"), None)
    try:
        yield client
    finally:
        await client.close()


async def test_status_is_written_only_through_its_subresource(api: KubeClient) -> None:
    created = await api.create(LISTENERS.path("default"), listener(status={"endpoints": 9}), timeout=5)
    assert "status" not in created and created["metadata"]["generation"] == 1  # a create drops the status

    path = LISTENERS.item_path("default", "in", "status")
    patched = await api.patch(path, {"status": {"endpoints": 2}, "spec": {"listenport": 1}}, timeout=5)
    assert patched["status"] == {"endpoints": 2}
    assert patched["spec"]["listenport"] == 8080  # /status changes nothing else
    assert patched["metadata"]["generation"] == 1  # nor the generation
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    # A write to the object keeps the status, and moves the generation with the spec.
    item = LISTENERS.item_path("default", "in")
    edited = await api.patch(item, {"spec": {"listenport": 9090}, "status": {"endpoints": 7}}, timeout=5)
    assert edited["status"] == {"endpoints": 2} and edited["metadata"]["generation"] == 2
    assert (await api.get(path, timeout=5))["spec"]["listenport"] == 9090

    # Merge patch: null removes a key; a stale resourceVersion in the body is a conflict.
    cleared = await api.patch(path, {"status": {"endpoints": None, "conditions": []}}, timeout=5)
    assert cleared["status"] == {"conditions": []}
    with pytest.raises(KubeError) as stale:
        await api.patch(path, {"metadata": {"resourceVersion": "1"}, "status": {"endpoints": 1}}, timeout=5)
    assert stale.value.code == 409
    with pytest.raises(KubeError) as missing:
        await api.patch(LISTENERS.item_path("default", "gone", "status"), {"status": {}}, timeout=5)
    assert missing.value.code == 404


async def test_events_are_created_and_listed_by_involved_object(api: KubeClient) -> None:
    for name, involved in (("a.1", "in"), ("b.1", "other")):
        event = {
            "metadata": {"name": name, "namespace": "default"}, "type": "Warning", "reason": "PortConflict",
            "message": "taken", "involvedObject": {"kind": "IngressListener", "namespace": "default", "name": involved},
        }
        await api.create(EVENTS.path("default"), event, timeout=5)
    listed = await api.get(EVENTS.path("default") + "?fieldSelector=involvedObject.name%3Din", timeout=5)
    assert [e["metadata"]["name"] for e in listed["items"]] == ["a.1"]


async def test_leases_conflict_on_a_stale_update_and_on_a_second_create(api: KubeClient) -> None:
    lease = {"metadata": {"name": "cp", "namespace": "default"}, "spec": {"holderIdentity": "a"}}
    created = await api.create(LEASES.path("default"), lease, timeout=5)
    with pytest.raises(KubeError) as exists:
        await api.create(LEASES.path("default"), lease, timeout=5)
    assert exists.value.code == 409
    path = LEASES.item_path("default", "cp")
    taken = await api.update(path, {**created, "spec": {"holderIdentity": "b"}}, timeout=5)
    assert taken["spec"]["holderIdentity"] == "b"
    with pytest.raises(KubeError) as stale:  # the same read, written again after somebody else's write
        await api.update(path, {**created, "spec": {"holderIdentity": "c"}}, timeout=5)
    assert stale.value.code == 409
    assert (await api.get(path, timeout=5))["spec"]["holderIdentity"] == "b"
