"""Health of egress endpoints through a real Envoy: active health checks (tcp, http) and outlier detection.

Checks run every 200 ms here so the tests are short; what they show does not depend on speed: a failing endpoint gets
no traffic once Envoy marks it, and gets traffic again once it answers.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from .harness import BackendGroup, egress, free_port, pod, settle, start_backend, talk, talk_many, wait_until
from .test_mtls import SECRETS_ON, SERVER_IP, Mesh, mtls_manifests

pytestmark = pytest.mark.timeout(60)

CLUSTER = "egress_backends_cluster"
FAST_TCP_CHECK = {"type": "tcp", "interval": "200ms", "timeout": "200ms", "unhealthyThreshold": 2, "healthyThreshold": 1}
PODS = {"backend-a": "127.0.0.2", "backend-b": "127.0.0.3", "backend-c": "127.0.0.4"}


async def reopen(group: BackendGroup, name: str) -> None:
    """Start `name` again on its IP and the group's port (the fixture closes it on teardown)."""
    old = group[name]
    group.backends[name] = await start_backend(name, old.host, group.port)


async def start(manifests, start_plane, start_envoy, backends, names, **spec):
    group = await backends({name: PODS[name] for name in names})
    listen = free_port()
    manifests.write("pods.yaml", *(pod(name, PODS[name], "backends") for name in names))
    manifests.write("listeners.yaml", egress("backends", "node-a", listen, group.port, "backends", **spec))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    return group, listen, envoy


async def flags(envoy, port: int) -> dict[str, set[str]]:
    """Envoy's health flags per pod name (the pods of PODS, on `port`)."""
    by_address = {f"{ip}:{port}": name for name, ip in PODS.items()}
    return {by_address[address]: f for address, f in (await envoy.host_health(CLUSTER)).items()}


async def only(listen: int, name: str, count: int = 6) -> bool:
    return await talk_many(listen, count) == {name: count}


async def spread(listen: int, names: set[str]) -> bool:
    return set(await talk_many(listen, 3 * len(names))) == names


async def refused(listen: int, count: int = 3) -> bool:
    return await talk_many(listen, count) == {None: count}


def healthy(names):
    return lambda seen: all(not seen.get(name, {"absent"}) for name in names)


async def wait_flags(envoy, port, accept, what, timeout=10.0):
    async def check():
        seen = await flags(envoy, port)
        return seen if accept(seen) else None

    return await wait_until(check, timeout, what=what)


async def test_a_health_checked_cluster_without_traffic_drops_a_closed_backend_and_takes_it_back(
    manifests, start_plane, start_envoy, backends
):
    group, listen, envoy = await start(
        manifests, start_plane, start_envoy, backends, ["backend-a", "backend-b", "backend-c"], healthcheck=FAST_TCP_CHECK
    )
    await wait_flags(envoy, group.port, healthy(PODS), "all three healthy")

    # Two of three stop accepting connections. No traffic flows: Envoy's default would check this cluster once a
    # minute; here it checks every interval and marks them within a few.
    await group["backend-b"].close()
    await group["backend-c"].close()
    failed = lambda seen: all("failed_active_health_check" in seen[n] for n in ("backend-b", "backend-c"))  # noqa: E731
    seen = await wait_flags(envoy, group.port, failed, "b and c failing their health checks")
    assert not seen["backend-a"], seen
    assert await envoy.stat(f"cluster.{CLUSTER}.upstream_cx_total") == 0  # no traffic at all (checks not counted)

    # Only the healthy third gets connections (no panic mode sending traffic to all three once 2/3 fail), once the
    # workers have the change: Envoy delivers a second health change within 1 s of the first one together.
    await wait_until(lambda: only(listen, "backend-a"), what="connections to backend-a only")

    # They answer again: Envoy takes them back, again without traffic in between.
    connections = f"cluster.{CLUSTER}.upstream_cx_total"  # traffic only: health checks are not counted here
    before = await envoy.stat(connections)
    await reopen(group, "backend-b")
    await reopen(group, "backend-c")
    await wait_flags(envoy, group.port, healthy(PODS), "b and c healthy again")
    assert await envoy.stat(connections) == before
    await wait_until(lambda: spread(listen, {"backend-a", "backend-b", "backend-c"}), what="traffic to all three")

    # All of them fail: connections are closed at once rather than sent to a failing pod.
    for name in PODS:
        await group[name].close()
    all_failed = lambda seen: all("failed_active_health_check" in f for f in seen.values())  # noqa: E731
    await wait_flags(envoy, group.port, all_failed, "all three failing")
    none_healthy = f"cluster.{CLUSTER}.upstream_cx_none_healthy"

    async def closed_for_want_of_a_healthy_pod() -> bool:
        before = await envoy.stat(none_healthy)
        return await refused(listen) and await envoy.stat(none_healthy) == before + 3

    await wait_until(closed_for_want_of_a_healthy_pod, what="connections closed with no healthy pod to send them to")


async def test_a_removed_pod_leaves_a_health_checked_cluster_at_once_and_the_cluster_is_not_resent(
    manifests, start_plane, start_envoy, backends
):
    group, listen, envoy = await start(
        manifests, start_plane, start_envoy, backends, ["backend-a", "backend-b"], healthcheck=FAST_TCP_CHECK
    )
    await wait_flags(envoy, group.port, healthy(["backend-a", "backend-b"]), "both healthy")
    cds_before = await cds_state(envoy)

    # backend-b's pod turns not-Ready while its process still answers health checks: it leaves at once (Envoy would
    # keep a removed endpoint that passes its health checks until it fails them).
    not_ready = pod("backend-b", PODS["backend-b"], "backends", ready=False)
    manifests.write("pods.yaml", pod("backend-a", PODS["backend-a"], "backends"), not_ready)
    await wait_flags(envoy, group.port, lambda seen: set(seen) == {"backend-a"}, "backend-b gone")
    assert await only(listen, "backend-a")

    # Only the load assignment changed: no CDS update reached Envoy, the cluster's version is the same.
    assert await cds_state(envoy) == cds_before


async def cds_state(envoy) -> tuple[int, dict[str, str]]:
    """How many CDS updates Envoy accepted, and each dynamic cluster's version."""
    sections = await envoy.dump_sections(include_eds=False)
    versions = {c["cluster"]["name"]: c["version_info"] for c in sections["clusters"]["dynamic_active_clusters"]}
    updates = await envoy.stat("cluster_manager.cds.update_success")
    assert updates and versions, (updates, versions)
    return updates, versions


# ---- HTTP health checks -----------------------------------------------------------------------------------------


async def test_http_health_checks_drop_a_backend_answering_an_unexpected_status(
    manifests, start_plane, start_envoy, backends
):
    check = {**FAST_TCP_CHECK, "type": "http", "path": "/healthz", "expectedStatuses": [200, 204]}
    group, listen, envoy = await start(
        manifests, start_plane, start_envoy, backends, ["backend-a", "backend-b"], healthcheck=check
    )
    await wait_flags(envoy, group.port, healthy(["backend-a", "backend-b"]), "both healthy")
    assert set(group["backend-a"].health_hosts) == {"backends"}  # the Host header defaults to the targetcluster

    group["backend-b"].health_status = 503
    failed = lambda seen: "failed_active_health_check" in seen["backend-b"]  # noqa: E731
    await wait_flags(envoy, group.port, failed, "b failing its health checks")
    await wait_until(lambda: only(listen, "backend-a"), what="connections to backend-a only")

    group["backend-b"].health_status = 204  # another expected status
    await wait_flags(envoy, group.port, healthy(["backend-a", "backend-b"]), "b healthy again")
    await wait_until(lambda: spread(listen, {"backend-a", "backend-b"}), what="traffic to both")


# ---- outlier detection -------------------------------------------------------------------------------------------


async def test_outlier_detection_ejects_a_backend_refusing_connections(manifests, start_plane, start_envoy, backends):
    # maxEjectionPercent is left at 10: Envoy would eject neither of two pods, here one can always be ejected.
    detection = {"consecutiveErrors": 2, "interval": "10s", "baseEjectionTime": "1m"}
    group, listen, envoy = await start(
        manifests, start_plane, start_envoy, backends, ["backend-a", "backend-b"], outlierDetection=detection
    )
    await group["backend-b"].close()

    # Round robin sends every other connection to b, refused: after two of those in a row, b is ejected.
    ejections = f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total"
    refused = 0
    for _ in range(20):
        refused += (await talk(listen)) is None
        if await envoy.stat(ejections):
            break
    assert await envoy.stat(ejections) == 1
    assert refused in (2, 3)  # the ejection reaches the worker thread a moment after the second failure
    seen = await flags(envoy, group.port)
    assert "failed_outlier_check" in seen["backend-b"] and not seen["backend-a"], seen
    replies = await talk_many(listen, 8)
    assert replies == {"backend-a": 8}, replies


# ---- the bounds of every setting are values Envoy takes ------------------------------------------------------------


async def test_envoy_accepts_the_extremes_of_every_setting(manifests, start_plane, start_envoy):
    visible = "".join(chr(c) for c in range(ord("!"), ord("~") + 1))  # every character a path or host may have
    low = {
        "healthcheck": {"type": "tcp", "interval": "1ms", "timeout": "1ms", "unhealthyThreshold": 1,
                        "healthyThreshold": 1},
        "outlierDetection": {"consecutiveErrors": 1, "interval": "1ms", "baseEjectionTime": "1ms",
                             "maxEjectionPercent": 0},
    }
    high = {
        "healthcheck": {"type": "http", "interval": "1h", "timeout": "1h", "unhealthyThreshold": 100,
                        "healthyThreshold": 100, "path": ("/" + visible * 12)[:1024], "host": (visible * 3)[:255],
                        "expectedStatuses": [100, 599, *range(200, 298)]},
        "outlierDetection": {"consecutiveErrors": 1000, "interval": "1h", "baseEjectionTime": "1h",
                             "maxEjectionPercent": 100},
    }
    # No pods behind them (nothing to check every millisecond): this is about Envoy taking the config.
    manifests.write(
        "listeners.yaml",
        egress("low", "node-a", free_port(), 8080, "nobody", **low),
        egress("high", "node-a", free_port(), 8080, "nobody", **high),
    )
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")
    assert (await plane.admin.node_types("node-a"))["CDS"]["nacks"] == 0
    sections = await envoy.dump_sections(include_eds=False)
    clusters = {c["cluster"]["name"]: c["cluster"] for c in sections["clusters"]["dynamic_active_clusters"]}
    assert clusters["egress_low_cluster"]["health_checks"][0]["interval"] == "0.001s"
    assert clusters["egress_high_cluster"]["health_checks"][0]["http_health_check"]["host"] == high["healthcheck"]["host"]
    assert clusters["egress_high_cluster"]["outlier_detection"]["consecutive_5xx"] == 1000


# ---- the HTTP layer: 5xx count too, and a passing health check does not end an ejection --------------------------


@pytest.fixture
async def http_apps():
    """`start({name: ip}, status)`: aiohttp apps on one port, answering GET /healthz with 200 and anything else with
    their name and `status[name]` (which the test may change)."""
    runners: list[web.AppRunner] = []

    async def start(by_name: dict[str, str], status: dict[str, int]) -> int:
        port = free_port(next(iter(by_name.values())))
        for name, ip in by_name.items():

            async def handle(request: web.Request, name: str = name) -> web.Response:
                if request.path == "/healthz":
                    return web.Response(text="ok")
                return web.Response(text=name, status=status[name])

            runner = web.AppRunner(web.Application())
            runner.app.router.add_get("/{tail:.*}", handle)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, ip, port, reuse_address=True).start()
        return port

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_http_layer_outlier_detection_ejects_on_5xx_and_a_passing_health_check_does_not_end_it(
    manifests, start_plane, start_envoy, http_apps
):
    status = {"backend-a": 200, "backend-b": 500}
    port = await http_apps({n: PODS[n] for n in status}, status)
    listen = free_port()
    manifests.write("pods.yaml", *(pod(n, PODS[n], "backends") for n in status))
    manifests.write("listeners.yaml", egress(
        "backends", "node-a", listen, port, "backends", layer="http",
        healthcheck={**FAST_TCP_CHECK, "type": "http", "path": "/healthz"},  # passes on both
        outlierDetection={"consecutiveErrors": 3, "baseEjectionTime": "1m"},
    ))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    group = BackendGroup(port, {n: None for n in status})  # type: ignore[misc]  (only names and port for `flags`)
    await wait_flags(envoy, port, healthy(list(status)), "both healthy")
    ejections = f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total"

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def get() -> tuple[int, str]:
            async with session.get(f"http://127.0.0.1:{listen}/work") as response:
                return response.status, await response.text()

        # Round robin: every other request reaches b and gets its 500; the third in a row ejects b.
        errors = 0
        for _ in range(20):
            errors += (await get())[0] == 500
            if await envoy.stat(ejections):
                break
        assert await envoy.stat(ejections) == 1
        assert errors in (3, 4)  # the ejection reaches the worker thread a moment after the third 500

        # b keeps passing its health checks (several intervals go by), and stays ejected for baseEjectionTime.
        await settle(1.0)
        seen = await flags(envoy, port)
        assert seen["backend-b"] == {"failed_outlier_check"} and not seen["backend-a"], seen
        assert [await get() for _ in range(6)] == [(200, "backend-a")] * 6


async def test_http_layer_outlier_detection_ejects_a_backend_refusing_connections(
    manifests, start_plane, start_envoy, http_apps
):
    port = await http_apps({"backend-a": PODS["backend-a"]}, {"backend-a": 200})  # nothing listens on b's address
    listen = free_port()
    manifests.write("pods.yaml", *(pod(n, PODS[n], "backends") for n in ("backend-a", "backend-b")))
    manifests.write("listeners.yaml", egress(
        "backends", "node-a", listen, port, "backends", layer="http", outlierDetection={"consecutiveErrors": 2}
    ))
    plane = await start_plane()
    envoy = await start_envoy("node-a", plane.xds_port)
    ejections = f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def get() -> int:
            async with session.get(f"http://127.0.0.1:{listen}/work") as response:
                return response.status

        refused = 0  # Envoy answers 503 for a connection b refused
        for _ in range(20):
            refused += await get() == 503
            if await envoy.stat(ejections):
                break
        assert await envoy.stat(ejections) == 1
        assert refused in (2, 3)  # as on the TCP layer
        assert [await get() for _ in range(6)] == [200] * 6


# ---- across an mTLS hop -------------------------------------------------------------------------------------------


async def test_http_health_checks_cross_the_mtls_hop_and_reach_the_app(manifests, start_plane, start_envoy):
    """With `tls`, an egress's endpoints are the peers' ingress Envoys: the checks use the cluster's TLS, and on the
    HTTP layer they pass through the peer's ingress to its app, so an app that stops is seen."""
    mesh = Mesh()
    requests: list[tuple[str, str | None]] = []

    async def app(request: web.Request) -> web.Response:
        requests.append((request.path, request.headers.get("host")))
        return web.Response(text="ok")

    runner = web.AppRunner(web.Application())
    runner.app.router.add_get("/{tail:.*}", app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        listen, egress_port = free_port(SERVER_IP), free_port()
        docs = mtls_manifests(mesh, listen, runner.addresses[0][1], egress_port, layer="http")
        docs[-1]["spec"]["healthcheck"] = {**FAST_TCP_CHECK, "type": "http", "path": "/healthz"}
        manifests.write("mesh.yaml", *docs)
        plane = await start_plane(ingress_address=SERVER_IP, xds=SECRETS_ON)
        server = await start_envoy("server-node", plane.xds_port)
        client = await start_envoy("client-node", plane.xds_port)
        cluster = "egress_secure-out_cluster"

        async def flags() -> set[str] | None:
            hosts = await client.host_health(cluster)
            return hosts.get(f"{SERVER_IP}:{listen}")

        await wait_until(lambda: _is(flags(), set()), what="the peer healthy")
        assert await server.stat(f"listener.{SERVER_IP}_{listen}.ssl.handshake")
        assert ("/healthz", "servers") in requests  # through the peer's ingress, Host: the targetcluster
    finally:
        await runner.cleanup()
    await wait_until(lambda: _is(flags(), {"failed_active_health_check"}), what="the peer failing once its app stopped")


async def _is(value, expected) -> bool:
    return await value == expected
