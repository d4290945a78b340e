"""The xDS channel with mTLS (`xds.tls` with `client_ca`): real Envoys bootstrapped with `--xds-ca/--xds-cert/--xds-key`
get their own configuration and nothing else; grpc clients show the refusals (PERMISSION_DENIED, handshake failures)
on both state-of-the-world and delta streams.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from demo.certs import CA, Leaf, tls_secret
from envoy_control_plane.bootstrap import XdsClientTls
from envoy_control_plane.xds.types import LISTENER, SECRET

from .harness import ManifestDir, free_port, ingress, wait_until

pytestmark = pytest.mark.timeout(90)

SPIFFE_NODE = "spiffe://cluster.local/ns/labs/sa/node-b"


@dataclass
class Pki:
    dir: Path
    ca: CA
    ca_path: Path
    server: Leaf
    leaves: dict[str, Leaf]  # by the node each names (one from another CA: "foreign")

    def client_tls(self, leaf: str, server_name: str | None = None) -> XdsClientTls:
        cert, key = write_pair(self.leaves[leaf], self.dir, leaf.replace("/", "_").replace(":", "_"))
        return XdsClientTls(str(self.ca_path), str(cert), str(key), server_name)

    def plane_tls(self, client_ca: bool = True, directory: Path | None = None) -> dict[str, str]:
        cert, key = write_pair(self.server, directory or self.dir, "xds")
        return {"cert": str(cert), "key": str(key), **({"client_ca": str(self.ca_path)} if client_ca else {})}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CA("xds test CA")
    leaves = {
        "node-a": ca.issue("ignored-cn", ["node-a"]),
        SPIFFE_NODE: ca.issue(None, [SPIFFE_NODE]),
        "node-c": ca.issue("node-c", []),  # no SANs: the CN names the node
        "foreign": CA("another CA").issue(None, ["node-a"]),
    }
    server = ca.issue("control plane", ["xds.test", "127.0.0.1"])
    (directory / "ca.crt").write_bytes(ca.cert)
    return Pki(directory, ca, directory / "ca.crt", server, leaves)


def write_pair(leaf: Leaf, directory: Path, name: str) -> tuple[Path, Path]:
    """`name.crt` and `name.key` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(leaf.cert)
    key.write_bytes(leaf.key)
    return cert, key


def listeners_for(manifests: ManifestDir, *nodes: str) -> dict[str, int]:
    ports = {node: free_port() for node in nodes}
    docs = [ingress(f"in-{i}", node, port, 1) for i, (node, port) in enumerate(ports.items())]
    manifests.write("listeners.yaml", *docs)
    return ports


async def test_each_envoy_gets_the_config_its_certificate_names(manifests, start_plane, start_envoy, pki):
    ports = listeners_for(manifests, "node-a", SPIFFE_NODE, "node-c")
    plane = await start_plane(xds={"address": "127.0.0.1", "debounce_ms": 10, "tls": pki.plane_tls()})
    # A DNS SAN (SotW), a URI SAN (delta), a CN-only certificate; the server is verified by its IP SAN, then by name.
    envoys = {
        "node-a": await start_envoy("node-a", plane.xds_port, tls=pki.client_tls("node-a")),
        SPIFFE_NODE: await start_envoy(SPIFFE_NODE, plane.xds_port, delta=True, tls=pki.client_tls(SPIFFE_NODE)),
        "node-c": await start_envoy("node-c", plane.xds_port, tls=pki.client_tls("node-c", "xds.test")),
    }
    for node, envoy in envoys.items():
        assert list((await envoy.listeners()).values()) == [f"127.0.0.1:{ports[node]}"], node
    assert sorted(await plane.admin.json("/debug/nodes")) == sorted(envoys)


async def test_an_envoy_cannot_fetch_a_node_its_certificate_does_not_name(
    manifests, start_plane, start_envoy, pki, caplog
):
    listeners_for(manifests, "node-a", "node-c")
    plane = await start_plane(xds={"address": "127.0.0.1", "debounce_ms": 10, "tls": pki.plane_tls()})
    envoy = await start_envoy("node-c", plane.xds_port, live=False, tls=pki.client_tls("node-a"))

    def refused() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused" in r.getMessage() and r.levelno == logging.WARNING]

    await wait_until(lambda: len(refused()) >= 2, what="two refused streams (Envoy retries)")
    line = refused()[0]
    assert "DNS:node-a" in line and "CN=ignored-cn" in line and "'node-c'" in line, line
    assert await envoy.stat("control_plane.connected_state") == 0
    assert await envoy.listeners() == {}
    assert await plane.admin.json("/debug/nodes") == {}


async def test_envoys_without_a_good_client_certificate_or_server_name_get_nothing(
    manifests, start_plane, start_envoy, pki
):
    listeners_for(manifests, "node-a")
    plane = await start_plane(xds={"address": "127.0.0.1", "debounce_ms": 10, "tls": pki.plane_tls()})
    envoys = [
        await start_envoy("node-a", plane.xds_port, live=False),  # plaintext
        await start_envoy("node-a", plane.xds_port, live=False, tls=pki.client_tls("foreign")),
        await start_envoy("node-a", plane.xds_port, live=False, tls=pki.client_tls("node-a", "elsewhere.test")),
    ]

    async def retried(envoy) -> bool:
        return (await envoy.stat("cluster.xds_cluster.upstream_cx_total") or 0) >= 2

    for envoy in envoys:
        await wait_until(lambda envoy=envoy: retried(envoy), what=f"{envoy} retrying")
        assert await envoy.stat("control_plane.connected_state") == 0
        assert await envoy.listeners() == {}
    # The one with a wrong server name refused the control plane's certificate itself (the others were refused by it).
    assert await envoys[2].stat("cluster.xds_cluster.ssl.fail_verify_san") >= 1
    assert await plane.admin.json("/debug/nodes") == {}


# ---- grpc clients: the status codes -----------------------------------------------------------------------------


@pytest.fixture
async def tls_plane(manifests, start_plane, pki):
    listeners_for(manifests, "node-a", "node-c")
    return await start_plane(xds={"address": "127.0.0.1", "debounce_ms": 10, "tls": pki.plane_tls()})


async def first_response(
    port: int, pki: Pki, node: str, delta: bool, leaf: str | None, type_url: str = LISTENER
) -> Any:
    """Open an ADS stream for `node` presenting `leaf` (None: no client certificate), ask for `type_url` (wildcard)
    and read one response."""
    key, cert = (pki.leaves[leaf].key, pki.leaves[leaf].cert) if leaf else (None, None)
    credentials = grpc.ssl_channel_credentials(pki.ca.cert, key, cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        if delta:
            call = stub.DeltaAggregatedResources()
            request = DeltaDiscoveryRequest(type_url=type_url)
        else:
            call = stub.StreamAggregatedResources()
            request = DiscoveryRequest(type_url=type_url)
        request.node.id = node
        await call.write(request)
        try:
            return await call.read()
        finally:
            call.cancel()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_stream_may_ask_only_for_the_node_its_certificate_names(tls_plane, pki, delta):
    mine = await first_response(tls_plane.xds_port, pki, "node-a", delta, "node-a")
    assert len(mine.resources) == 1
    for type_url in (LISTENER, SECRET):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await first_response(tls_plane.xds_port, pki, "node-c", delta, "node-a", type_url)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "node-c" in refused.value.details()
    assert await tls_plane.admin.metric("xds_streams_denied_total") == 2


@pytest.mark.parametrize("leaf", [None, "foreign"], ids=["no-client-cert", "another-ca"])
async def test_the_handshake_fails_without_a_certificate_from_the_client_ca(tls_plane, pki, leaf):
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await first_response(tls_plane.xds_port, pki, "node-a", False, leaf)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_without_client_ca_any_client_gets_any_node(manifests, start_plane, pki):
    listeners_for(manifests, "node-a")
    plane = await start_plane(xds={"address": "127.0.0.1", "tls": pki.plane_tls(client_ca=False)})
    assert not plane.control_plane.config.may_serve_secrets
    response = await first_response(plane.xds_port, pki, "node-a", False, None)
    assert len(response.resources) == 1


# ---- renewal of the control plane's certificate ---------------------------------------------------------------------


async def served_certificate(port: int, pki: Pki) -> x509.Certificate:
    """The certificate a fresh TLS handshake with the xDS port presents (node-a's certificate as the client's)."""
    tls = pki.client_tls("node-a")
    context = ssl.create_default_context(cadata=pki.ca.cert.decode())
    context.load_cert_chain(tls.cert, tls.key)
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 5)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


def replace(path: Path, data: bytes) -> None:
    """As a Secret volume or cert-manager does: the new file is renamed in, never half-written in place."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(data)
    os.replace(staged, path)


async def test_a_renewed_server_certificate_serves_new_connections_and_open_streams_stay(
    manifests, start_plane, start_envoy, pki, tmp_path, caplog
):
    listeners_for(manifests, "node-a", "node-c")
    files = pki.plane_tls(directory=tmp_path / "xds-tls")
    plane = await start_plane(xds={"address": "127.0.0.1", "debounce_ms": 10, "tls": files})
    envoy = await start_envoy("node-a", plane.xds_port, tls=pki.client_tls("node-a"))
    (stream,) = (await plane.admin.json("/debug/nodes"))["node-a"]["streams"]
    first = x509.load_pem_x509_certificate(pki.server.cert)
    assert (await served_certificate(plane.xds_port, pki)).serial_number == first.serial_number

    renewed = pki.ca.issue("control plane", ["xds.test", "127.0.0.1"])
    replace(Path(files["cert"]), renewed.cert)  # the key is not there yet: this pair does not load
    assert (await served_certificate(plane.xds_port, pki)).serial_number == first.serial_number
    assert any("do not load" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)

    replace(Path(files["key"]), renewed.key)
    served = await served_certificate(plane.xds_port, pki)
    assert served.serial_number == x509.load_pem_x509_certificate(renewed.cert).serial_number
    (still,) = (await plane.admin.json("/debug/nodes"))["node-a"]["streams"]
    assert still["stream"] == stream["stream"]  # the open stream was not touched
    assert await envoy.stat("control_plane.connected_state") == 1
    await start_envoy("node-c", plane.xds_port, tls=pki.client_tls("node-c"))  # a new Envoy trusts the new one


# ---- secrets: served because clients are bound to their nodes ------------------------------------------------------


async def test_with_client_certificates_secrets_are_served_each_node_its_own(manifests, start_plane, start_envoy, pki):
    mesh = CA("mesh")
    ports = {"node-a": free_port(), "node-c": free_port()}
    manifests.write(
        "listeners.yaml",
        tls_secret("c-tls", mesh.issue("server", ["server.default"]), mesh),
        ingress("plain-a", "node-a", ports["node-a"], 1),
        ingress("secure-c", "node-c", ports["node-c"], 1, tls={"secret": "c-tls", "validation": "c-tls"}),
    )
    # No xds.insecure_secrets: client_ca alone lets secrets out.
    plane = await start_plane(xds={"address": "127.0.0.1", "debounce_ms": 10, "tls": pki.plane_tls()})
    assert plane.control_plane.config.may_serve_secrets
    envoy_c = await start_envoy("node-c", plane.xds_port, tls=pki.client_tls("node-c"))
    envoy_a = await start_envoy("node-a", plane.xds_port, tls=pki.client_tls("node-a"))
    assert list((await envoy_c.listeners()).values()) == [f"127.0.0.1:{ports['node-c']}"]
    secrets_c = (await envoy_c.dump_sections())["secrets"]
    assert {s["name"] for s in secrets_c.get("dynamic_active_secrets", [])}, secrets_c
    assert not (await envoy_a.dump_sections()).get("secrets", {}).get("dynamic_active_secrets")
