"""memo_latest keeps one result per key (the latest arguments'), so memory follows what is live; host_cidr."""

from __future__ import annotations

from envoy_control_plane.state import World
from envoy_control_plane.translate.common import host_cidr, memo_latest
from envoy_control_plane.translate.endpoints import load_assignment
from envoy_control_plane.translate.listeners import ingress_listener
from tests.unit.objects import ingress, pod


def test_same_arguments_same_object_new_arguments_replace_the_entry() -> None:
    calls: list[tuple[str, int]] = []

    @memo_latest(key=lambda name, _value: name, maxsize=2)
    def build(name: str, value: int) -> list[object]:
        calls.append((name, value))
        return [name, value]

    first = build("a", 1)
    assert build("a", 1) is first and calls == [("a", 1)]
    second = build("a", 2)  # new arguments for the same key: built, and the old result is dropped
    assert second == ["a", 2] and build("a", 2) is second
    assert build("a", 1) is not first  # not kept: rebuilt
    build("b", 1)
    build("c", 1)  # a third key: the least recently changed ("a") goes
    calls.clear()
    build("a", 1)
    assert calls == [("a", 1)]
    build.cache_clear()  # type: ignore[attr-defined]
    build("c", 1)
    assert calls == [("a", 1), ("c", 1)]


def test_translations_are_memoised_per_listener_and_per_assignment() -> None:
    listener = ingress("web", "n", 8080, 8081, allow="x")
    one = ingress_listener(listener, "0.0.0.0", ("10.0.0.1",))
    assert ingress_listener(listener, "0.0.0.0", ("10.0.0.1",)) is one
    two = ingress_listener(listener, "0.0.0.0", ("10.0.0.1", "10.0.0.2"))
    assert two.version != one.version
    assert load_assignment("x", 80, ("10.0.0.1",)) is load_assignment("x", 80, ("10.0.0.1",))


def test_host_cidr() -> None:
    assert host_cidr("10.0.0.1") == ("10.0.0.1", 32)
    assert host_cidr("fd00::1") == ("fd00::1", 128)


def test_world_endpoints_follow_changes() -> None:
    world = World()
    world.upsert("s", pod("p1", "web", "10.0.0.2"))
    assert world.endpoints("web") == ("10.0.0.2",)
    world.upsert("s", pod("p2", "web", "10.0.0.1"))
    assert world.endpoints("web") == ("10.0.0.1", "10.0.0.2")
    world.delete("s", pod("p1", "web", "10.0.0.2").ref)
    assert world.endpoints("web") == ("10.0.0.1",)
    world.delete("s", pod("p2", "web", "10.0.0.1").ref)
    assert world.endpoints("web") == ()
