"""The kubernetes_asyncio adapter: paths, every failure as KubeError, watch streams split at any byte."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from envoy_control_plane.sources.kubernetes.client import KubeClient, KubeError, Resource, connect

pytestmark = pytest.mark.timeout(20)

SRC = Path(__file__).resolve().parents[3] / "src" / "envoy_control_plane"
PODS = Resource("Pod", "v1", "pods")
LISTENERS = Resource("IngressListener", "ingresslistener.envoy.uw.systems/v1alpha1", "ingresslisteners")


def kubeconfig(directory: Path, server: str) -> Path:
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": server}}],
        "users": [{"name": "t", "user": {"token": "x"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
    }))
    return path


def test_only_the_adapter_imports_kubernetes_asyncio() -> None:
    importers = [
        path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py")
        if re.search(r"^\s*(from|import) kubernetes_asyncio", path.read_text(), re.MULTILINE)
    ]
    assert importers == ["sources/kubernetes/client.py"]


def test_paths() -> None:
    assert PODS.path(None) == "/api/v1/pods"
    assert PODS.path("team-a") == "/api/v1/namespaces/team-a/pods"
    assert LISTENERS.path("x") == "/apis/ingresslistener.envoy.uw.systems/v1alpha1/namespaces/x/ingresslisteners"


async def _chunked_watch(request: web.Request) -> web.StreamResponse:
    """A watch stream cut mid-line, then an ERROR event that is not a 410."""
    response = web.StreamResponse()
    await response.prepare(request)
    for piece in (b'{"type": "ADD', b'ED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}\n\n{"ty',
                  b'pe": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}}\n',
                  b'{"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "InternalError", '
                  b'"message": "etcd is sad"}}\n'):
        await response.write(piece)
        await asyncio.sleep(0.01)
    return response


async def _pods(request: web.Request) -> web.StreamResponse:
    if request.query.get("watch"):
        return await _chunked_watch(request)
    return web.Response(status=502, text="<html>Bad Gateway</html>")  # a proxy's answer, not a Status


@pytest.fixture
async def kube_client(tmp_path: Path) -> AsyncIterator[KubeClient]:
    app = web.Application()
    app.router.add_get("/api/v1/pods", _pods)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = await connect(kubeconfig(tmp_path, f"http://127.0.0.1:{runner.addresses[0][1]}"), None)
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


async def test_watch_events_survive_any_chunking_and_errors_end_the_stream(kube_client: KubeClient) -> None:
    stream = await kube_client.watch(PODS, None, resource_version="4", timeout_seconds=5,
                                     connect_timeout=5, read_timeout=5)
    seen = []
    with pytest.raises(KubeError) as error:
        async for event in stream:
            seen.append((event.type, event.resource_version))
    await stream.close()
    assert seen == [("ADDED", "5"), ("BOOKMARK", "6")]
    assert (error.value.code, error.value.expired, str(error.value)) == (500, False, "500 InternalError: etcd is sad")


async def test_an_error_that_is_not_a_status_keeps_its_code(kube_client: KubeClient) -> None:
    with pytest.raises(KubeError) as error:
        await kube_client.list(PODS, None, page_size=10, timeout=5)
    assert error.value.code == 502 and "Bad Gateway" in str(error.value)


async def test_an_unreachable_server_is_a_kube_error_without_code(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = await connect(kubeconfig(tmp_path, f"http://127.0.0.1:{port}"), None)
    try:
        with pytest.raises(KubeError) as error:
            await client.list(PODS, None, page_size=10, timeout=5)
    finally:
        await client.close()
    assert error.value.code is None and "GET /api/v1/pods" in str(error.value)


async def test_missing_in_cluster_credentials_are_a_kube_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="in-cluster service account"):
        await connect(None, None)
