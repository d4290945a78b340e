"""The manifest source's watch batches: per-file re-reads and diffs, vanished files kept for a grace, ConfigMap
`..data` swaps applied at once. Driven without a watcher: `apply_changes` gets the paths watchfiles would report."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from envoy_control_plane.model import ObjectRef, parse_object
from envoy_control_plane.sources.manifests import ManifestSource
from envoy_control_plane.state import World
from tests.e2e.harness.manifests import configmap_update
from tests.unit.objects import egress_doc, ingress_doc, pod_doc


class RecordingWorld(World):
    """A World that records what a source asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def upsert(self, source, obj):
        self.calls.append(("upsert", obj.ref.name))
        super().upsert(source, obj)

    def delete(self, source, ref):
        self.calls.append(("delete", ref.name))
        super().delete(source, ref)

    def replace(self, source, objects, kinds=None):
        self.calls.append(("replace", source))
        super().replace(source, objects, kinds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, *docs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(yaml.safe_dump_all(docs))
    os.replace(staged, path)
    return path


def source_over(directory: Path, grace: float = 1.0) -> tuple[ManifestSource, RecordingWorld, Clock]:
    world, clock = RecordingWorld(), Clock()
    source = ManifestSource([directory], world, delete_grace=grace, clock=clock)
    source.load()
    world.calls.clear()
    return source, world, clock


def test_editing_one_file_among_many_touches_only_its_changed_objects(tmp_path, monkeypatch):
    from envoy_control_plane.sources import manifests

    for i in range(20):
        pods = pod_doc(f"p{i}a", "web", f"10.0.{i}.1"), pod_doc(f"p{i}b", "web", f"10.0.{i}.2")
        write(tmp_path / f"pods-{i}.yaml", *pods)
    source, world, _ = source_over(tmp_path)
    read: list[str] = []
    real = manifests.read_file
    monkeypatch.setattr(manifests, "read_file", lambda path, cache=None, **kw: read.append(path.name) or real(path, cache, **kw))

    edited = write(tmp_path / "pods-7.yaml", pod_doc("p7a", "web", "10.0.7.1"), pod_doc("p7b", "web", "10.0.7.9"))
    source.apply_changes([edited])

    assert read == ["pods-7.yaml"]
    assert world.calls == [("upsert", "p7b")]  # no replace; p7a and the other files' pods not even looked at
    assert "10.0.7.9" in world.endpoints("web") and "10.0.7.2" not in world.endpoints("web")
    assert len(world.endpoints("web")) == 40


def test_an_object_removed_from_a_file_is_deleted_at_once(tmp_path):
    write(tmp_path / "a.yaml", pod_doc("p1", "web", "10.0.0.1"), pod_doc("p2", "web", "10.0.0.2"))
    source, world, _ = source_over(tmp_path)
    source.apply_changes([write(tmp_path / "a.yaml", pod_doc("p2", "web", "10.0.0.2"))])
    assert world.calls == [("delete", "p1")]
    assert world.endpoints("web") == ("10.0.0.2",)


def test_a_file_that_vanishes_is_deleted_only_after_the_grace(tmp_path):
    write(tmp_path / "a.yaml", pod_doc("p1", "web", "10.0.0.1"))
    write(tmp_path / "b.yaml", egress_doc("out", "n", 9090, 80, "web"))
    source, world, clock = source_over(tmp_path, grace=1.0)
    (tmp_path / "a.yaml").unlink()
    source.apply_changes([tmp_path / "a.yaml"])
    assert world.endpoints("web") == ("10.0.0.1",) and world.calls == []
    assert source.status.detail["vanishing"] == [str(tmp_path / "a.yaml")]
    clock.now += 0.5
    source.expire_vanished()
    assert world.calls == []
    clock.now += 0.6
    source.expire_vanished()
    assert world.calls == [("delete", "p1")] and world.endpoints("web") == ()
    assert source.status.detail["vanishing"] == []


def test_a_directory_emptied_briefly_changes_nothing(tmp_path):
    directory = tmp_path / "m"
    for name in ("a", "b", "c"):
        write(directory / f"{name}.yaml", pod_doc(name, "web", f"10.0.0.{ord(name)}"))
    write(directory / "sub" / "l.yaml", egress_doc("out", "n", 9090, 80, "web"))
    source, world, clock = source_over(directory)
    aside = tmp_path / "aside"
    os.rename(directory, aside)
    directory.mkdir()
    source.apply_changes([directory / "a.yaml", directory / "b.yaml", directory / "c.yaml", directory / "sub"])
    assert world.calls == [] and len(source.status.detail["vanishing"]) == 4
    clock.now += 0.05
    os.rmdir(directory)
    os.rename(aside, directory)
    source.apply_changes([directory / "a.yaml", directory / "b.yaml", directory / "c.yaml", directory / "sub"])
    clock.now += 5
    source.expire_vanished()
    assert world.calls == []
    assert len(world.endpoints("web")) == 3 and world.nodes() == ["n"]
    assert source.status.detail["vanishing"] == []


def test_an_emptied_file_counts_as_vanished(tmp_path):
    path = write(tmp_path / "a.yaml", pod_doc("p1", "web", "10.0.0.1"))
    source, world, clock = source_over(tmp_path)
    path.write_text("")
    source.apply_changes([path])
    assert world.calls == []
    write(path, pod_doc("p1", "web", "10.0.0.1"))
    source.apply_changes([path])
    clock.now += 5
    source.expire_vanished()
    assert world.calls == []  # back as it was: nothing to tell the World
    assert world.endpoints("web") == ("10.0.0.1",)


def test_a_renamed_file_hands_its_objects_over_without_a_removal(tmp_path):
    write(tmp_path / "a.yaml", egress_doc("out", "n", 9090, 80, "web"))
    source, world, clock = source_over(tmp_path)
    os.rename(tmp_path / "a.yaml", tmp_path / "b.yaml")
    source.apply_changes([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    clock.now += 5
    source.expire_vanished()
    assert ("delete", "out") not in world.calls and world.nodes() == ["n"]
    assert source.origin(ObjectRef("EgressListener", "default", "out")) == str(tmp_path / "b.yaml")
    assert source.status.problems == []


def test_a_configmap_swap_applies_at_once_removed_keys_included(tmp_path):
    directory = tmp_path / "cm"
    a, b = yaml.safe_dump(pod_doc("a", "web", "10.0.0.1")), yaml.safe_dump(pod_doc("b", "web", "10.0.0.2"))
    configmap_update(directory, "..v1", {"a.yaml": a, "b.yaml": b})
    source, world, _ = source_over(directory, grace=60)
    assert world.endpoints("web") == ("10.0.0.1", "10.0.0.2")  # each key once, not again from `..v1`

    configmap_update(directory, "..v2", {"a.yaml": yaml.safe_dump(pod_doc("a", "web", "10.0.0.3"))})
    source.apply_changes([directory / "..data", directory / "..v2" / "a.yaml", directory / "b.yaml"])

    assert world.endpoints("web") == ("10.0.0.3",)
    assert source.status.detail["vanishing"] == [] and source.status.problems == []


def test_hidden_files_are_not_manifests(tmp_path):
    write(tmp_path / "a.yaml", pod_doc("a", "web", "10.0.0.1"))
    source, world, _ = source_over(tmp_path)
    swap = write(tmp_path / ".a.yaml", pod_doc("a", "web", "10.9.9.9"))
    git = write(tmp_path / ".git" / "x.yaml", pod_doc("x", "web", "10.9.9.8"))
    source.apply_changes([swap, git])
    source.load()
    assert world.endpoints("web") == ("10.0.0.1",)


def test_a_change_outside_the_named_paths_reads_everything_again(tmp_path):
    named = write(tmp_path / "named.yaml", pod_doc("a", "web", "10.0.0.1"))
    source, world, _ = source_over(named)
    write(named, pod_doc("a", "web", "10.0.0.2"))
    source.apply_changes([tmp_path / "elsewhere"])
    assert ("replace", "manifests") in world.calls and world.endpoints("web") == ("10.0.0.2",)


def test_the_first_load_keeps_saved_versions_of_objects_invalid_now_and_of_files_that_do_not_parse(tmp_path):
    from envoy_control_plane.statefile import Saved, encode

    good_in = parse_object(ingress_doc("in", "n", 8080, 8081))
    good_pod = parse_object(pod_doc("p1", "web", "10.0.0.1"))
    gone = parse_object(pod_doc("gone", "web", "10.0.0.9"))
    write(tmp_path / "l.yaml", ingress_doc("in", "n", 70000, 8081), egress_doc("out", "n", 9090, 80, "web"))
    (tmp_path / "p.yaml").write_text("kind: Pod\n  bad: [indent\n")
    saved = [Saved(str(o.ref), encode(o), str(tmp_path / f)) for o, f in ((good_in, "l.yaml"), (good_pod, "p.yaml"))]
    saved.append(Saved(str(gone.ref), encode(gone), str(tmp_path / "l.yaml")))
    world = World()
    source = ManifestSource([tmp_path], world)
    source.seed(saved)
    source.load()
    assert sorted(listener.spec.listenport for listener in world.listeners("n").accepted) == [8080, 9090]
    assert world.endpoints("web") == ("10.0.0.1",)
    assert len(source.status.problems) == 2
