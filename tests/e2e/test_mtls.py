"""mTLS between two real Envoys with certificates over SDS: a client node's egress presents its certificate to a server
node's ingress (on another loopback address), which requires a client certificate from the mesh CA with an allowed
SAN. Secrets come from manifest files, as `kubectl get secret -o yaml` prints them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from demo.certs import CA, Leaf, client_context, tls_secret

from .harness import egress, free_port, ingress, pod, settle, talk, wait_until

pytestmark = pytest.mark.timeout(60)

SERVER_IP = "127.0.0.5"  # the server node's ingress address (its "pod IP")
CLIENT_SAN = "spiffe://cluster.local/ns/default/sa/client"
SERVER_SAN = "spiffe://cluster.local/ns/default/sa/server"
SECRETS_ON = {"address": "127.0.0.1", "debounce_ms": 10, "insecure_secrets": True}


class Mesh:
    """The mesh CA, another CA, and the leaves the tests present."""

    def __init__(self) -> None:
        self.ca, self.other_ca = CA("mesh"), CA("elsewhere")
        self.client = self.ca.issue("client", [CLIENT_SAN])
        self.server = self.ca.issue("server", [SERVER_SAN, "server.default"])
        self.foreign = self.other_ca.issue("client", [CLIENT_SAN])  # the right SAN from another CA
        self.stranger = self.ca.issue("stranger", ["spiffe://cluster.local/ns/default/sa/stranger"])


async def echo_app(host: str = "127.0.0.1") -> tuple[asyncio.Server, int]:
    """The server node's workload: answers every line with "app <line>", on one connection as long as it is open."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while line := await reader.readline():
                writer.write(b"app " + line)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, 0)
    return server, server.sockets[0].getsockname()[1]


async def tls_talk(port: int, context: ssl.SSLContext, line: str = "hello") -> tuple[str | None, int | None]:
    """(the reply or None when refused, the serial of the certificate the server presented or None)."""
    serial = None
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(SERVER_IP, port, ssl=context)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            serial = x509.load_der_x509_certificate(der).serial_number
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                reply = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except (ssl.SSLError, ConnectionError, OSError):
        return None, serial
    return reply.decode().strip() or None, serial


def mtls_manifests(mesh: Mesh, listen: int, target: int, egress_port: int, layer: str = "tcp") -> list[dict]:
    return [
        pod("server-pod", SERVER_IP, "servers"),
        tls_secret("client-tls", mesh.client, mesh.ca),
        tls_secret("server-tls", mesh.server, mesh.ca),
        ingress("secure-in", "server-node", listen, target, rbac={"sans": [CLIENT_SAN]},
                tls={"secret": "server-tls", "validation": "server-tls"}, layer=layer),
        egress("secure-out", "client-node", egress_port, listen, "servers",
               tls={"secret": "client-tls", "validation": "client-tls", "sni": "server.default"}, layer=layer),
    ]  # fmt: skip


async def secret_names(envoy) -> list[str]:
    sections = await envoy.dump_sections()
    secrets = sections.get("secrets", {})
    return sorted(s["name"] for s in secrets.get("dynamic_active_secrets", []))


async def test_mtls_hop_admits_only_the_allowed_certificate_and_rotates_in_place(
    manifests, start_plane, start_envoy
):
    mesh = Mesh()
    app, app_port = await echo_app()
    listen, egress_port = free_port(SERVER_IP), free_port()
    manifests.write("mesh.yaml", *mtls_manifests(mesh, listen, app_port, egress_port))
    plane = await start_plane(ingress_address=SERVER_IP, xds=SECRETS_ON)
    server = await start_envoy("server-node", plane.xds_port)
    client = await start_envoy("client-node", plane.xds_port, delta=True)  # SDS over both protocols

    # Traffic flows client -> egress -> mTLS -> ingress -> app.
    reply = await wait_until(lambda: _reply(egress_port), what="traffic through the mTLS hop")
    assert reply == "app hello"
    assert await client.stat("cluster.egress_secure-out_cluster.ssl.handshake") >= 1

    # The right certificate is admitted; no certificate, another CA, a SAN outside rbac.sans and plaintext are not.
    assert (await tls_talk(listen, client_context(mesh.ca, mesh.client)))[0] == "app hello"
    assert (await tls_talk(listen, client_context(mesh.ca, None)))[0] is None
    assert (await tls_talk(listen, client_context(mesh.ca, mesh.foreign)))[0] is None
    assert (await tls_talk(listen, client_context(mesh.ca, mesh.stranger)))[0] is None
    plaintext = await talk(listen, host=SERVER_IP)
    assert plaintext is None or plaintext.startswith("\x15")  # at most a TLS alert, never the app
    assert await server.stat("rbac_ingress.rbac.denied") == 1  # the stranger: a valid certificate, a wrong SAN

    # Each Envoy holds only its own secrets, named after the Secret they came from.
    assert await secret_names(client) == ["manifests/default/client-tls", "manifests/default/client-tls/ca.crt"]
    assert await secret_names(server) == ["manifests/default/server-tls", "manifests/default/server-tls/ca.crt"]
    snapshot_text = str(await plane.admin.json("/debug/snapshot/server-node"))
    assert "[redacted]" in snapshot_text and mesh.server.key.decode().splitlines()[1] not in snapshot_text

    # Rotation: new certificates in both Secrets. Only SDS changes: no listener is modified, a connection open across
    # the rotation keeps working, and a fresh handshake sees the new certificate.
    modified = (await server.stat("listener_manager.listener_modified"), await client.stat("listener_manager.listener_modified"))
    reader, writer = await asyncio.open_connection("127.0.0.1", egress_port)
    writer.write(b"before\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"app before\n"
    rotated = Mesh.__new__(Mesh)
    rotated.ca, rotated.client, rotated.server = mesh.ca, mesh.ca.issue("client", [CLIENT_SAN]), mesh.ca.issue("server", [SERVER_SAN])
    manifests.write("mesh.yaml", *mtls_manifests(rotated, listen, app_port, egress_port))
    good_client = client_context(mesh.ca, rotated.client)

    async def new_certificate() -> bool:
        return (await tls_talk(listen, good_client))[1] == rotated.server.serial

    await wait_until(new_certificate, what="the rotated server certificate on a fresh handshake")
    await wait_until(lambda: _reply(egress_port), what="traffic after the rotation")
    writer.write(b"after\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"app after\n"
    writer.close()
    assert (await server.stat("listener_manager.listener_modified"), await client.stat("listener_manager.listener_modified")) == modified
    assert (await tls_talk(listen, client_context(mesh.ca, mesh.client)))[0] == "app hello"  # the old leaf: same CA
    app.close()


async def _reply(port: int) -> str | None:
    return await talk(port)


async def test_a_missing_or_broken_secret_holds_its_listener_back_and_a_served_one_stays_in_force(
    manifests, start_plane, start_envoy, caplog
):
    mesh = Mesh()
    app, app_port = await echo_app()
    listen, egress_port = free_port(SERVER_IP), free_port()
    docs = mtls_manifests(mesh, listen, app_port, egress_port)
    secure_in = docs[3]
    manifests.write("mesh.yaml", pod("server-pod", SERVER_IP, "servers"), secure_in)  # no Secret yet
    plane = await start_plane(ingress_address=SERVER_IP, xds=SECRETS_ON)
    server = await start_envoy("server-node", plane.xds_port)

    await wait_until(lambda: _problem(plane, "IngressListener default/secure-in", "Secret default/server-tls"),
                     what="the held-back listener in /debug/sources")
    assert "ingress_secure-in" not in await server.listeners()
    assert "held back: spec.tls.secret: Secret default/server-tls (source manifests) not found" in caplog.text

    # The Secret arrives, broken (its key belongs to another certificate): still held back, saying why.
    broken = Leaf(mesh.server.cert, mesh.client.key, mesh.server.serial)
    manifests.write("mesh.yaml", pod("server-pod", SERVER_IP, "servers"), secure_in, tls_secret("server-tls", broken, mesh.ca))
    await wait_until(lambda: _problem(plane, "data.tls.key: does not match the certificate"), what="the bad key reported")
    assert "ingress_secure-in" not in await server.listeners()

    # Fixed: the listener is served. Then broken again, then deleted: the last good version stays in force.
    manifests.write("mesh.yaml", pod("server-pod", SERVER_IP, "servers"), secure_in, tls_secret("server-tls", mesh.server, mesh.ca))
    await wait_until(lambda: _reply_tls(listen, mesh), what="the listener served once its Secret is good")
    assert f"SDS secret manifests/default/server-tls in force: subject CN=server, SANs [{SERVER_SAN}, server.default]" \
        in caplog.text  # what is served, by name, subject and SANs (never the key)
    manifests.write("mesh.yaml", pod("server-pod", SERVER_IP, "servers"), secure_in, tls_secret("server-tls", broken, mesh.ca))
    await wait_until(lambda: _problem(plane, "last good version stays in force"), what="the kept version reported")
    manifests.write("mesh.yaml", pod("server-pod", SERVER_IP, "servers"), secure_in)
    await wait_until(lambda: _problem(plane, "not found; its last good version stays in force"), what="deletion reported")
    await settle(0.5)
    assert await _reply_tls(listen, mesh)

    # No private key anywhere in logs or debug output.
    for key in (mesh.server.key, mesh.client.key):
        body = key.decode().splitlines()[1]
        assert body not in caplog.text
        for path in ("/debug/sources", "/debug/snapshot/server-node", "/debug/nodes"):
            assert body not in (await plane.admin.get(path))[1]
    app.close()


async def test_without_insecure_secrets_tls_listeners_are_held_back(manifests, start_plane, start_envoy, caplog):
    mesh = Mesh()
    listen, egress_port = free_port(SERVER_IP), free_port()
    manifests.write("mesh.yaml", *mtls_manifests(mesh, listen, 9, egress_port))
    plane = await start_plane(ingress_address=SERVER_IP)
    server = await start_envoy("server-node", plane.xds_port)
    await wait_until(lambda: _problem(plane, "does not serve Secrets", "xds.insecure_secrets: true"),
                     what="the refusal in /debug/sources")
    assert await server.listeners() == {}
    assert (await secret_names(server)) == []
    snapshot = await plane.admin.snapshot("server-node")
    assert snapshot["SDS"]["resources"] == [] and snapshot["LDS"]["resources"] == []
    assert "xds.insecure_secrets" in caplog.text


async def test_http_layer_answers_through_envoys_router_over_mtls(manifests, start_plane, start_envoy):
    mesh = Mesh()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"app {request.version.major}.{request.version.minor} {request.path}")

    runner = web.AppRunner(web.Application(handler_args=None))
    runner.app.router.add_get("/{tail:.*}", hello)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    app_port = runner.addresses[0][1]
    listen, egress_port = free_port(SERVER_IP), free_port()
    manifests.write("mesh.yaml", *mtls_manifests(mesh, listen, app_port, egress_port, layer="http"))
    plane = await start_plane(ingress_address=SERVER_IP, xds=SECRETS_ON)
    server = await start_envoy("server-node", plane.xds_port)
    await start_envoy("client-node", plane.xds_port)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def through_egress() -> tuple[int, str, str] | None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{egress_port}/hi") as response:
                        return response.status, await response.text(), response.headers.get("server", "")
                return None

            assert await wait_until(through_egress, what="HTTP through both Envoys") == (200, "app 1.1 /hi", "envoy")
            assert await server.stat("http.http.downstream_rq_2xx") >= 1
            # A valid certificate with a SAN outside rbac.sans: the HTTP RBAC filter answers 403.
            url = f"https://{SERVER_IP}:{listen}/hi"
            async with session.get(url, ssl=client_context(mesh.ca, mesh.stranger)) as response:
                assert response.status == 403
            async with session.get(url, ssl=client_context(mesh.ca, mesh.client)) as response:
                assert (response.status, await response.text()) == (200, "app 1.1 /hi")
    finally:
        await runner.cleanup()


async def _reply_tls(port: int, mesh: Mesh) -> bool:
    return (await tls_talk(port, client_context(mesh.ca, mesh.client)))[0] == "app hello"


async def _problem(plane, *fragments: str) -> bool:
    sources = await plane.admin.json("/debug/sources")
    return any(all(f in p for f in fragments) for s in sources for p in s["problems"])


async def test_secrets_from_kubernetes_are_looked_up_in_the_listeners_own_cluster(
    fake_clusters, start_kube_plane, start_envoy
):
    """Two clusters each hold a Secret `server-tls`; each cluster's listener presents its own cluster's certificate."""
    from .kube_fixtures import kingress

    mesh = Mesh()
    app, app_port = await echo_app()
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    leaves = {"aws": mesh.server, "gcp": mesh.ca.issue("server", [SERVER_SAN])}
    ports = {"aws": free_port(SERVER_IP), "gcp": free_port(SERVER_IP)}
    for cluster in (aws, gcp):
        cluster.kube.upsert(tls_secret("server-tls", leaves[cluster.name], mesh.ca))
        listener = kingress(f"in-{cluster.name}", "server-node", ports[cluster.name], app_port)
        listener["spec"] |= {"rbac": {"sans": [CLIENT_SAN]}, "tls": {"secret": "server-tls"}}
        cluster.kube.upsert(listener)
    plane = await start_kube_plane(aws, gcp, ingress_address=SERVER_IP, xds=SECRETS_ON)
    server = await start_envoy("server-node", plane.xds_port)
    client = client_context(mesh.ca, mesh.client)
    for name in ("aws", "gcp"):
        reply, serial = await wait_until(lambda: _served(ports[name], client), what=f"{name}'s listener")
        assert (reply, serial) == ("app hello", leaves[name].serial)
    assert await secret_names(server) == [
        "aws/default/server-tls", "aws/default/server-tls/ca.crt", "gcp/default/server-tls", "gcp/default/server-tls/ca.crt"
    ]
    app.close()


async def _served(port: int, client: ssl.SSLContext) -> tuple[str | None, int | None] | None:
    result = await tls_talk(port, client)
    return result if result[0] else None


async def test_grpc_stays_http2_end_to_end_through_an_http_hop(manifests, start_plane, start_envoy):
    """gRPC (HTTP/2 only: an HTTP/1.1 hop anywhere would fail it) through the egress, the mTLS hop and the ingress;
    and straight to the ingress over TLS, which a gRPC client accepts only with ALPN h2."""
    import grpc

    mesh = Mesh()

    async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"app " + request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})]
    )
    app_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    listen, egress_port = free_port(SERVER_IP), free_port()
    manifests.write("mesh.yaml", *mtls_manifests(mesh, listen, app_port, egress_port, layer="http"))
    plane = await start_plane(ingress_address=SERVER_IP, xds=SECRETS_ON)
    envoy = await start_envoy("server-node", plane.xds_port)
    await start_envoy("client-node", plane.xds_port)
    credentials = grpc.ssl_channel_credentials(mesh.ca.cert, mesh.client.key, mesh.client.cert)
    direct_options = [("grpc.ssl_target_name_override", "server.default")]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{egress_port}") as plain, grpc.aio.secure_channel(
            f"{SERVER_IP}:{listen}", credentials, options=direct_options
        ) as direct:

            async def call(channel: grpc.aio.Channel) -> bytes | None:
                try:
                    return await channel.unary_unary("/test.Echo/Say")(b"hi", timeout=3)
                except grpc.aio.AioRpcError:
                    return None

            assert await wait_until(lambda: call(plain), what="gRPC through both Envoys") == b"app hi"
            assert await call(direct) == b"app hi"
            assert await envoy.stat("http.http.downstream_cx_http2_total") >= 2
    finally:
        await server.stop(None)
