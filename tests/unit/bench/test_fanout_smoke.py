"""The fan-out benchmark end to end at a tiny size: it runs, and its JSON has every field docs/performance.md uses.

No timing is asserted (the machine may be busy); what must hold at any speed is: every change converged, the control
plane agrees with what the fleet ACKed, and no message reached a node the change did not touch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(180)


def test_fanout_smoke() -> None:
    command = [sys.executable, "-m", "bench.fanout", "-N", "5", "-P", "20", "--repeats", "2", "--mode", "sotw,delta"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert {"nproc", "cpu", "python"} <= doc["machine"].keys()
    assert [run["mode"] for run in doc["runs"]] == ["sotw", "delta"]
    for run in doc["runs"]:
        assert (run["nodes"], run["pods"]) == (5, 20)
        assert {"seconds", "cpu_s", "rss_mb"} <= run["startup"].keys()
        initial = run["initial"]
        assert {"seconds", "p50_node_s", "messages", "bytes", "cpu_s", "fleet_cpu_s"} <= initial.keys()
        assert initial["control_plane_agrees"] and initial["nacks"] == 0
        assert initial["nodes_connected_per_control_plane"] == 5
        change = run["pod_change"]
        assert change["repeats"] == change["converged"] == 2
        for key in ("event_to_ack_s", "write_to_ack_s", "write_to_watch_s", "watch_to_event_s"):
            assert {"p50", "p99", "max"} <= change[key].keys(), key
        assert change["affected_nodes"]["min"] >= 1
        assert change["unaffected_messages_total"] == 0 and change["nacks_total"] == 0
        for sample in change["samples"]:
            assert sample["nodes_pushed"] == sample["affected_nodes"]
            assert {"messages", "bytes", "cpu_s", "cp_responses", "cp_resource_bytes"} <= sample.keys()
        rollout = run["rollout"]
        assert rollout["ok"] and rollout["unaffected_messages"] == 0
        assert {"pods_replaced", "messages", "bytes", "write_to_ack_s", "event_to_ack_s", "cpu_s"} <= rollout.keys()
        plane = run["control_plane"]
        for key in ("cpu_s_total", "peak_rss_mb", "peak_rss_kb_per_node", "peak_rss_kb_per_endpoint",
                    "initial_cpu_ms_per_node", "startup_cpu_ms_per_endpoint", "memory_target_mb"):  # fmt: skip
            assert isinstance(plane[key], (int, float)), key
        assert set(run["targets"]) == {
            "initial_under_10s",
            "pod_change_event_to_ack_p99_under_250ms",
            "pod_change_write_to_ack_p99_under_250ms",
            "zero_messages_to_unaffected_nodes",
            "memory_under_50mb_plus_50kb_per_node",
        }
