"""The side-by-side table (--peer): medians per server and mode, ratios ours / peer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fanout import ROWS, compare, comparison_table

ROOT = Path(__file__).resolve().parents[3]


def _run(server: str, mode: str, p50: float, cpu: float) -> dict:
    return {
        "mode": mode,
        "server": server,
        "pod_change": {"event_to_ack_s": {"p50": p50, "p99": p50 * 2}, "cpu_s": {"p50": 0.01}},
        "control_plane": {"cpu_s_total": cpu, "peak_rss_mb": 100.0},
    }


def test_medians_and_ratios_per_mode() -> None:
    runs = [
        _run("ours", "sotw", 0.040, 8.0),
        _run("peer", "sotw", 0.030, 2.0),
        _run("ours", "sotw", 0.050, 9.0),
        _run("peer", "sotw", 0.034, 2.5),
        _run("ours", "sotw", 0.090, 10.0),
        _run("peer", "sotw", 0.038, 3.0),
        {"mode": "sotw", "server": "ours", "error": "boom"},  # a failed run does not count
        _run("ours", "delta", 0.060, 4.0),
        _run("peer", "delta", 0.030, 2.0),
    ]
    table = compare(runs)
    assert list(table) == ["sotw", "delta"]
    rows = {row["row"]: row for row in table["sotw"]}
    p50 = rows["pod change, event -> last ACK p50"]
    assert (p50["ours"], p50["peer"], p50["ratio"], p50["ours_runs"]) == (50.0, 34.0, 1.47, 3)
    assert rows["control-plane CPU, whole run"]["ratio"] == 3.6
    startup = rows["startup to ready"]  # missing from these runs
    assert startup["ours"] is None and "ratio" not in startup
    assert {row["row"]: row.get("ratio") for row in table["delta"]}["pod change, event -> last ACK p99"] == 2.0
    text = comparison_table(table).splitlines()
    assert text[0] == "| | ours sotw | peer sotw | ratio | ours delta | peer delta | ratio |"
    assert len(text) == 2 + len(ROWS)
    assert text[2].startswith("| pod change, event -> last ACK p50 | 50 ms | 34 ms | 1.47 | 60 ms | 30 ms | 2.0 |")


PEER = Path(__file__).resolve().parents[4] / "shared" / "peers" / "go-control-plane" / "gocp"


@pytest.mark.timeout(120)
@pytest.mark.skipif(not os.access(PEER, os.X_OK), reason="the go-control-plane peer binary is not here")
def test_peer_understands_the_bench() -> None:
    """The peer reads the bench's files and logs the lines it parses: every change converges on it too."""
    command = [sys.executable, "-m", "bench.fanout", "-N", "3", "-P", "20", "--repeats", "1", "--mode", "sotw",
               "--peer", str(PEER)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert [run["server"] for run in doc["runs"]] == ["ours", "peer"]
    peer = doc["runs"][1]
    assert peer["initial"]["control_plane_agrees"] and peer["pod_change"]["converged"] == 1
    assert "event_to_ack_s" in peer["pod_change"]["samples"][0]  # its "Pod ... updated" line was found
    assert peer["rollout"]["ok"] and peer["rollout"]["unaffected_messages"] == 0
    rows = {row["row"]: row for row in doc["comparison"]["sotw"]}
    assert rows["startup to ready"]["peer"] is not None and rows["startup to ready"]["ours"] is not None
