"""The controller's log: one INFO line per rebuild, whatever the number of nodes; a line per node at DEBUG."""

from __future__ import annotations

import logging

import pytest

from envoy_control_plane.controller import Controller
from envoy_control_plane.metrics import Metrics
from envoy_control_plane.state import World
from envoy_control_plane.translate.node import Addresses
from envoy_control_plane.xds.cache import SnapshotCache
from tests.unit.objects import egress, ingress, pod

LOGGER = "envoy_control_plane.controller"


def controller_with_nodes(count: int) -> Controller:
    world = World()
    for i in range(count):
        world.upsert("a", egress(f"out-{i}", f"node-{i}", 9090, 8080, "web"))
    world.upsert("a", ingress("in", "node-0", 8080, 8081, allow="web"))
    controller = Controller(world, SnapshotCache(), Metrics(), Addresses(), debounce=0)
    controller.rebuild()
    return controller


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_a_rebuild_of_many_nodes_is_one_info_line_naming_a_few(caplog):
    controller = controller_with_nodes(8)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        controller.world.upsert("a", pod("p", "web", "10.0.0.1"))
        controller.rebuild()
    [line] = lines(caplog, logging.INFO)
    assert line.startswith("snapshots rebuilt: 8 of 8 nodes changed (EDS 8, LDS 1) in ")
    assert line.endswith(": node-0, node-1, node-2, node-3, node-4 and 3 more")


def test_each_node_rebuilt_has_its_line_at_debug(caplog):
    controller = controller_with_nodes(2)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        controller.world.upsert("a", pod("p", "web", "10.0.0.1"))
        controller.rebuild()
    debug = lines(caplog, logging.DEBUG)
    assert [line.split(":")[0] for line in debug] == ["snapshot for node node-0", "snapshot for node node-1"]
    assert "EDS " in debug[0] and "LDS " in debug[0] and "LDS " not in debug[1]


def test_a_rebuild_that_changes_nothing_logs_nothing(caplog):
    controller = controller_with_nodes(2)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        controller.rebuild(everything=True)
    assert lines(caplog, logging.INFO) == lines(caplog, logging.DEBUG) == []
