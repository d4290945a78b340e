"""Hostile and broken manifests through the manifest source and `validate`: every bad document is reported with the
file and the object (and field), nothing raises, nothing grows without bound, and the good objects still arrive."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoy_control_plane.model import CLUSTER_NAME_ANNOTATION
from envoy_control_plane.sources import manifests
from envoy_control_plane.sources.manifests import ManifestSource, validate
from envoy_control_plane.state import World
from tests.unit.objects import egress_doc, ingress_doc, pod_doc

pytestmark = pytest.mark.timeout(30)


def write(path: Path, *docs: Any) -> None:
    path.write_text(yaml.safe_dump_all(docs))


def loaded(directory: Path) -> tuple[World, ManifestSource]:
    world = World()
    source = ManifestSource([directory], world)
    source.load()
    return world, source


def bomb(levels: int, width: int = 9) -> str:
    """A YAML mapping whose last key expands to width**levels strings through nested aliases."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


def with_value(doc: dict, dotted: str, value: Any) -> dict:
    """A copy of `doc` with the field at the dotted path set to value (its parents made as needed)."""
    doc = copy.deepcopy(doc)
    *parents, last = dotted.split(".")
    target = doc
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    return doc


GOOD_POD = pod_doc("good", "web", "10.0.0.9")


# ---- item 3: YAML alias bombs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["status.podIP", "spec.listenport"])
def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path: Path, field: str) -> None:
    section, key = field.split(".")
    head = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bomb}\n" if section == "status"
        else "apiVersion: ingresslistener.envoy.uw.systems/v1alpha1\nkind: IngressListener\nmetadata: {name: bomb}\n"
    )
    text = f"{head}x:\n" + "\n".join("  " + line for line in bomb(9).splitlines()) + f"\n{section}: {{{key}: *a8}}\n"
    assert len(text) < 1000  # 9**9 = 387 million strings when expanded
    (tmp_path / "bomb.yaml").write_text(text)
    write(tmp_path / "good.yaml", GOOD_POD)
    world, source = loaded(tmp_path)
    assert world.endpoints("web") == ("10.0.0.9",)
    [problem] = source.status.problems
    assert problem.startswith(f"{tmp_path / 'bomb.yaml'}: document 1: aliases expand it by more than")
    found = validate([tmp_path])
    count, problems = found.count, found.problems
    assert count == 1 and problems == [problem]


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: &s {podIP: [*s]}\n")
    problems = validate([tmp_path]).problems
    assert problems == [f"{tmp_path / 'loop.yaml'}: document 1: an alias refers to a node that contains it "
                        "(a recursive document)"]


def test_values_quoted_in_problems_are_bounded(tmp_path: Path) -> None:
    """An expansion under the limit (59,049 strings) or a long string is still quoted in a few hundred characters."""
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wide}\nx:\n"
        + "\n".join("  " + line for line in bomb(5, 8).splitlines())
        + "\nstatus: {podIP: *a4}\n---\n"
        + yaml.safe_dump(pod_doc("long", "web", "x" * 1_000_000))
        + "---\n"
        + yaml.safe_dump(ingress_doc("in", "n", "8" * 100_000, 80))
    )
    (tmp_path / "wide.yaml").write_text(text)
    problems = validate([tmp_path]).problems
    assert len(problems) == 3, problems
    assert "Pod default/wide: status.podIP" in problems[0]
    assert "Pod default/long: status.podIP" in problems[1]
    assert "IngressListener default/in: spec.listenport" in problems[2]
    assert all(len(p) < 600 for p in problems), [len(p) for p in problems]


def test_anchors_within_the_limit_still_work(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: Pod, metadata: &meta {name: p, annotations: {cluster-name.envoy.uw.io: web}},\n"
        "   status: &status {podIP: 10.0.0.1}}\n"
        "- {apiVersion: v1, kind: Pod, metadata: {<<: *meta, name: q}, status: {<<: *status, podIP: 10.0.0.2}}\n"
    )
    world, source = loaded(tmp_path)
    assert world.endpoints("web") == ("10.0.0.1", "10.0.0.2") and source.status.problems == []


# ---- item 4: badly typed documents and encodings ------------------------------------------------------------------

BAD_DOCUMENTS = {
    "annotations-a-list": (with_value(pod_doc("p", "web", "10.0.0.1"), "metadata.annotations", ["x"]),
                           "Pod default/p: metadata.annotations: must be a mapping"),
    "status-a-string": (with_value(pod_doc("p", "web", "10.0.0.1"), "status", "x"),
                        "Pod default/p: status: must be a mapping"),
    "conditions-a-number": (with_value(pod_doc("p", "web", "10.0.0.1"), "status.conditions", 5),
                            "Pod default/p: status.conditions: must be a list"),
    "condition-a-string": (with_value(pod_doc("p", "web", "10.0.0.1"), "status.conditions", ["Ready"]),
                           "Pod default/p: status.conditions[0]: must be a mapping"),
    "ready-a-boolean": (with_value(pod_doc("p", "web", "10.0.0.1"), "status.conditions", [{"type": "Ready",
                                                                                          "status": True}]),
                        "Pod default/p: status.conditions[0].status: must be a string"),
    "cluster-name-a-list": (with_value(pod_doc("p", "web", "10.0.0.1"), "metadata.annotations",
                                       {CLUSTER_NAME_ANNOTATION: ["web"]}),
                            f"Pod default/p: metadata.annotations.{CLUSTER_NAME_ANNOTATION}: must be a string"),
    "pod-ip-a-number": (with_value(pod_doc("p", "web", None), "status.podIP", 2130706433),
                        "Pod default/p: status.podIP: must be a string, got 2130706433"),
    "name-a-number": (with_value(pod_doc("p", "web", "10.0.0.1"), "metadata.name", 5),
                      "document 1: Pod (unnamed): metadata.name: not a DNS subdomain name: 5"),
    "name-with-a-newline": (with_value(pod_doc("p", "web", "10.0.0.1"), "metadata.name", "a\nb"),
                            "document 1: Pod (unnamed): metadata.name: not a DNS subdomain name: 'a\\nb'"),
    "namespace-a-list": (with_value(pod_doc("p", "web", "10.0.0.1"), "metadata.namespace", ["x"]),
                         "document 1: Pod p: metadata.namespace: not a DNS label: ['x']"),
    "metadata-a-string": (with_value(pod_doc("p", "web", "10.0.0.1"), "metadata", "p"),
                          "document 1: Pod (unnamed): metadata: must be a mapping"),
    "spec-a-list": (with_value(egress_doc("e", "n", 9000, 80, "web"), "spec", [1]),
                    "EgressListener default/e: spec: must be a mapping"),
    "nodename-a-number": (with_value(egress_doc("e", "n", 9000, 80, "web"), "spec.nodename", 7),
                          "EgressListener default/e: spec.nodename: Input should be a valid string"),
    "created-not-a-time": (with_value(egress_doc("e", "n", 9000, 80, "web"), "metadata.creationTimestamp", [1]),
                           "EgressListener default/e: metadata.creationTimestamp: not an RFC 3339 time"),
    "a-document-that-is-a-string": ("hello", "document 1: document: expected a mapping, got str"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS), ids=list(BAD_DOCUMENTS))
def test_a_badly_typed_document_is_a_problem_naming_the_file_and_object(tmp_path: Path, case: str) -> None:
    doc, message = BAD_DOCUMENTS[case]
    write(tmp_path / "bad.yaml", doc)
    write(tmp_path / "good.yaml", GOOD_POD, egress_doc("out", "n", 9000, 80, "web"))
    world, source = loaded(tmp_path)
    assert world.endpoints("web") == ("10.0.0.9",) and world.nodes() == ["n"]
    assert source.status.problems == [f"{tmp_path / 'bad.yaml'}: {message}"] or (
        len(source.status.problems) == 1 and source.status.problems[0].startswith(f"{tmp_path / 'bad.yaml'}: {message}")
    ), source.status.problems
    found = validate([tmp_path])
    count, problems = found.count, found.problems
    assert count == 2 and problems == source.status.problems


@pytest.mark.parametrize(
    ("value", "field"),
    [("8_0", "listenport"), (True, "listenport"), (8080.0, "listenport"), ("80", "targetport"), (None, "targetport")],
)
def test_ports_are_integers_and_nothing_else(tmp_path: Path, value: Any, field: str) -> None:
    write(tmp_path / "l.yaml", with_value(ingress_doc("in", "n", 8080, 8081), f"spec.{field}", value))
    world, source = loaded(tmp_path)
    assert world.nodes() == []
    [problem] = source.status.problems
    assert f"IngressListener default/in: spec.{field}: Input should be a valid integer" in problem, problem


def test_an_object_whose_name_breaks_keeps_the_files_earlier_objects(tmp_path: Path) -> None:
    """Which object a nameless document was cannot be told: what its file gave before stays, the rest updates."""
    path = tmp_path / "p.yaml"
    write(path, pod_doc("a", "web", "10.0.0.1"), pod_doc("b", "web", "10.0.0.2"))
    world, source = loaded(tmp_path)
    write(path, with_value(pod_doc("a", "web", "10.0.0.1"), "metadata.name", ["a"]), pod_doc("b", "web", "10.0.0.3"))
    source.load()
    assert world.endpoints("web") == ("10.0.0.1", "10.0.0.3")
    assert "document 1: Pod (unnamed): metadata.name" in source.status.problems[0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_text_with_a_byte_order_mark_is_read(tmp_path: Path, encoding: str) -> None:
    """PowerShell's `kubectl get -o yaml > x.yaml` writes UTF-16 LE with a BOM."""
    text = "\r\n".join(yaml.safe_dump(GOOD_POD).splitlines())
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    (tmp_path / "p.yaml").write_bytes(data)
    world, source = loaded(tmp_path)
    assert world.endpoints("web") == ("10.0.0.9",) and source.status.problems == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe", "not text: invalid start byte at byte 9"),
        ("kind: Pod\nmetadata: {name: caf\u00e9}\n".encode("latin-1"), "not text"),
        (b"a: \x00\x01", "not valid YAML"),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, creationTimestamp: 2026-13-45T00:00:00Z}\n", "cannot parse"),
    ],
    ids=["binary", "latin-1", "control-characters", "impossible-timestamp"],
)
def test_a_file_that_is_not_yaml_text_is_reported(tmp_path: Path, data: bytes, message: str) -> None:
    (tmp_path / "bad.yaml").write_bytes(data)
    write(tmp_path / "good.yaml", GOOD_POD)
    world, source = loaded(tmp_path)
    assert world.endpoints("web") == ("10.0.0.9",)
    [problem] = source.status.problems
    assert problem.startswith(f"{tmp_path / 'bad.yaml'}: {message}"), problem
    found = validate([tmp_path])
    assert (found.count, found.problems) == (1, [problem])


def test_a_fifo_named_as_a_manifest_is_reported_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")  # reading it would block until a writer comes
    write(tmp_path / "good.yaml", GOOD_POD)
    assert validate([tmp_path]).problems == [] and validate([tmp_path]).count == 1  # below a directory, only regular files are manifests
    found = validate([tmp_path / "pipe.yaml"])
    assert (found.count, found.problems) == (0, [f"{tmp_path / 'pipe.yaml'}: not a regular file"])


# ---- the watch never dies silently ---------------------------------------------------------------------------------

async def eventually(check, what: str) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never happened: {what}")


async def test_bad_files_written_while_watching_are_reported_and_later_edits_still_apply(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", pod_doc("a", "web", "10.0.0.1"))
    world = World()
    source = ManifestSource([tmp_path], world)
    await source.reload()
    task = asyncio.create_task(source.watch())
    try:
        (tmp_path / "utf16.yaml").write_bytes(yaml.safe_dump(pod_doc("u", "web", "10.0.0.5")).encode("utf-16"))
        (tmp_path / "binary.yaml").write_bytes(b"\x00\xff\xfe\x00garbage")
        write(tmp_path / "typed.yaml", BAD_DOCUMENTS["annotations-a-list"][0], BAD_DOCUMENTS["status-a-string"][0])
        await eventually(lambda: len(source.status.problems) == 3 and "10.0.0.5" in world.endpoints("web"),
                         "the bad files to be reported and the UTF-16 one read")
        write(tmp_path / "good.yaml", pod_doc("a", "web", "10.0.0.2"))
        await eventually(lambda: world.endpoints("web") == ("10.0.0.2", "10.0.0.5"), "a later edit to apply")
        assert not task.done() and source.status.up
    finally:
        task.cancel()


async def test_a_failing_watch_is_logged_marked_down_and_restarted(tmp_path: Path, monkeypatch, caplog) -> None:
    write(tmp_path / "p.yaml", pod_doc("a", "web", "10.0.0.1"))
    world = World()
    source = ManifestSource([tmp_path], world)
    await source.reload()
    real, failures = manifests.read_file, []

    def failing_once(path: Path, cache: Any = None, **kw: Any) -> manifests.FileResult:
        if not failures:
            failures.append(path)
            raise RuntimeError("disk on fire")
        return real(path, cache, **kw)

    task = asyncio.create_task(source.watch())
    try:
        await eventually(lambda: source.status.last_error is None and source.status.up, "the watcher in place")
        monkeypatch.setattr(manifests, "read_file", failing_once)
        write(tmp_path / "p.yaml", pod_doc("a", "web", "10.0.0.2"))
        await eventually(lambda: not source.status.up, "the source to be marked down")
        assert "RuntimeError: disk on fire" in (source.status.last_error or "")
        assert any("the watch failed" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
        await eventually(lambda: source.status.up and world.endpoints("web") == ("10.0.0.2",), "the watch to restart")
        write(tmp_path / "p.yaml", pod_doc("a", "web", "10.0.0.3"))
        await eventually(lambda: world.endpoints("web") == ("10.0.0.3",), "later edits to apply")
        assert source.status.last_error is None and not task.done()
    finally:
        task.cancel()


async def test_files_are_parsed_off_the_event_loop(tmp_path: Path, monkeypatch) -> None:
    """A huge file takes seconds to parse; the loop (xDS, admin) must keep running meanwhile."""
    write(tmp_path / "p.yaml", pod_doc("a", "web", "10.0.0.1"))
    release, parsing = threading.Event(), threading.Event()
    real = manifests.parse_text

    def slow(path: Path, text: str, **kw: Any) -> manifests.FileResult:
        parsing.set()
        release.wait(5)
        return real(path, text, **kw)

    monkeypatch.setattr(manifests, "parse_text", slow)
    world = World()
    reload = asyncio.create_task(ManifestSource([tmp_path], world).reload())
    ticks = 0
    while not parsing.is_set() or ticks < 10:  # the loop keeps turning while the parse is stuck
        await asyncio.sleep(0.005)
        ticks += 1
    assert not release.is_set() and not reload.done()
    release.set()
    await reload
    assert world.endpoints("web") == ("10.0.0.1",)


# ---- item 11: port ownership without creationTimestamp -------------------------------------------------------------

@pytest.mark.parametrize("names", [("a.yaml", "b.yaml"), ("b.yaml", "a.yaml")])
def test_port_ownership_without_timestamps_is_by_namespace_and_name_not_file_order(tmp_path: Path, names) -> None:
    write(tmp_path / names[0], egress_doc("zeta", "n", 9000, 80, "web"))
    write(tmp_path / names[1], egress_doc("alpha", "n", 9000, 81, "web"))
    world, _ = loaded(tmp_path)
    [accepted] = world.listeners("n").accepted
    assert accepted.ref.name == "alpha"
    [rejected] = world.listeners("n").rejected
    assert "EgressListener default/zeta" in rejected.message and "port 9000" in rejected.message


def test_a_yaml_timestamp_and_its_text_order_alike(tmp_path: Path) -> None:
    """An unquoted creationTimestamp is a datetime to YAML: it must sort with the text form of other objects."""
    (tmp_path / "l.yaml").write_text(
        yaml.safe_dump(egress_doc("earlier", "n", 9000, 80, "web", creationTimestamp="2026-01-01T09:30:00Z"))
        + "---\n"
        + yaml.safe_dump(egress_doc("later", "n", 9000, 81, "web")).replace(
            "namespace: default", "namespace: default\n  creationTimestamp: 2026-01-01 10:00:00+00:00"
        )
    )
    world, source = loaded(tmp_path)
    assert source.status.problems == []
    assert [listener.ref.name for listener in world.listeners("n").accepted] == ["earlier"]
