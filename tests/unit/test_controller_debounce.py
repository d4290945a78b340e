"""The controller's debounce: a quiet period after the last change of a burst, with a ceiling from its first change.

The event loop's clock is replaced by one the test moves, so that no assertion depends on the machine's speed. Times
are powers of two (debounce 1/64 s, ceiling 1/4 s, changes 1/128 s apart) so that their sums are exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from envoy_control_plane.controller import Controller
from envoy_control_plane.metrics import Metrics
from envoy_control_plane.state import World
from envoy_control_plane.translate.node import Addresses
from envoy_control_plane.xds.cache import SnapshotCache
from tests.unit.objects import egress, pod


Q, MAX, GAP = 1 / 64, 1 / 4, 1 / 128


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        """Move time on, letting the loop run what became due (a few turns, as a timer wakes a task)."""
        self.now += seconds
        for _ in range(5):
            await asyncio.sleep(0)


@pytest.fixture
async def clock() -> AsyncIterator[Clock]:
    loop = asyncio.get_running_loop()
    fake = Clock()
    loop.time = fake  # type: ignore[method-assign]
    yield fake
    del loop.time


@pytest.fixture
async def controller(clock: Clock):
    world = World()
    world.upsert("a", egress("out", "node-0", 9090, 8080, "web"))
    controller = Controller(world, SnapshotCache(), Metrics(), Addresses(), debounce=Q)
    controller.debounce_max = MAX
    controller.rebuild()
    task = asyncio.create_task(controller.run())
    await clock.advance(0)
    yield controller
    task.cancel()


async def change(controller: Controller, i: int) -> None:
    controller.world.upsert("a", pod(f"p{i}", "web", f"10.0.{i // 250}.{i % 250 + 1}"))


async def test_one_change_is_rebuilt_after_exactly_the_quiet_period(controller, clock):
    await change(controller, 0)
    await clock.advance(Q - GAP / 8)
    assert controller.rebuilds == 0
    await clock.advance(GAP / 8)
    assert controller.rebuilds == 1
    assert len(controller.cache.get("node-0").of_type(
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")) == 1


async def test_a_burst_longer_than_the_quiet_period_with_shorter_gaps_is_one_rebuild(controller, clock):
    for i in range(16):  # 16 changes half a quiet period apart: 7.5 quiet periods, never one without a change
        await change(controller, i)
        await clock.advance(GAP)
    assert controller.rebuilds == 0
    await clock.advance(GAP)
    assert controller.rebuilds == 1
    await clock.advance(1)
    assert controller.rebuilds == 1


async def test_a_stream_that_never_goes_quiet_is_rebuilt_by_the_ceiling(controller, clock):
    for i in range(96):  # 3 ceilings' worth of changes, GAP apart
        await change(controller, i)
        await clock.advance(GAP)
        assert controller.rebuilds == (i + 1) // 32  # one each ceiling (32 GAPs), counted from the first change
