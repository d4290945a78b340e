"""The fan-out benchmark fed through the fake Kubernetes API server (`--source kubernetes`), end to end at a tiny
size: the fake runs as a process of its own, the control plane lists and watches it, every change converges to the
versions the benchmark computed, nothing reaches an unaffected node, and the JSON has the rows docs/performance.md
shows (the fake's CPU apart). No timing is asserted. The listener status writer is off here (its 10 s start-up grace
would be most of the test); the documented runs keep it on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import tables

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(120)


def test_fanout_through_kubernetes() -> None:
    command = [sys.executable, "-m", "bench.fanout", "-N", "5", "-P", "20", "--repeats", "2", "--mode", "sotw",
               "--source", "kubernetes", "--no-status-write"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fake API server (its own process" in done.stderr
    [run] = json.loads(done.stdout)["runs"]
    assert run["source"].startswith("kubernetes") and (run["nodes"], run["pods"]) == (5, 20)
    api = run["apiserver"]
    assert api["objects_loaded"] == 20 + 5 * (4 + 1)
    for key in ("load_cpu_s", "cp_startup_cpu_s", "initial_cpu_s", "cpu_s_total", "peak_rss_mb"):
        assert isinstance(api[key], (int, float)), key
    assert run["initial"]["control_plane_agrees"] and run["initial"]["nacks"] == 0
    change = run["pod_change"]
    assert change["repeats"] == change["converged"] == 2
    for key in ("event_to_ack_s", "write_to_ack_s", "write_to_sent_s", "apiserver_cpu_s", "cpu_s"):
        assert {"p50", "p99"} <= change[key].keys(), key
    assert change["unaffected_messages_total"] == 0 and change["nacks_total"] == 0
    for sample in change["samples"]:
        assert sample["events_sent"] == 2  # DELETED and ADDED of the pod, each written to the watch once
        assert sample["nodes_pushed"] == sample["affected_nodes"] >= 1
    rollout = run["rollout"]
    assert rollout["ok"] and rollout["unaffected_messages"] == 0
    assert rollout["events_sent"] == 2 * rollout["pods_replaced"]
    assert {"event_to_ack_s", "write_to_ack_s", "apiserver_cpu_s", "cpu_s"} <= rollout.keys()
    assert {"cpu_s_total", "peak_rss_mb"} <= run["control_plane"].keys()
    assert run["targets"]["zero_messages_to_unaffected_nodes"]
    table = tables([run])  # docs/performance.md's tables, with the fake's CPU apart
    assert "| 5 | 20 | sotw (Kubernetes) |" in table and "fake API server CPU s" in table and "| off |" in table
