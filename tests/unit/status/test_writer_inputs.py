"""The status writer computes the statuses only when something they depend on changed, and then writes each change:
the World, the snapshots, the xDS streams' ACKs and NACKs, the sources' invalid objects, the lease and the re-list."""

from __future__ import annotations

from envoy_control_plane.config import ClusterConfig, StatusConfig
from envoy_control_plane.controller import Controller
from envoy_control_plane.metrics import Metrics
from envoy_control_plane.model import ObjectRef
from envoy_control_plane.sources.status import InvalidObject, SourceStatus
from envoy_control_plane.state import World
from envoy_control_plane.status.conditions import inputs_version, listener_statuses
from envoy_control_plane.status.writer import StatusWriter
from envoy_control_plane.translate.node import Addresses
from envoy_control_plane.xds.cache import SnapshotCache
from envoy_control_plane.xds.streams import StreamRegistry, TypeStatus
from envoy_control_plane.xds.types import LISTENER
from tests.unit.objects import egress, pod
from tests.unit.status.test_writer import StubClient

REF = ObjectRef("EgressListener", "default", "out")


class Recorder(StubClient):
    def __init__(self) -> None:
        super().__init__()
        self.patches: list[dict] = []

    async def patch(self, path: str, patch: dict, *, timeout: float) -> dict:
        self.patches.append(patch["status"])
        return await super().patch(path, patch, timeout=timeout)


class Plane:
    """The parts of the app the statuses come from, wired as the app wires them."""

    def __init__(self) -> None:
        self.world = World()
        self.cache = SnapshotCache()
        self.streams = StreamRegistry()
        self.source = SourceStatus("aws", "kubernetes")
        self.controller = Controller(self.world, self.cache, Metrics(), Addresses(), debounce=0)
        self.world.upsert("aws", egress("out", "n", 9090, 8080, "web"))
        self.writer = StatusWriter(
            [ClusterConfig(name="aws")],
            lambda: listener_statuses(self.world, [self.source], self.cache, self.streams,
                                      self.controller.listener_problems()),
            StatusConfig(), "me", Metrics(), "default",
            inputs=lambda: inputs_version(self.controller.world_changes, [self.source], self.cache,
                                          self.controller.listener_problems()),
        )
        self.client = self.writer._clients["aws"] = Recorder()  # type: ignore[assignment]

    async def written(self) -> dict | None:
        """What one round patched (None: nothing), after checking that a second round computes nothing."""
        self.client.patches.clear()
        await self.writer.write_once()
        rounds = self.writer.rounds
        await self.writer.write_once()
        assert self.writer.rounds == rounds  # nothing changed since: the statuses are not computed again
        [patch] = self.client.patches or [None]
        return patch


def condition(patch: dict, type_: str) -> tuple[str, str]:
    found = next(c for c in patch["conditions"] if c["type"] == type_)
    return found["status"], found["reason"]


async def test_each_input_of_the_statuses_is_noticed_and_nothing_else_recomputes_them():
    plane = Plane()
    first = await plane.written()
    assert first is not None and first["endpoints"] == 0 and condition(first, "Programmed") == ("Unknown", "NoEnvoy")
    assert plane.writer.rounds == 1
    for _ in range(3):
        await plane.writer.write_once()
    assert plane.writer.rounds == 1  # idle rounds compute nothing

    plane.world.upsert("aws", pod("p", "web", "10.0.0.1"))  # the World (no rebuild yet)
    assert (await plane.written())["endpoints"] == 1

    info = plane.streams.open("sotw", "ipv4:127.0.0.1:1")  # an Envoy of the node connects: the streams
    info.node = "n"
    assert condition(await plane.written(), "Programmed") == ("Unknown", "Pending")

    plane.controller.rebuild()  # the snapshots: the listener is sent
    name, resource = next(iter(plane.cache.get("n").of_type(LISTENER).items()))
    assert (await plane.written())["conditions"][1]["message"].startswith("sent to node n")

    lds = info.types[LISTENER] = TypeStatus()
    lds.acked_resources = {name: resource.version}  # ACK
    assert condition(await plane.written(), "Programmed") == ("True", "Programmed")

    lds.acked_resources = {}
    lds.rejected_resources = {name: resource.version}  # NACK
    lds.last_nack = "listener out: bad"
    assert condition(await plane.written(), "Programmed") == ("False", "Rejected")

    plane.streams.close(info)  # the Envoy goes
    assert condition(await plane.written(), "Programmed") == ("Unknown", "NoEnvoy")

    plane.source.invalid = {REF: InvalidObject(REF, "spec.listenport: not a port")}  # the source's invalid objects
    assert condition(await plane.written(), "Accepted") == ("False", "InvalidSpec")

    rounds = plane.writer.rounds
    plane.writer._leadership(True)  # a new lease term re-reads and rewrites
    await plane.written()
    assert plane.writer.rounds == rounds + 1

    plane.writer._listed["aws"] -= plane.writer.config.resync_s  # the re-list is due: it repairs hand edits
    await plane.written()
    assert plane.writer.rounds == rounds + 2


async def test_without_inputs_every_round_computes_the_statuses():
    plane = Plane()
    plane.writer._inputs = None
    await plane.writer.write_once()
    await plane.writer.write_once()
    assert plane.writer.rounds == 2
