"""Markdown tables from `python -m bench.fanout --out FILE` results, as docs/performance.md shows them.

    python -m bench.report results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _pair(stats: dict[str, Any]) -> str:
    return f"{_ms(stats.get('p50'))} / {_ms(stats.get('p99'))}"


def _xds(run: dict[str, Any]) -> str:
    return f"{run['mode']} (Kubernetes)" if "apiserver" in run else run["mode"]


def tables(runs: list[dict[str, Any]]) -> str:
    sim = [r for r in runs if r.get("mode") in ("sotw", "delta") and "error" not in r]
    real = [r for r in runs if r.get("mode") == "real-envoy" and "error" not in r]
    out = []
    if sim:
        out += [
            "| N | P | xDS | startup s | all configured s | pod change: event→last ACK p50 / p99 ms | "
            "write→last ACK p50 / p99 ms | nodes affected (pushed) | messages, KB per change | "
            "messages to unaffected | rollout 10%: messages, MB | rollout event→converged ms (from write) |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sim:
            ch, ro = r["pod_change"], r.get("rollout", {})
            out.append(
                f"| {r['nodes']:,} | {r['pods']:,} | {_xds(r)} | {r['startup']['seconds']:.2f} | "
                f"{r['initial']['seconds']:.2f} | {_pair(ch['event_to_ack_s'])} | {_pair(ch['write_to_ack_s'])} | "
                f"{ch['affected_nodes']['mean']:.1f} ({ch['nodes_pushed']['mean']:.1f}) | "
                f"{ch['messages']['mean']:.1f}, {ch['bytes']['mean'] / 1000:.0f} | {ch['unaffected_messages_total']} | "
                f"{ro.get('messages', '-')}, {ro.get('bytes', 0) / 1e6:.2f} | "
                f"{_ms(ro.get('event_to_ack_s'))} ({_ms(ro.get('write_to_ack_s'))}) |"
            )
        out += [
            "",
            "| N | P | xDS | CP CPU s: startup / initial / per pod change / rollout / total | "
            "RSS MB: after startup / after initial | peak RSS MB (by phase: startup, initial, changes, rollout) | "
            "target MB | peak KB per node / per endpoint | fleet CPU s (initial) |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sim:
            ch, ro, cp = r["pod_change"], r.get("rollout", {}), r["control_plane"]
            phases = cp.get("peak_rss_mb_by_phase", {})
            order = ("startup", "initial", "pod_changes", "rollout")
            by_phase = ", ".join(f"{phases[k]:.0f}" for k in order if k in phases)
            out.append(
                f"| {r['nodes']:,} | {r['pods']:,} | {_xds(r)} | {r['startup']['cpu_s']:.2f} / "
                f"{r['initial']['cpu_s']:.2f} / {ch['cpu_s']['mean']:.3f} / {ro.get('cpu_s', 0):.2f} / "
                f"{cp['cpu_s_total']:.1f} | {r['startup']['rss_mb']:.0f} / {r['initial']['rss_mb']:.0f} | "
                f"**{cp['peak_rss_mb']:.0f}** ({by_phase}) | {cp['memory_target_mb']:.0f} | "
                f"{cp['peak_rss_kb_per_node']:.0f} / {cp['peak_rss_kb_per_endpoint']:.1f} | "
                f"{r['initial']['fleet_cpu_s']:.2f} |"
            )
    kube = [r for r in sim if "apiserver" in r]
    if kube:
        out += [
            "",
            "| N | P | xDS | fake API server CPU s: loading / control plane's lists / status writes / per pod change "
            "p50 / rollout / total | listener status: patches, written within s of all configured | "
            "pod change: API write→event sent p50 ms | rollout: events sent, over ms |",
            "|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in kube:
            api, ch, ro, st = r["apiserver"], r["pod_change"], r.get("rollout", {}), r.get("status")
            status = f"{st['patches']}, {st['seconds_after_initial']:.1f}" if st else "off"
            out.append(
                f"| {r['nodes']:,} | {r['pods']:,} | {_xds(r)} | {api['load_cpu_s']:.2f} / "
                f"{api['cp_startup_cpu_s']:.2f} / {st['apiserver_cpu_s'] if st else 0:.2f} / "
                f"{ch['apiserver_cpu_s'].get('p50', 0):.3f} / {ro.get('apiserver_cpu_s', 0):.2f} / "
                f"{api['cpu_s_total']:.1f} | {status} | "
                f"{_ms(ch['write_to_sent_s'].get('p50'))} | {ro.get('events_sent', '-')}, {_ms(ro.get('sent_span_s'))} |"
            )
    if real:
        out += [
            "",
            "| N | P | xDS | all configured s | pod change: event→last seen p50 / p99 ms | "
            "event→last applied (Envoy update_time) p50 / p99 ms | write→last seen p50 / p99 ms | nodes affected | "
            "unaffected Envoys with any update | rollout 10%: event→last seen / last applied ms |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in real:
            ch, ro = r["pod_change"], r.get("rollout", {})
            out.append(
                f"| {r['nodes']} | {r['pods']} | {r['xds']} (real Envoy) | {r['initial']['seconds']:.2f} | "
                f"{_pair(ch['event_to_seen_s'])} | {_pair(ch.get('event_to_applied_s', {}))} | "
                f"{_pair(ch['write_to_seen_s'])} | {ch['affected_nodes']['mean']:.1f} | "
                f"{ch['unaffected_nodes_with_updates']} | {_ms(ro.get('event_to_seen_s'))} / "
                f"{_ms(ro.get('event_to_applied_s'))} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    runs = [run for path in paths for run in json.loads(Path(path).read_text())["runs"]]
    print(tables(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
