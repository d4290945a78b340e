"""In-process measurements of issue 11's two Kubernetes-fed findings, old rule beside new on the current code:

- `burst`: 2,000 pod changes (a 10% rollout) applied to a 1,000-node World in 100 chunks of 20, the loop yielding
  ~1 ms between chunks as the reflector does between reads of a watch stream; prints the controller's rebuilds with
  the old rule (a ceiling equal to the debounce: rebuild `debounce_ms` after the first change) and the new one.
- `idle`: CPU of the status writer's rounds at 5,000 listeners when nothing changed, computing every round (as
  before) and with the inputs check (as the app runs it).

    python -m bench.burst_and_idle burst|idle
"""

from __future__ import annotations

import asyncio
import sys
import time

from envoy_control_plane.config import ClusterConfig, StatusConfig
from envoy_control_plane.controller import Controller
from envoy_control_plane.metrics import Metrics
from envoy_control_plane.sources.status import SourceStatus
from envoy_control_plane.state import World
from envoy_control_plane.status.conditions import inputs_version, listener_statuses
from envoy_control_plane.status.writer import StatusWriter
from envoy_control_plane.translate.node import Addresses
from envoy_control_plane.xds.cache import SnapshotCache
from envoy_control_plane.xds.streams import StreamRegistry
from tests.unit.objects import egress, pod
from tests.unit.status.test_writer import StubClient

NODES, PER_NODE, PODS, SERVICES = 1000, 5, 20000, 1000
DEBOUNCE = 0.02


def world() -> World:
    w = World()
    for n in range(NODES):
        for k in range(PER_NODE):
            w.upsert("aws", egress(f"l-{n}-{k}", f"node-{n}", 9000 + k, 8080, f"svc-{(n * PER_NODE + k) % SERVICES}"))
    for i in range(PODS):
        w.upsert("aws", pod(f"p{i}", f"svc-{i % SERVICES}", f"10.{i // 65536}.{(i // 256) % 256}.{i % 256 or 1}"))
    return w


async def burst(ceiling: float) -> str:
    w = world()
    controller = Controller(w, SnapshotCache(), Metrics(), Addresses(), debounce=DEBOUNCE, debounce_max=ceiling)
    controller.rebuild(everything=True)
    task = asyncio.create_task(controller.run())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    for chunk in range(100):
        for j in range(20):
            i = chunk * 20 + j
            w.upsert("aws", pod(f"p{i * 10}", f"svc-{(i * 10) % SERVICES}", f"10.200.{i // 250}.{i % 250 + 1}"))
        await asyncio.sleep(0.0007)
    applied = time.perf_counter() - started
    await asyncio.sleep(10 * DEBOUNCE + 0.5)
    task.cancel()
    nodes = controller.metrics.snapshot_nodes._value.get()
    return (f"ceiling {ceiling * 1000:.0f} ms: 2000 changes applied in {applied * 1000:.0f} ms -> "
            f"{controller.rebuilds} rebuild(s), {nodes:.0f} node rebuilds")


async def idle() -> list[str]:
    w = world()
    cache, streams, source = SnapshotCache(), StreamRegistry(), SourceStatus("aws", "kubernetes")
    controller = Controller(w, cache, Metrics(), Addresses(), debounce=0)
    controller.rebuild(everything=True)
    for n in range(NODES):
        streams.open("sotw", "bench").node = f"node-{n}"

    def statuses():  # type: ignore[no-untyped-def]
        return listener_statuses(w, [source], cache, streams, controller.listener_problems())

    def inputs() -> object:
        return inputs_version(controller.world_changes, [source], cache, controller.listener_problems())

    lines = []
    for label, check in (("every round computes (before)", None), ("with the inputs check (now)", inputs)):
        writer = StatusWriter([ClusterConfig(name="aws")], statuses, StatusConfig(), "bench", Metrics(), "default",
                              inputs=check)
        writer._clients["aws"] = StubClient()  # type: ignore[assignment]
        await writer.write_once()  # the first round writes every status
        cpu = time.process_time()
        for _ in range(20):
            await writer.write_once()
        lines.append(f"{NODES * PER_NODE} listeners, idle round, {label}: "
                     f"{(time.process_time() - cpu) / 20 * 1000:.2f} ms CPU")
    return lines


def main() -> None:
    if sys.argv[1:] == ["burst"]:
        for ceiling in (DEBOUNCE, 10 * DEBOUNCE):
            print(asyncio.run(burst(ceiling)))
    elif sys.argv[1:] == ["idle"]:
        print("\n".join(asyncio.run(idle())))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
