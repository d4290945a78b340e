"""What the Kubernetes end-to-end tests add to the shared harness: fake API servers, one per cluster, and the control
plane wired to them.

- `fake_clusters(name, start=True)`: a FakeKube on a loopback port of its own (chosen up front, so a kubeconfig can be
  written before the server listens and a restart comes back on the same port), with its kubeconfig
- `start_kube_plane(*clusters, **config)`: the control plane in this process, one KubernetesSource per cluster, with
  short watch timeouts and backoffs (FAST), returning an InProcessPlane; its status writer is off unless `status=`
  says otherwise
- `kpod`, `kingress`, `kegress`: objects as a Kubernetes API server holds them

conftest.py registers the two fixtures for every end-to-end test; every server and control plane started through
them is stopped on teardown, whether the test passed or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from envoy_control_plane.app import ControlPlane
from envoy_control_plane.model import API_VERSIONS, CLUSTER_NAME_ANNOTATION
from envoy_control_plane.sources.kubernetes import WatchSettings
from tests.fakekube import FakeKube

from .harness import InProcessPlane, free_port, loopback_config, talk_many, wait_until

# The production WatchSettings back off up to 30 s and watch for 5-10 min; `start_kube_plane` gives ControlPlane these
# instead. Short backoffs make an outage end within a fraction of a second of the server coming back; the watch
# timeout stays long so that watches end only when a test breaks them.
FAST = WatchSettings(
    watch_timeout=30,
    read_grace=5.0,
    connect_timeout=1.0,
    list_timeout=2.0,
    backoff_initial=0.02,
    backoff_max=0.25,
    absent_retry=0.2,
)


@dataclass
class KubeCluster:
    """One fake Kubernetes cluster: its API server and the kubeconfig that points at it."""

    name: str
    kube: FakeKube
    kubeconfig: Path

    def config(self) -> dict[str, str]:
        """The cluster's entry in the control plane's `clusters` list."""
        return {"name": self.name, "kubeconfig": str(self.kubeconfig)}


@pytest.fixture
async def fake_clusters(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[KubeCluster]]]:
    started: list[FakeKube] = []

    async def make(name: str, start: bool = True) -> KubeCluster:
        kube = FakeKube(port=free_port(), bookmark_interval=0.2)
        started.append(kube)
        kubeconfig = kube.write_kubeconfig(tmp_path / f"{name}.kubeconfig", context_name=name)
        if start:
            await kube.start()
        return KubeCluster(name, kube, kubeconfig)

    try:
        yield make
    finally:
        for kube in reversed(started):
            with contextlib.suppress(Exception):
                await kube.stop()


@pytest.fixture
async def start_kube_plane() -> AsyncIterator[Callable[..., Awaitable[InProcessPlane]]]:
    planes: list[ControlPlane] = []

    async def start(
        *clusters: KubeCluster | dict[str, Any], settings: WatchSettings = FAST, **overrides: Any
    ) -> InProcessPlane:
        """Each cluster is a KubeCluster, or its `clusters` entry (KubeCluster.config() with more keys)."""
        # The status writer stays off unless a test asks for it: it writes to the fake servers and keeps a lease.
        overrides.setdefault("status", {"write": False})
        entries = [c if isinstance(c, dict) else c.config() for c in clusters]
        config = loopback_config(clusters=entries, **overrides)
        control_plane = ControlPlane(config, settings)
        planes.append(control_plane)
        await control_plane.start()
        return InProcessPlane(control_plane)

    try:
        yield start
    finally:
        for control_plane in reversed(planes):
            with contextlib.suppress(Exception):
                await control_plane.stop()


# ---- objects as the API server holds them ----------------------------------------------------------------------------


def kpod(name: str, ip: str, cluster: str, *, ready: bool = True, namespace: str = "default") -> dict[str, Any]:
    """A running pod, scheduled and given an IP, with its Ready condition: what the kubelet would have reported."""
    return {
        "apiVersion": API_VERSIONS["Pod"],
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {CLUSTER_NAME_ANNOTATION: cluster}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def kegress(name: str, node: str, listenport: int, targetport: int, targetcluster: str) -> dict[str, Any]:
    spec = {"nodename": node, "listenport": listenport, "targetport": targetport, "targetcluster": targetcluster}
    return _listener("EgressListener", name, spec)


def kingress(
    name: str, node: str, listenport: int, targetport: int, rbacallowcluster: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodename": node, "listenport": listenport, "targetport": targetport}
    if rbacallowcluster is not None:
        spec["rbacallowcluster"] = rbacallowcluster
    return _listener("IngressListener", name, spec)


def _listener(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": {"name": name, "namespace": "default"},
            "spec": spec}


# ---- what Envoy and the control plane show -------------------------------------------------------------------------


async def reaches(port: int, names: set[str]) -> None:
    """Until connections to an egress listener are answered by exactly these pods' backends. Envoy balances round
    robin, so two rounds of connections reach every endpoint it has."""

    async def answered() -> bool:
        return set(await talk_many(port, 2 * max(len(names), 1))) == names

    await wait_until(answered, what=f"egress traffic to reach exactly {sorted(names)}")


# ---- what the control plane says about its sources -------------------------------------------------------------------


async def source_status(plane: InProcessPlane, name: str) -> dict[str, Any]:
    """One source's entry in /debug/sources."""
    sources = {s["name"]: s for s in await plane.admin.json("/debug/sources")}
    return sources[name]


async def wait_synced(plane: InProcessPlane, *names: str, timeout: float = 10.0) -> None:
    """Until each named cluster has listed every kind once and answers."""

    async def synced() -> bool:
        sources = {s["name"]: s for s in await plane.admin.json("/debug/sources")}
        return all(sources[n]["synced"] and sources[n]["up"] for n in names)

    await wait_until(synced, timeout, what=f"clusters {names} synced")
