"""Health of egress endpoints through a real Envoy: active health checks (tcp, http) and outlier detection.

Checks run every 200 ms here so the tests are short; what they show does not depend on speed: a failing endpoint gets
no traffic once Envoy marks it, and gets traffic again once it answers.
"""

from __future__ import annotations

import pytest

from .harness import BackendGroup, egress, free_port, pod, start_backend, talk, talk_many, wait_until

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


async def flags(envoy, group: BackendGroup) -> dict[str, set[str]]:
    """Envoy's health flags per backend name."""
    by_address = {f"{b.host}:{group.port}": name for name, b in group.backends.items()}
    return {by_address[address]: f for address, f in (await envoy.host_health(CLUSTER)).items()}


async def only(listen: int, name: str, count: int = 6) -> bool:
    return await talk_many(listen, count) == {name: count}


async def spread(listen: int, names: set[str]) -> bool:
    return set(await talk_many(listen, 3 * len(names))) == names


def healthy(names):
    return lambda seen: all(not seen.get(name, {"absent"}) for name in names)


async def wait_flags(envoy, group, accept, what, timeout=10.0):
    async def check():
        seen = await flags(envoy, group)
        return seen if accept(seen) else None

    return await wait_until(check, timeout, what=what)


async def test_a_health_checked_cluster_without_traffic_drops_a_closed_backend_and_takes_it_back(
    manifests, start_plane, start_envoy, backends
):
    group, listen, envoy = await start(
        manifests, start_plane, start_envoy, backends, ["backend-a", "backend-b", "backend-c"], healthcheck=FAST_TCP_CHECK
    )
    await wait_flags(envoy, group, healthy(PODS), "all three healthy")

    # Two of three stop accepting connections. No traffic flows: Envoy's default would check this cluster once a
    # minute; here it checks every interval and marks them within a few.
    await group["backend-b"].close()
    await group["backend-c"].close()
    failed = lambda seen: all("failed_active_health_check" in seen[n] for n in ("backend-b", "backend-c"))  # noqa: E731
    seen = await wait_flags(envoy, group, failed, "b and c failing their health checks")
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
    await wait_flags(envoy, group, healthy(PODS), "b and c healthy again")
    assert await envoy.stat(connections) == before
    await wait_until(lambda: spread(listen, {"backend-a", "backend-b", "backend-c"}), what="traffic to all three")


async def test_a_removed_pod_leaves_a_health_checked_cluster_at_once_and_the_cluster_is_not_resent(
    manifests, start_plane, start_envoy, backends
):
    group, listen, envoy = await start(
        manifests, start_plane, start_envoy, backends, ["backend-a", "backend-b"], healthcheck=FAST_TCP_CHECK
    )
    await wait_flags(envoy, group, healthy(["backend-a", "backend-b"]), "both healthy")
    cds_before = await cds_state(envoy)

    # backend-b's pod turns not-Ready while its process still answers health checks: it leaves at once (Envoy would
    # keep a removed endpoint that passes its health checks until it fails them).
    not_ready = pod("backend-b", PODS["backend-b"], "backends", ready=False)
    manifests.write("pods.yaml", pod("backend-a", PODS["backend-a"], "backends"), not_ready)
    await wait_flags(envoy, group, lambda seen: set(seen) == {"backend-a"}, "backend-b gone")
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
    await wait_flags(envoy, group, healthy(["backend-a", "backend-b"]), "both healthy")
    assert set(group["backend-a"].health_hosts) == {"backends"}  # the Host header defaults to the targetcluster

    group["backend-b"].health_status = 503
    failed = lambda seen: "failed_active_health_check" in seen["backend-b"]  # noqa: E731
    await wait_flags(envoy, group, failed, "b failing its health checks")
    await wait_until(lambda: only(listen, "backend-a"), what="connections to backend-a only")

    group["backend-b"].health_status = 204  # another expected status
    await wait_flags(envoy, group, healthy(["backend-a", "backend-b"]), "b healthy again")
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
    assert refused == 2
    seen = await flags(envoy, group)
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
