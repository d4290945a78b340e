"""Conditions per listener: the world's rejections and the sources' invalid objects, folded with the streams' ACKs."""

from __future__ import annotations

from envoy_control_plane.sources.status import InvalidObject, SourceStatus
from envoy_control_plane.state import World
from envoy_control_plane.status.conditions import ListenerStatus, listener_statuses
from envoy_control_plane.translate.node import Addresses, build_node, node_resources
from envoy_control_plane.translate.secrets import ServedSecrets
from envoy_control_plane.xds.cache import Snapshot, SnapshotCache
from envoy_control_plane.xds.streams import StreamRegistry, TypeStatus
from envoy_control_plane.xds.types import LISTENER
from tests.unit.objects import egress, egress_doc, ingress, pod


def build(world: World, cache: SnapshotCache) -> None:
    for node in world.nodes():
        cache.set(node, Snapshot.build(node_resources(world, node, Addresses())))


def conditions(status: ListenerStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def fold(world: World, cache: SnapshotCache, streams: StreamRegistry, *sources: SourceStatus) -> dict:
    return {s.ref.name: s for s in listener_statuses(world, sources, cache, streams)}


def connect(streams: StreamRegistry, node: str) -> TypeStatus:
    info = streams.open("sotw", "test")
    info.node = node
    status = info.types[LISTENER] = TypeStatus()
    return status


def test_a_port_conflict_rejects_the_newer_and_names_the_older():
    world, cache, streams = World(), SnapshotCache(), StreamRegistry()
    world.upsert("m", egress("old", "n", 9090, 80, "web", creationTimestamp="2026-01-01T00:00:00Z"))
    world.upsert("m", egress("new", "n", 9090, 80, "web", creationTimestamp="2026-02-01T00:00:00Z"))
    build(world, cache)
    found = fold(world, cache, streams)
    assert conditions(found["old"]) == {"Accepted": ("True", "Accepted"), "Programmed": ("Unknown", "NoEnvoy")}
    assert conditions(found["new"]) == {"Accepted": ("False", "PortConflict"), "Programmed": ("False", "NotAccepted")}
    message = found["new"].condition("Accepted").message
    assert "port 9090" in message and "EgressListener default/old" in message


def test_programmed_follows_the_acks_and_nacks_of_the_nodes_envoys():
    world, cache, streams = World(), SnapshotCache(), StreamRegistry()
    world.upsert("m", egress("a", "n", 9090, 80, "web"))
    world.upsert("m", egress("b", "n", 9091, 80, "web"))
    build(world, cache)
    lds = connect(streams, "n")
    assert conditions(fold(world, cache, streams)["a"])["Programmed"] == ("Unknown", "Pending")

    versions = {name: r.version for name, r in cache.get("n").of_type(LISTENER).items()}
    lds.acked_resources = dict(versions)
    assert conditions(fold(world, cache, streams)["a"])["Programmed"] == ("True", "Programmed")

    # Both change; Envoy rejects the push, naming only egress_b: only b is blamed.
    world.upsert("m", egress("a", "n", 9190, 80, "web"))
    world.upsert("m", egress("b", "n", 9191, 80, "web"))
    build(world, cache)
    lds.rejected_resources = {name: r.version for name, r in cache.get("n").of_type(LISTENER).items()}
    lds.last_nack = "Error adding/updating listener(s) egress_b: cannot bind '127.0.0.1:9191': Address in use"
    found = fold(world, cache, streams)
    assert conditions(found["b"])["Programmed"] == ("False", "Rejected")
    assert "Address in use" in found["b"].condition("Programmed").message
    assert found["a"].condition("Programmed").status == "True"  # runs an earlier version, not blamed

    # A message that names none of them blames every listener the push changed.
    lds.last_nack = "something went wrong"
    assert {conditions(s)["Programmed"] for s in fold(world, cache, streams).values()} == {("False", "Rejected")}


def test_invalid_objects_show_with_what_their_spec_says_and_the_last_valid_version_keeps_running():
    world, cache, streams = World(), SnapshotCache(), StreamRegistry()
    world.upsert("m", egress("kept", "n", 9090, 80, "web", generation=3))
    build(world, cache)
    source = SourceStatus("m", "manifests")
    broken = egress_doc("kept", "n", 9090, 80, "web", generation=4)
    broken["spec"]["targetport"] = "eighty"
    bad = egress_doc("bad", "n", 9091, 80, "web")
    bad["spec"]["listenport"] = 0
    for doc, message in ((broken, "spec.targetport: not an int"), (bad, "spec.listenport: too small")):
        ref = egress(doc["metadata"]["name"], "n", 1, 1, "x").ref
        source.invalid[ref] = InvalidObject.of(ref, doc, message)
    found = fold(world, cache, streams, source)
    assert conditions(found["kept"])["Accepted"] == ("False", "InvalidSpec")
    assert "last valid version stays in effect" in found["kept"].condition("Accepted").message
    assert found["kept"].generation == 4 and found["kept"].port == 9090
    assert conditions(found["bad"]) == {"Accepted": ("False", "InvalidSpec"), "Programmed": ("False", "NotAccepted")}
    assert (found["bad"].node, found["bad"].port) == ("n", None)


def test_endpoints_count_the_pods_of_the_target_or_rbac_cluster():
    world, cache, streams = World(), SnapshotCache(), StreamRegistry()
    world.upsert("m", egress("out", "n", 9090, 80, "web"))
    world.upsert("m", ingress("in", "n", 9091, 80, allow="clients"))
    world.upsert("m", ingress("open", "n", 9092, 80))
    world.upsert("k", pod("w1", "web", "10.0.0.1"))
    world.upsert("k", pod("w2", "web", "10.0.0.2"))
    world.upsert("k", pod("c1", "clients", "10.0.1.1"))
    world.upsert("k", pod("c2", "clients", "10.0.1.2", ready=False))
    found = fold(world, cache, streams)
    assert (found["out"].endpoints, found["in"].endpoints, found["open"].endpoints) == (2, 1, 0)
    assert found["out"].to_json()["endpoints"] == 2 and found["out"].to_json()["kind"] == "EgressListener"


def test_a_listener_held_back_for_a_missing_secret_is_not_accepted():
    world, cache, streams = World(), SnapshotCache(), StreamRegistry()
    world.upsert("m", egress("plain", "n", 9090, 80, "web"))
    world.upsert("m", egress("secure", "n", 9091, 80, "web", spec_extra={"tls": {"secret": "missing"}}))
    build = build_node(world, "n", Addresses(), ServedSecrets(), serve_secrets=True)
    cache.set("n", Snapshot.build(build.resources))
    found = {s.ref.name: s for s in listener_statuses(world, [], cache, streams, build.problems)}
    assert conditions(found["secure"]) == {"Accepted": ("False", "SecretNotFound"),
                                           "Programmed": ("False", "NotAccepted")}
    assert "missing" in found["secure"].condition("Accepted").message
    assert conditions(found["plain"])["Accepted"] == ("True", "Accepted")
