"""Listener status through a real Envoy: /debug/listeners shows each listener's Accepted and Programmed conditions,
a port conflict on the newer listener, the Envoy's ACK, and the Envoy's own message when it rejects a listener."""

from __future__ import annotations

import socket

import pytest

from .harness import egress, free_port, ingress, pod, wait_until

pytestmark = pytest.mark.timeout(40)


async def listeners(plane) -> dict[str, dict]:
    return {entry["name"]: entry for entry in await plane.admin.json("/debug/listeners")}


def condition(entry: dict, type_: str) -> tuple[str, str, str]:
    found = next(c for c in entry["conditions"] if c["type"] == type_)
    return found["status"], found["reason"], found["message"]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_conflicts_acks_and_nacks_show_as_listener_conditions(
    manifests, start_plane, start_envoy, backends, delta
):
    pods = await backends({"a": "127.0.0.2"})
    port = free_port()
    older = egress("older", "node-a", port, pods.port, "backends")
    older["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    newer = ingress("newer", "node-a", port, pods.port, rbacallowcluster="backends")
    newer["metadata"]["creationTimestamp"] = "2026-02-01T00:00:00Z"
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    broken = egress("broken", "node-a", free_port(), pods.port, "backends")
    broken["spec"]["targetport"] = "eighty"
    manifests.write("listeners.yaml", older, newer)
    manifests.write("broken.yaml", broken)
    plane = await start_plane()

    # No Envoy yet: the conflict is known, whether the older one runs is not.
    found = await listeners(plane)
    assert condition(found["newer"], "Accepted")[:2] == ("False", "PortConflict")
    assert "EgressListener default/older" in condition(found["newer"], "Accepted")[2]
    assert condition(found["older"], "Accepted")[:2] == ("True", "Accepted")
    assert condition(found["older"], "Programmed")[:2] == ("Unknown", "NoEnvoy")
    status, reason, message = condition(found["broken"], "Accepted")
    assert (status, reason) == ("False", "InvalidSpec") and "spec.targetport" in message and "broken.yaml" in message
    assert condition(found["broken"], "Programmed")[:2] == ("False", "NotAccepted")
    assert {k: found["older"][k] for k in ("source", "kind", "namespace", "node", "port", "endpoints")} == {
        "source": "manifests", "kind": "EgressListener", "namespace": "default", "node": "node-a", "port": port,
        "endpoints": 1,
    }

    await start_envoy("node-a", plane.xds_port, delta=delta)

    async def programmed() -> bool:
        return condition((await listeners(plane))["older"], "Programmed")[:2] == ("True", "Programmed")

    await wait_until(programmed, what="the older listener Programmed once Envoy ACKs it")
    assert condition((await listeners(plane))["newer"], "Programmed")[:2] == ("False", "NotAccepted")

    with socket.socket() as squatter:  # another process holds the port: Envoy cannot bind it and NACKs the LDS
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        manifests.write("listeners.yaml", older, newer, egress("clash", "node-a", taken, pods.port, "backends"))

        async def rejected_clash() -> bool:
            entry = (await listeners(plane)).get("clash")
            return entry is not None and condition(entry, "Programmed")[:2] == ("False", "Rejected")

        await wait_until(rejected_clash, what="the listener Envoy cannot bind to be Programmed=False")
        _, _, message = condition((await listeners(plane))["clash"], "Programmed")
        assert str(taken) in message and "egress_clash" in message, message
        assert condition((await listeners(plane))["clash"], "Accepted")[:2] == ("True", "Accepted")
        assert condition((await listeners(plane))["older"], "Programmed")[:2] == ("True", "Programmed")
