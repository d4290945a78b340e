"""Listener status written back to Kubernetes (fake API servers): on the object's own cluster, through its /status
subresource, only when it changed; Events for rejections; and, with two control-plane processes, only the lease
holder writes, the other taking over once the holder is killed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakekube.resources import EVENT
from tests.fakekube.status import ApiError
from tests.fakekube.store import now

from .harness import free_port, http, procs, settle, wait_until
from .harness.plane import PlaneAdmin, plane_command
from .kube_fixtures import kegress, kingress, kpod

pytestmark = pytest.mark.timeout(60)

FAST_STATUS = {"startup_grace_s": 0, "interval_s": 0.1, "lease": {"duration_s": 1, "renew_deadline_s": 0.6,
                                                                  "retry_period_s": 0.2}}


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions", [])}


def status_patches(kube, name: str) -> list[str]:
    return [path for method, path in kube.requests if method == "PATCH" and path.endswith(f"/{name}/status")]


async def test_status_lands_on_the_objects_own_cluster_once_with_events(
    fake_clusters, start_kube_plane, start_envoy, backends
):
    pods = await backends({"b1": "127.0.0.2"})
    shared_aws, shared_gcp, taken = free_port(), free_port(), free_port()
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    older = kegress("older", "node-a", taken, pods.port, "backends")
    aws.kube.upsert(older)
    aws.kube.upsert(kpod("b1", "127.0.0.2", "backends"))
    # One name in both clusters: each object's status goes to its own cluster (node-b has no Envoy).
    aws.kube.upsert(kegress("shared", "node-a", shared_aws, pods.port, "backends"))
    gcp.kube.upsert(kingress("shared", "node-b", shared_gcp, pods.port, rbacallowcluster="nobody"))
    plane = await start_kube_plane(aws, gcp, status=FAST_STATUS)
    await start_envoy("node-a", plane.xds_port)
    await plane.admin.wait_in_sync("node-a")

    # The newer of two listeners on one port: Accepted=False, PortConflict, with an Event. creationTimestamps have
    # whole seconds, and within one second the first by namespace/name ("newer") would count as the older.
    created = aws.kube.get("EgressListener", "default", "older")["metadata"]["creationTimestamp"]
    await wait_until(lambda: _after(created), what="the next second")
    aws.kube.upsert(kegress("newer", "node-a", taken, pods.port, "backends"))

    async def newer_rejected() -> bool:
        return conditions(aws.kube.get("EgressListener", "default", "newer")).get("Accepted") == (
            "False", "PortConflict")

    await wait_until(newer_rejected, what="the newer listener's status to say PortConflict")

    async def programmed() -> bool:
        found = conditions(aws.kube.get("EgressListener", "default", "shared"))
        return found.get("Programmed") == ("True", "Programmed")

    await wait_until(programmed, what="aws's listener Programmed once node-a's Envoy ACKed it")
    aws_shared = aws.kube.get("EgressListener", "default", "shared")
    assert aws_shared["status"]["endpoints"] == 1
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in aws_shared["status"]["conditions"])
    gcp_shared = await wait_until(lambda: gcp.kube.get("IngressListener", "default", "shared").get("status"),
                                  what="gcp's listener status")
    assert conditions({"status": gcp_shared})["Programmed"] == ("Unknown", "NoEnvoy")
    assert gcp_shared["endpoints"] == 0
    assert not any(method == "PATCH" and "ingresslisteners" in path for method, path in aws.kube.requests)
    assert not any(method == "PATCH" and "egresslisteners" in path for method, path in gcp.kube.requests)

    # The Event names the object (kind, name, uid), so `kubectl describe` shows it.
    newer = aws.kube.get("EgressListener", "default", "newer")
    events = [e for e in aws.kube.store.list(EVENT, "default", lambda e: True)
              if e["involvedObject"]["name"] == "newer"]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "PortConflict")]
    assert events[0]["involvedObject"]["uid"] == newer["metadata"]["uid"]
    assert "EgressListener default/older" in events[0]["message"]

    # Nothing changes: nothing is written again (the writer compares every 0.1 s).
    counts = {name: len(status_patches(aws.kube, name)) for name in ("older", "newer", "shared")}
    await settle(1.0)
    assert {name: len(status_patches(aws.kube, name)) for name in counts} == counts
    assert all(counts.values()), counts

    # A spec edit moves observedGeneration; a status change keeps it (and the generation) where it is.
    aws.kube.upsert(kegress("newer", "node-a", free_port(), pods.port, "backends"))

    async def accepted_at_generation_2() -> bool:
        obj = aws.kube.get("EgressListener", "default", "newer")
        accepted = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Accepted"]
        return bool(accepted) and accepted[0]["status"] == "True" and accepted[0]["observedGeneration"] == 2

    await wait_until(accepted_at_generation_2, what="the edited listener accepted at generation 2")
    assert aws.kube.get("EgressListener", "default", "newer")["metadata"]["generation"] == 2


class _Process:
    """`envoy-control-plane run` against fake clusters, with its own identity in the lease."""

    def __init__(self, workdir: Path, identity: str, clusters: list[dict[str, str]]) -> None:
        self.identity = identity
        self.admin = PlaneAdmin(free_port())
        self.log = workdir / f"{identity}.log"
        config = {
            "xds": {"address": "127.0.0.1", "port": free_port()},
            "admin": {"address": "127.0.0.1", "port": int(self.admin.url.rsplit(":", 1)[1])},
            "clusters": clusters,
            "status": {**FAST_STATUS, "identity": identity, "lease": {**FAST_STATUS["lease"], "namespace": "cp"}},
        }
        path = workdir / f"{identity}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.proc = procs.spawn([plane_command(), "run", "--config", str(path), "--log-level", "DEBUG"], self.log)

    async def metric(self, name: str, **labels: str) -> float:
        return await self.admin.metric(name, **labels)


async def test_only_the_lease_holder_writes_and_another_takes_over_when_it_is_killed(fake_clusters, tmp_path):
    aws = await fake_clusters("aws")
    aws.kube.upsert(kegress("one", "node-a", free_port(), 9, "backends"))
    cluster = [aws.config()]
    first = _Process(tmp_path, "cp-1", cluster)
    second = None
    try:
        await wait_until(lambda: _holder(aws.kube) == "cp-1", 20, what="cp-1 to take the lease")
        second = _Process(tmp_path, "cp-2", cluster)
        await wait_until(lambda: _has_status(aws.kube, "one"), 20, what="the holder to write the status")
        await wait_until(lambda: _ready(second), 20, what="cp-2 to serve")
        assert await first.metric("envoy_cp_status_leader") == 1 and await second.metric("envoy_cp_status_leader") == 0

        aws.kube.upsert(kegress("two", "node-a", free_port(), 9, "backends"))
        await wait_until(lambda: _has_status(aws.kube, "two"), what="the holder to write the new object's status")
        await settle(0.5)
        assert await second.metric("envoy_cp_status_patches_total", cluster="aws") == 0
        assert await first.metric("envoy_cp_status_patches_total", cluster="aws") >= 2
        assert _holder(aws.kube) == "cp-1"

        os.kill(first.proc.pid, signal.SIGKILL)  # no release: cp-2 waits out the lease
        first.proc.wait(5)
        await wait_until(lambda: _holder(aws.kube) == "cp-2", 20, what="cp-2 to take the lease over")
        aws.kube.upsert(kegress("three", "node-a", free_port(), 9, "backends"))
        await wait_until(lambda: _has_status(aws.kube, "three"), what="cp-2 to write the status")
        assert await second.metric("envoy_cp_status_patches_total", cluster="aws") >= 1
        assert await second.metric("envoy_cp_status_leader") == 1

        # A clean stop releases the lease: nobody holds it afterwards. (The fake API server runs in this event
        # loop: wait for the exit without blocking it.)
        second.proc.terminate()
        await wait_until(lambda: second.proc.poll() is not None, what="cp-2 to exit")
        assert _holder(aws.kube) == ""
    finally:
        procs.stop(first.proc)
        if second is not None:
            procs.stop(second.proc)


def _holder(kube) -> str | None:
    try:
        return kube.get("Lease", "cp", "envoy-control-plane")["spec"].get("holderIdentity")
    except ApiError:
        return None


def _has_status(kube, name: str) -> bool:
    return bool(kube.get("EgressListener", "default", name).get("status"))


async def _ready(process: _Process) -> bool:
    return await http.reachable(process.admin.url + "/readyz")


async def _after(timestamp: str) -> bool:
    return now() > timestamp


async def test_idle_rounds_compute_nothing_and_a_change_is_still_written(fake_clusters, start_kube_plane):
    aws = await fake_clusters("aws")
    aws.kube.upsert(kegress("out", "node-a", free_port(), 8080, "backends"))
    plane = await start_kube_plane(aws, status=FAST_STATUS)
    writer = plane.control_plane.status_writer

    def endpoints() -> int | None:
        return (aws.kube.get("EgressListener", "default", "out").get("status") or {}).get("endpoints")

    await wait_until(lambda: endpoints() == 0, what="the first status")
    await wait_until(lambda: writer._done is not None, what="a round that wrote everything")
    rounds = writer.rounds
    for _ in range(10):  # ten rounds' worth of nothing (its own status read back through the watch included)
        await asyncio.sleep(FAST_STATUS["interval_s"])
    assert writer.rounds == rounds
    aws.kube.upsert(kpod("b1", "127.0.0.2", "backends"))
    await wait_until(lambda: endpoints() == 1, what="the new endpoint in the status")
