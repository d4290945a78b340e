"""The manifests parsed in a forked child (at `run`'s start) give what the source's own parse gives, an edit made
after the child read a file is not missed, and a child that fails leaves the parse to the source."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from envoy_control_plane.model import CLUSTER_NAME_ANNOTATION
from envoy_control_plane.sources import manifests
from envoy_control_plane.sources.forked_parse import ForkedParse
from envoy_control_plane.sources.manifests import ManifestSource, read_file
from envoy_control_plane.state import World
from tests.unit.objects import egress_doc, ingress_doc, pod_doc
from tests.unit.sources.test_manifests import write


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))


def test_no_child_without_an_idle_cpu(tmp_path, monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus - 0.5, 0.0, 0.0))
    assert ForkedParse.start([tmp_path], CLUSTER_NAME_ANNOTATION) is None


def _files(root: Path) -> tuple[Path, Path]:
    a, b = root / "a.yaml", root / "b.yaml"
    write(a, pod_doc("p1", "web", "10.0.0.1"), ingress_doc("bad", "n", 70000, 8081, "web"))
    write(b, egress_doc("out", "n", 9090, 80, "web"))
    return a, b


def test_the_child_parses_as_the_source_does(tmp_path):
    a, b = _files(tmp_path)
    forked = ForkedParse.start([tmp_path], CLUSTER_NAME_ANNOTATION)
    assert forked is not None
    parsed = forked.take()
    mine: dict[Path, tuple[bytes, manifests.FileResult]] = {}
    for path in (a, b):
        read_file(path, mine)
    assert parsed == mine
    assert parsed[a][1].errors and parsed[a][1].invalid  # problems come back too


def test_the_first_reload_takes_what_the_child_parsed_and_parses_what_changed_since(tmp_path, monkeypatch):
    a, b = _files(tmp_path)
    forked = ForkedParse.start([tmp_path], CLUSTER_NAME_ANNOTATION)
    assert forked is not None
    parsed = forked.take()
    write(b, egress_doc("out", "n", 9091, 80, "web"))  # edited after the child read it
    here: list[str] = []
    real = manifests.parse_text
    monkeypatch.setattr(manifests, "parse_text", lambda path, text, **kw: here.append(path.name) or real(path, text, **kw))
    world = World()
    source = ManifestSource([tmp_path], world, forked=SimpleNamespace(take=lambda: parsed))  # type: ignore[arg-type]
    asyncio.run(source.reload())
    assert here == ["b.yaml"]
    assert [listener.spec.listenport for listener in world.listeners("n").accepted] == [9091]
    assert world.endpoints("web") == ("10.0.0.1",)
    assert any("IngressListener default/bad: spec.listenport" in p for p in source.status.problems)


def test_a_child_that_fails_leaves_the_parse_to_the_source(tmp_path, monkeypatch, caplog):
    _files(tmp_path)

    def broken(paths: object) -> list[Path]:
        raise OSError("cannot list")

    with monkeypatch.context() as patch:
        patch.setattr(manifests, "manifest_files", broken)  # in the child (a fork) too
        forked = ForkedParse.start([tmp_path], CLUSTER_NAME_ANNOTATION)
    assert forked is not None
    with caplog.at_level(logging.WARNING):
        assert forked.take() == {}
    assert "the forked parse failed (exit status 1)" in caplog.text
    world = World()
    source = ManifestSource([tmp_path], world, forked=SimpleNamespace(take=dict))  # type: ignore[arg-type]
    asyncio.run(source.reload())
    assert world.endpoints("web") == ("10.0.0.1",) and world.nodes() == ["n"]
