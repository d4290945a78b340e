"""The side-by-side table (--peer): medians per server and mode, ratios ours / peer."""

from __future__ import annotations

from bench.fanout import ROWS, compare, comparison_table


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
