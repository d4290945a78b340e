"""The state file: objects read back equal, writes are whole and only after a change, and a damaged, partial,
foreign or oversized file is logged and ignored, never a crash."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import yaml

from envoy_control_plane import statefile
from envoy_control_plane.model import ObjectError, Pod, parse_object
from envoy_control_plane.state import World
from envoy_control_plane.statefile import FILE_NAME, StateKeeper, encode, read_state
from tests.unit.objects import egress_doc, ingress_doc, pod_doc

OBJECTS = [
    pod_doc("ready", "web", "10.0.0.1"),
    pod_doc("not-ready", "web", "10.0.0.2", ready=False),
    pod_doc("terminating", "web", "fd00::1", terminating=True),
    pod_doc("no-ip", "web", None),
    pod_doc("no-cluster", None, "10.0.0.3"),
    ingress_doc("in", "node-a", 8080, 8081, "web", creationTimestamp="2026-01-01T00:00:00Z", generation=3),
    ingress_doc("open", "node-a", 8082, 8083),
    egress_doc("out", "node-b", 9090, 80, "web"),
    {**egress_doc("checked", "node-b", 9091, 80, "web"), "spec": {
        "nodename": "node-b", "listenport": 9091, "targetport": 80, "targetcluster": "web",
        "healthcheck": {"type": "http", "path": "/healthz", "interval": "1m30s", "timeout": "250ms",
                        "expectedStatuses": [200, 204]},
        "outlierDetection": {"consecutiveErrors": 3, "baseEjectionTime": "1.5s"},
    }},
    {**ingress_doc("mtls", "node-a", 8443, 8081), "spec": {
        "nodename": "node-a", "listenport": 8443, "targetport": 8081, "layer": "http",
        "rbac": {"cluster": "web", "sans": ["spiffe://example/web"]}, "tls": {"secret": "cert", "validation": "ca"},
    }},
]


def test_pods_have_the_fields_encode_writes() -> None:
    # encode() writes these; a new Pod field must be written too (pods are not checked one by one when saved).
    assert [f.name for f in dataclasses.fields(Pod)] == ["ref", "cluster_name", "ip", "ready", "terminating"]


def example_objects() -> list:
    """Every object of the repository's example manifests (new spec fields show up there first)."""
    root = Path(__file__).resolve().parents[2]
    files = [*root.glob("examples/**/*.yaml"), *root.glob("manifests/examples/*.yaml")]
    objects = []
    for path in sorted(files):
        for doc in yaml.safe_load_all(path.read_text()):
            try:
                obj = parse_object(doc)
            except ObjectError:
                continue
            if obj is not None:
                objects.append(obj)
    return objects


@pytest.mark.parametrize("obj", [parse_object(doc) for doc in OBJECTS] + example_objects(), ids=lambda o: str(o.ref))
def test_every_object_reads_back_equal(obj) -> None:
    assert parse_object(encode(obj)) == obj


async def keeper_with(tmp_path, *docs, origin=None):
    world = World()
    for doc in docs:
        world.upsert("manifests" if "spec" in doc else "cluster-a", parse_object(doc))
    keeper = StateKeeper(tmp_path, world, origin or (lambda source, ref: None))
    keeper.prepare()
    return world, keeper


async def test_the_worlds_objects_come_back_by_source_with_their_origin(tmp_path) -> None:
    def origin(source, ref):
        return f"/m/{ref.name}.yaml" if source == "manifests" else None

    world, keeper = await keeper_with(tmp_path, *OBJECTS, origin=origin)
    await keeper.save()
    state = read_state(tmp_path / FILE_NAME)
    assert sorted(state) == ["cluster-a", "manifests"]
    restored = {(name, item.parse(), item.origin) for name, items in state.items() for item in items}
    expected = {(source, obj, origin(source, ref)) for (source, ref), obj in world.objects().items()}
    assert restored == expected
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left behind


async def test_written_only_after_a_change(tmp_path, monkeypatch) -> None:
    world, keeper = await keeper_with(tmp_path, *OBJECTS)
    writes = []
    real = statefile.write_atomically
    monkeypatch.setattr(statefile, "write_atomically", lambda path, data: writes.append(data) or real(path, data))
    await keeper.save()
    await keeper.save()
    assert len(writes) == 1
    world.delete("cluster-a", parse_object(OBJECTS[0]).ref)
    await keeper.save()
    assert len(writes) == 2 and b'"ready"' not in writes[1]


async def test_a_listener_that_would_not_read_back_equal_is_not_kept(tmp_path, monkeypatch, caplog) -> None:
    listeners = ingress_doc("in", "n", 8080, 8081), egress_doc("out", "n", 9090, 80, "w")
    world, keeper = await keeper_with(tmp_path, *listeners)
    real = statefile.encode

    def forgetful(obj):  # as if the model had grown a field encode() does not write
        return {**real(obj), "spec": {**real(obj)["spec"], "listenport": 1}} if obj.ref.name == "in" else real(obj)

    monkeypatch.setattr(statefile, "encode", forgetful)
    await keeper.save()
    names = [item.name for items in read_state(tmp_path / FILE_NAME).values() for item in items]
    assert names == ["EgressListener default/out"]
    assert "IngressListener default/in is not kept" in caplog.text


async def test_a_world_over_the_limit_is_not_written_and_the_old_file_goes(tmp_path, monkeypatch, caplog) -> None:
    world, keeper = await keeper_with(tmp_path, *OBJECTS)
    await keeper.save()
    monkeypatch.setattr(statefile, "MAX_BYTES", 100)
    world.delete("cluster-a", parse_object(OBJECTS[0]).ref)
    await keeper.save()
    assert not (tmp_path / FILE_NAME).exists()
    assert "not written" in caplog.text and "over the limit" in caplog.text


GOOD = json.dumps({"format": 1, "sources": {"c": [{"object": encode(parse_object(OBJECTS[0]))}]}})


@pytest.mark.parametrize(
    "content, says",
    [
        (GOOD[: len(GOOD) // 2].encode(), "JSONDecodeError"),  # a partial write (not ours: ours are atomic)
        (b"\x00\xff\xfe garbage", "UnicodeDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
        (json.dumps({"format": 99, "sources": {}}).encode(), "format 1, found 99"),
        (json.dumps(["not", "a", "mapping"]).encode(), "found 'list'"),
        (json.dumps({"format": 1, "sources": {"c": {"object": 1}}}).encode(), "not a list"),
    ],
    ids=["partial", "binary", "nested", "format", "list", "shape"],
)
def test_a_damaged_file_is_logged_and_ignored(tmp_path, caplog, content, says) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR):
        assert read_state(path) == {}
    assert f"state file {path} ignored" in caplog.text and says in caplog.text


def test_an_oversized_file_is_not_even_read(tmp_path, monkeypatch, caplog) -> None:
    path = tmp_path / FILE_NAME
    path.write_text(GOOD)
    monkeypatch.setattr(statefile, "MAX_BYTES", 10)
    assert read_state(path) == {}
    assert "over the limit" in caplog.text


def test_damaged_entries_are_skipped_and_the_rest_restored(tmp_path, caplog) -> None:
    good = encode(parse_object(OBJECTS[0]))
    bad_ip = {**good, "metadata": {"name": "bad", "namespace": "default"}, "status": {"podIP": "300.1.1.1"}}
    entries = [{"object": good}, {"object": bad_ip}, {"object": 5}, "x", {"object": good, "origin": 7}]
    path = tmp_path / FILE_NAME
    path.write_text(json.dumps({"format": 1, "sources": {"c": entries}}))
    state = read_state(path)
    assert [item.name for item in state["c"]] == ["Pod default/ready", "Pod default/bad"]
    assert [item.parse() for item in state["c"]] == [parse_object(OBJECTS[0]), None]
    assert "3 damaged entries skipped" in caplog.text and "Pod default/bad not restored" in caplog.text


def test_no_file_is_no_problem(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        assert read_state(tmp_path / FILE_NAME) == {}
    assert "no state file" in caplog.text
