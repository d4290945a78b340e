"""The fan-out benchmark (issue #4): how fast the control plane configures a fleet and pushes a pod change through it.

    python -m bench.fanout                                   # N=100, P=1,000, SotW then delta: a few minutes
    python -m bench.fanout --nodes 1000 --pods 10000 --mode sotw
    python -m bench.fanout --real-envoys --nodes 20 --pods 200   # 20 real Envoys instead of the simulated fleet
    python -m bench.fanout --source kubernetes                   # fed through the fake API server (bench/kube.py)

Each run generates manifests in a temporary directory (P pods over C Envoy clusters, one file per cluster; N nodes
with E EgressListeners and I IngressListeners each, see bench/topology.py), starts `envoy-control-plane run --config X`
as a separate process on loopback (free xDS and admin ports) and `python -m bench.simfleet` (N simulated Envoys in
one process) as another, and measures:

- startup: control plane spawn to /readyz (manifests parsed, every node's snapshot built), its CPU and RSS;
- initial: fleet start to the last node ACKing its complete config (exactly the CDS, EDS and LDS versions the
  benchmark computed with the project's own translation code), messages and bytes;
- pod change (--repeats times): one pod of a used cluster gets a new IP; its cluster's manifest file is rewritten
  (atomically, by rename). Measured from the write, and from the moment the event reached the control plane (its
  log line for the pod; the file-watch and re-read time before that is reported apart), to the last affected node
  ACKing the new version of every type that changed for it; the nodes and bytes pushed; and every message any
  other node received (must be zero);
- rollout: --rollout of the pods replaced (new names and IPs) in one write; pushes, bytes, time to converge;
- the control plane's CPU seconds and peak RSS (/proc/<pid>/stat, VmHWM), per node and per endpoint; the fleet's
  CPU (when it nears the wall time, the client, not the server, is the bottleneck).

It prints one JSON document on stdout (a human summary goes to stderr). Nothing is tuned for the numbers: the
control plane runs with its defaults (INFO logging, debounce 20 ms) unless a flag says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from . import procs
from .procs import Clock, LogLine, LogTail
from .runners import ControlPlane, Fleet, PeerControlPlane
from .topology import Expected, Pod, Topology

Json = dict[str, Any]


# ---- small statistics ----------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (with 20 values, p99 is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float], digits: int = 4) -> Json:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "p50": round(percentile(values, 0.5), digits),  # type: ignore[arg-type]
        "p99": round(percentile(values, 0.99), digits),  # type: ignore[arg-type]
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    """The increase of every sample of a metric (all label sets summed)."""
    keys = {k for k in after if k == name or k.startswith(name + "{")}
    return sum(after.get(k, 0.0) - before.get(k, 0.0) for k in keys)


def machine() -> Json:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# ---- the control plane's log ---------------------------------------------------------------------------------------


def log_times(lines: list[LogLine], after: float, pod_names: set[str] | None = None) -> Json:
    """What the control plane's log says about one change: when the file watch fired, when the world got the event
    (the first pod event, or the first of pod_names), when snapshots were rebuilt, and how many pushes it logged."""
    out: Json = {}
    for line in lines:
        if line.t < after - 0.001:
            continue
        if line.logger.endswith("sources.manifests") and line.message.startswith("manifests changed"):
            out.setdefault("detected", line.t)
        elif line.logger.endswith("sources.manifests") and line.message.startswith("manifests: "):
            out.setdefault("reloaded", line.t)
        elif line.logger.endswith(".state") and line.message.startswith("Pod "):
            name = line.message.split(" ", 2)[1].split("/", 1)[-1]
            if pod_names is None or name in pod_names:
                out.setdefault("event", line.t)
            out["last_event"] = line.t
        elif line.logger.endswith(".controller") and line.message.startswith(("snapshot for node", "snapshots rebuilt")):
            # ours: one "snapshots rebuilt" line per rebuild (the per-node lines are at DEBUG); the peer: per node
            out.setdefault("first_snapshot", line.t)
            out["last_snapshot"] = line.t
        elif ": sent " in line.message:
            out["pushes_logged"] = out.get("pushes_logged", 0) + 1
    return out


# ---- one run with the simulated fleet --------------------------------------------------------------------------------


class Run:
    phases: tuple[str, ...] = ("startup", "initial", "pod_changes", "rollout")

    def __init__(self, args: argparse.Namespace, mode: str, workdir: Path, peer: Path | None = None) -> None:
        self.args = args
        self.mode = mode
        self.peer = peer
        self.workdir = workdir
        self.topology = Topology(args.nodes, args.pods, args.clusters, args.egress, args.ingress, seed=args.seed)
        self.manifests = workdir / "manifests"
        self.scratch = workdir / "scratch"
        self.scratch.mkdir()
        self.expected = Expected(self.topology)
        self.clock = Clock()
        self.cp: ControlPlane = self.control_plane()
        self.log = LogTail(self.cp.log_path, self.clock)
        self.profiler: subprocess.Popen[bytes] | None = None
        self.phase = "startup"
        self.peak_rss: dict[str, float] = {}
        extra = ["--node-profile", args.node_profile, "--per-channel", str(args.per_channel)]
        if not args.node_every_request:
            extra.append("--node-first-only")
        self.fleet = Fleet(workdir, self.cp.xds, args.nodes, mode, extra)
        self.result: Json = {
            "mode": mode,
            "server": "peer" if peer else "ours",
            "nodes": args.nodes,
            "pods": args.pods,
            "clusters": args.clusters,
            "egress_per_node": args.egress,
            "ingress_per_node": args.ingress,
            "endpoints": sum(len(self.expected.world.endpoints(c)) for c in self.expected.world.cluster_names()),
            "debounce_ms": args.debounce_ms,
            "node_profile": args.node_profile + ("" if args.node_every_request else ", node on first request only"),
            "source": "files",
        }

    def control_plane(self) -> ControlPlane:
        """The server under test, with what it reads put in place (here: the manifests)."""
        self.topology.write(self.manifests)
        if self.peer:
            return PeerControlPlane(self.workdir, self.manifests, self.peer, self.args.debounce_ms)
        return ControlPlane(self.workdir, self.manifests, self.args.debounce_ms)

    async def write(self, clusters: set[str], removed: list[Pod], added: list[Pod]) -> float:
        """Make a pod change where the control plane reads it (the clusters' pod files); its time.monotonic()."""
        return self.topology.rewrite_pod_files(self.manifests, clusters, self.scratch)

    async def change_times(self, lines: list[LogLine], written: float, pods: list[str]) -> Json:
        """When the change reached the control plane (`event`) and what it logged for it (see log_times)."""
        return log_times(lines, written, set(pods))

    async def _agreement(self, patience: float = 5.0) -> tuple[Json, list[str]]:
        """/debug/nodes and its disagreements with what the fleet ACKed. The fleet counts an ACK once sent, the control
        plane once read: on a loaded machine the last ACKs may still be in flight, so look again for a while."""
        deadline = time.monotonic() + patience
        while True:
            nodes = await self.cp.get_json("/debug/nodes")
            problems = [
                f"{node} {kind}: sent {t['sent_version']} acked {t['acked_version']} nacks {t['nacks']}"
                for node, entry in nodes.items()
                for stream in entry["streams"]
                for kind, t in stream["types"].items()
                if t["sent_version"] != t["acked_version"] or t["nacks"]
            ]
            if not problems or time.monotonic() > deadline:
                return nodes, problems
            await asyncio.sleep(0.1)

    async def _sample_memory(self) -> None:
        """The control plane's RSS every 50 ms: the largest seen in each phase (VmHWM only says the overall peak)."""
        while True:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                rss = self.cp.usage().rss_mb
                self.peak_rss[self.phase] = max(self.peak_rss.get(self.phase, 0.0), rss)
            await asyncio.sleep(0.05)

    async def execute(self) -> Json:
        sampler = asyncio.create_task(self._sample_memory())
        try:
            for phase in self.phases:
                self.phase = phase
                await getattr(self, phase)()
            self.totals()
        finally:
            sampler.cancel()
            status = await self.fleet.stop()
            if self.profiler is not None:
                self.profiler.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                await asyncio.to_thread(self.profiler.wait, 30)
            await self.cp.stop()
            if status:
                self.result["fleet_final"] = {k: status[k] for k in ("connected", "streams", "messages", "nacks")}
        return self.result

    async def startup(self) -> None:
        self.cp.start()
        if self.args.py_spy and not self.peer:
            output = str(self.args.py_spy.with_suffix(f".{self.mode}.txt"))
            self.profiler = procs.spawn(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(self.cp.pid), "--rate", "250",
                 "--format", "raw", "--output", output, "--nonblocking"],
                self.workdir / "py-spy.log",
            )  # fmt: skip
        seconds = await self.cp.wait_ready(self.args.timeout)
        self.u_start = usage = self.cp.usage()
        self.result["startup"] = {
            "seconds": round(seconds, 3),
            "cpu_s": round(usage.cpu, 3),
            "rss_mb": round(usage.rss_mb, 1),
            "note": "spawn to /readyz: imports, parsing every manifest, building every node's snapshot",
        }
        self.log.skip()

    async def initial(self) -> None:
        args = self.args
        await self.fleet.start()
        ready = self.fleet.ready["now"]
        fleet_before = self.fleet.usage()
        versions = self.expected.versions
        if isinstance(self.cp, PeerControlPlane):
            versions = await self.cp.served_versions(versions)
        reply = await self.fleet.call("wait", versions=versions, timeout=args.timeout)
        if not reply["ok"]:
            raise RuntimeError(f"initial config: {reply}")
        self.u_initial = usage = self.cp.usage()
        fleet_after = self.fleet.usage()
        status = await self.fleet.call("status")
        nodes, problems = await self._agreement()
        self.result["initial"] = {
            "seconds": round(reply["last"] - ready, 3),
            "p50_node_s": round(reply["p50"] - ready, 3),
            "messages": status["messages"],
            "bytes": status["bytes"],
            "nacks": status["nacks"],
            "nodes_connected_per_control_plane": len(nodes),
            "control_plane_agrees": not problems,
            "disagreements": problems[:5],
            "cpu_s": round(usage.cpu - self.u_start.cpu, 3),
            "fleet_cpu_s": round(fleet_after.cpu - fleet_before.cpu, 3),
            "rss_mb": round(usage.rss_mb, 1),
        }

    async def _change(
        self, pods: list[str], clusters: set[str], timeout: float, removed: list[Pod], added: list[Pod]
    ) -> Json:
        """Write the change (removed and added pods: of the clusters) and measure until every node whose config
        changed has ACKed it."""
        changed = self.expected.update()
        if self.peer and any("cds" in types for types in changed.values()):
            # The peer's CDS versions are its own (see PeerControlPlane): wait for the other types only.
            changed = {n: {t: v for t, v in types.items() if t != "cds"} for n, types in changed.items()}
            changed = {n: types for n, types in changed.items() if types}
        mark = (await self.fleet.call("mark", forget=True))["mark"]
        metrics_before = await self.cp.metrics()
        self.log.read()
        cpu_before, fleet_before = self.cp.usage(), self.fleet.usage()
        written = await self.write(clusters, removed, added)
        reply = await self.fleet.call("wait", versions=changed, timeout=timeout)
        await asyncio.sleep(self.args.settle)  # let anything late (to anyone) arrive before counting
        arrivals = (await self.fleet.call("arrivals", since=mark))["arrivals"]
        cpu_after, fleet_after = self.cp.usage(), self.fleet.usage()
        metrics_after = await self.cp.metrics()
        lines = self.log.read()
        times = await self.change_times(lines, written, pods)
        by_node: dict[str, list[Json]] = defaultdict(list)
        for arrival in arrivals:
            by_node[arrival["node"]].append(arrival)
        affected = set(changed)
        out: Json = {
            "ok": reply["ok"],
            "affected_nodes": len(affected),
            "changed_types": dict(Counter(t for types in changed.values() for t in types)),
            "nodes_pushed": len(by_node),
            "messages": len(arrivals),
            "bytes": sum(a["bytes"] for a in arrivals),
            "messages_by_type": dict(Counter(a["type"] for a in arrivals)),
            "unaffected_messages": sum(len(v) for node, v in by_node.items() if node not in affected),
            "nacks": sum(a["nacked"] for a in arrivals),
            "cp_responses": metric_delta(metrics_before, metrics_after, "envoy_cp_xds_responses_total"),
            "cp_resource_bytes": metric_delta(metrics_before, metrics_after, "envoy_cp_xds_response_bytes_total"),
            "cp_nodes_rebuilt": metric_delta(metrics_before, metrics_after, "envoy_cp_snapshot_nodes_rebuilt_total"),
            "cp_build_s": metric_delta(metrics_before, metrics_after, "envoy_cp_snapshot_build_seconds_sum"),
            "cpu_s": cpu_after.cpu - cpu_before.cpu,
            "fleet_cpu_s": fleet_after.cpu - fleet_before.cpu,
        }
        if not reply["ok"]:
            out["error"] = {k: reply.get(k) for k in ("error", "pending", "pending_count")}
            return out
        last = reply["last"]
        out["write_to_ack_s"] = last - written
        out["node_p50_from_write_s"] = reply["p50"] - written
        if "detected" in times:
            out["write_to_watch_s"] = times["detected"] - written
        if "event" in times:
            out["event_to_ack_s"] = last - times["event"]
            out["event_to_node_p50_s"] = reply["p50"] - times["event"]
            if "detected" in times:
                out["watch_to_event_s"] = times["event"] - times["detected"]
            if "last_snapshot" in times:
                out["event_to_snapshots_s"] = times["last_snapshot"] - times["event"]
            if "last_event" in times:
                out["events_span_s"] = times["last_event"] - times["event"]
        return out

    async def pod_changes(self) -> None:
        samples = []
        for _ in range(self.args.repeats):
            await asyncio.sleep(self.args.gap)
            pod = self.topology.change_one_pod()
            samples.append(await self._change([pod.name], {pod.cluster}, self.args.timeout, [pod], [pod]))
        ok = [s for s in samples if s["ok"]]

        def values(key: str) -> list[float]:
            return [s[key] for s in ok if key in s]

        self.result["pod_change"] = {
            "repeats": len(samples),
            "converged": len(ok),
            "event_to_ack_s": summary(values("event_to_ack_s")),
            "write_to_ack_s": summary(values("write_to_ack_s")),
            "write_to_watch_s": summary(values("write_to_watch_s")),
            "watch_to_event_s": summary(values("watch_to_event_s")),
            "event_to_snapshots_s": summary(values("event_to_snapshots_s")),
            "event_to_node_p50_s": summary(values("event_to_node_p50_s")),
            "affected_nodes": summary([s["affected_nodes"] for s in samples], 1),
            "nodes_pushed": summary([s["nodes_pushed"] for s in samples], 1),
            "messages": summary([s["messages"] for s in samples], 1),
            "bytes": summary([s["bytes"] for s in samples], 1),
            "unaffected_messages_total": sum(s["unaffected_messages"] for s in samples),
            "nacks_total": sum(s["nacks"] for s in samples),
            "cpu_s": summary([s["cpu_s"] for s in samples]),
            "fleet_cpu_s": summary([s["fleet_cpu_s"] for s in samples]),
            "samples": [_rounded(s) for s in samples],
        }

    async def rollout(self) -> None:
        if self.args.rollout <= 0:
            return
        before = {p.name for p in self.topology.pod_list}
        replaced = self.topology.rollout(self.args.rollout)
        clusters = {p.cluster for p in replaced}
        new = {p.name for p in self.topology.pod_list if p.cluster in clusters} - {p.name for p in replaced}
        added = [p for p in self.topology.pod_list if p.name not in before]
        sample = await self._change(sorted(new), clusters, max(self.args.timeout, 120), replaced, added)
        sample["pods_replaced"] = len(replaced)
        sample["files_rewritten"] = len(clusters)
        self.result["rollout"] = _rounded(sample)

    def totals(self) -> None:
        usage = self.cp.usage()
        n, endpoints = self.args.nodes, self.result["endpoints"]
        target_mb = 50 + 0.05 * n
        self.result["control_plane"] = {
            "cpu_s_total": round(usage.cpu, 3),
            "peak_rss_mb": round(usage.hwm_mb, 1),
            "peak_rss_mb_by_phase": {k: round(v, 1) for k, v in self.peak_rss.items()},  # sampled every 50 ms
            "rss_mb": round(usage.rss_mb, 1),
            "peak_rss_kb_per_node": round(usage.hwm_mb * 1024 / n, 1),
            "peak_rss_kb_per_endpoint": round(usage.hwm_mb * 1024 / max(1, endpoints), 2),
            "memory_target_mb": round(target_mb, 1),
            "initial_cpu_ms_per_node": round(self.result["initial"]["cpu_s"] * 1000 / n, 3),
            "startup_cpu_ms_per_endpoint": round(self.result["startup"]["cpu_s"] * 1000 / max(1, endpoints), 3),
        }
        change = self.result["pod_change"]
        self.result["targets"] = {
            "initial_under_10s": self.result["initial"]["seconds"] < 10,
            "pod_change_event_to_ack_p99_under_250ms": (change["event_to_ack_s"].get("p99") or 1e9) < 0.25,
            "pod_change_write_to_ack_p99_under_250ms": (change["write_to_ack_s"].get("p99") or 1e9) < 0.25,
            "zero_messages_to_unaffected_nodes": change["unaffected_messages_total"] == 0
            and self.result.get("rollout", {}).get("unaffected_messages", 0) == 0,
            "memory_under_50mb_plus_50kb_per_node": usage.hwm_mb < target_mb,
        }


def _rounded(sample: Json) -> Json:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in sample.items()}


async def run_simulated(args: argparse.Namespace, mode: str, peer: Path | None = None) -> Json:
    with tempfile.TemporaryDirectory(prefix=f"fanout-{mode}-{'peer-' if peer else ''}") as tmp:
        if args.source == "kubernetes" and not peer:  # the peer reads files only: it runs the file-fed bench
            from .kube import KubeRun

            run: Run = KubeRun(args, mode, Path(tmp))
        else:
            run = Run(args, mode, Path(tmp), peer)
        try:
            return await run.execute()
        except BaseException:
            if args.keep_logs:
                _keep(Path(tmp), args.keep_logs)
            raise
        finally:
            if args.keep_logs:
                _keep(Path(tmp), args.keep_logs)


def _keep(workdir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        (dest / f"{workdir.name}-{log.name}").write_bytes(log.read_bytes())


# ---- output ----------------------------------------------------------------------------------------------------


def human(result: Json) -> str:
    if "error" in result:
        return f"{result.get('mode')}: FAILED: {result['error']}"
    if result.get("mode") == "real-envoy":
        from .realenvoy import human as real_human

        return real_human(result)
    ch, ro, cp = result["pod_change"], result.get("rollout", {}), result["control_plane"]
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
    lines = [
        f"{result['mode']} ({result.get('server', 'ours')}, {result.get('source', 'files')}): N={result['nodes']} P={result['pods']} C={result['clusters']} "
        f"E={result['egress_per_node']} I={result['ingress_per_node']}",
        f"  startup {result['startup']['seconds']:.2f} s; all nodes configured in {result['initial']['seconds']:.2f} s "
        f"({result['initial']['messages']} messages, {result['initial']['bytes'] / 1e6:.1f} MB)",
        f"  pod change ({ch['converged']}/{ch['repeats']}): event->last ACK p50 {ms(ch['event_to_ack_s'].get('p50'))} "
        f"p99 {ms(ch['event_to_ack_s'].get('p99'))}; write->last ACK p50 {ms(ch['write_to_ack_s'].get('p50'))} "
        f"p99 {ms(ch['write_to_ack_s'].get('p99'))} "
        + (f"(API write->event sent p50 {ms(ch['write_to_sent_s'].get('p50'))}, event sent->control plane's log "
           f"p50 {ms(ch['sent_to_cp_event_s'].get('p50'))})" if "write_to_sent_s" in ch else
           f"(watch p50 {ms(ch['write_to_watch_s'].get('p50'))}, re-read p50 {ms(ch['watch_to_event_s'].get('p50'))})"),
        f"    {ch['affected_nodes'].get('mean')} nodes affected, {ch['nodes_pushed'].get('mean')} pushed, "
        f"{ch['bytes'].get('mean')} bytes; messages to unaffected nodes: {ch['unaffected_messages_total']}",
    ]
    if ro:
        lines.append(
            f"  rollout {ro['pods_replaced']} pods: {ro.get('affected_nodes')} nodes, {ro['messages']} messages, "
            f"{ro['bytes'] / 1e6:.2f} MB, event->converged {ms(ro.get('event_to_ack_s'))}, "
            f"write->converged {ms(ro.get('write_to_ack_s'))}; unaffected messages {ro['unaffected_messages']}"
        )
    if "apiserver" in result:
        api, st = result["apiserver"], result.get("status")
        lines.append(
            f"  fake API server (its own process, not counted above or below): {api.get('cpu_s_total', 0):.1f} CPU s "
            f"(loading {api['objects_loaded']} objects {api['load_cpu_s']:.1f}, control plane's lists "
            f"{api['cp_startup_cpu_s']:.1f}, per pod change p50 {ms(ch['apiserver_cpu_s'].get('p50'))})"
            + (f"; listener status written in {st['seconds_after_initial']:.1f} s after the initial config "
               f"({st['patches']} patches)" if st else "")
        )
    lines.append(
        f"  control plane: {cp['cpu_s_total']:.1f} CPU s, peak RSS {cp['peak_rss_mb']:.0f} MB "
        f"(target {cp['memory_target_mb']:.0f} MB); targets: "
        + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in result["targets"].items())
    )
    return "\n".join(lines)


# ---- side by side with a peer (--peer) ----------------------------------------------------------------------------

# The rows of issue #11's table: (label, unit, path into a run's result; a "/"-joined key path).
ROWS: list[tuple[str, str, str]] = [
    ("pod change, event -> last ACK p50", "ms", "pod_change/event_to_ack_s/p50"),
    ("pod change, event -> last ACK p99", "ms", "pod_change/event_to_ack_s/p99"),
    ("pod change, file write -> last ACK p50", "ms", "pod_change/write_to_ack_s/p50"),
    ("rollout, event -> converged", "ms", "rollout/event_to_ack_s"),
    ("all nodes configured", "s", "initial/seconds"),
    ("control-plane CPU, whole run", "s", "control_plane/cpu_s_total"),
    ("control-plane CPU per pod change p50", "ms", "pod_change/cpu_s/p50"),
    ("startup to ready", "s", "startup/seconds"),
    ("peak RSS", "MB", "control_plane/peak_rss_mb"),
]


def _lookup(result: Json, path: str) -> float | None:
    value: Any = result
    for key in path.split("/"):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def compare(runs: list[Json]) -> Json:
    """Per mode, each row's median over the runs of ours and of the peer, and ours/peer."""
    out: Json = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rows = []
        for label, unit, path in ROWS:
            cell: Json = {"row": label, "unit": unit}
            for server in ("ours", "peer"):
                values = [v for r in runs if r["mode"] == mode and r.get("server") == server and "error" not in r
                          for v in [_lookup(r, path)] if v is not None]  # fmt: skip
                scale, digits = (1000, 1) if unit == "ms" else (1, 1) if unit == "MB" else (1, 3)
                cell[server] = round(statistics.median(values) * scale, digits) if values else None
                cell[f"{server}_runs"] = len(values)
            if cell["ours"] is not None and cell["peer"]:
                cell["ratio"] = round(cell["ours"] / cell["peer"], 2)
            rows.append(cell)
        out[mode] = rows
    return out


def comparison_table(comparison: Json, source: str = "files") -> str:
    """The comparison as Markdown; with source "kubernetes", the columns and the write row say what each read."""
    modes = list(comparison)
    ours, peer = ("ours (Kubernetes)", "peer (files)") if source == "kubernetes" else ("ours", "peer")
    head = "| |" + "".join(f" {ours} {m} | {peer} {m} | ratio |" for m in modes)
    lines = [head, "|---|" + "---|---|---|" * len(modes)]
    for i, (label, unit, _) in enumerate(ROWS):
        cells = []
        for m in modes:
            row = comparison[m][i]
            fmt = lambda v: "-" if v is None else f"{v:g} {unit}"  # noqa: E731
            cells.append(f" {fmt(row['ours'])} | {fmt(row['peer'])} | {row.get('ratio', '-')} |")
        if source == "kubernetes" and "file write" in label:
            label = label.replace("file write", "write (ours: API request; peer: file)")
        lines.append(f"| {label} |" + "".join(cells))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", "-N", type=int, default=100, help="nodes (simulated Envoys)")
    parser.add_argument("--pods", "-P", type=int, default=1000, help="pods (endpoints)")
    parser.add_argument("--clusters", "-C", type=int, help="Envoy clusters the pods spread over (max(10, P/50))")
    parser.add_argument("--egress", "-E", type=int, default=4, help="EgressListeners per node")
    parser.add_argument("--ingress", "-I", type=int, default=1, help="IngressListeners (rbacallowcluster) per node")
    parser.add_argument("--mode", default="sotw,delta", help="sotw, delta or both comma-separated")
    parser.add_argument("--repeats", type=int, default=20, help="single pod changes to time")
    parser.add_argument("--rollout", type=float, default=0.1, help="fraction of pods replaced at once (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--debounce-ms", type=int, help="xds.debounce_ms (default: the control plane's, 20)")
    parser.add_argument("--node-profile", choices=("envoy", "minimal"), default="envoy",
                        help="the node the clients send: envoy (60 KB, like Envoy 1.40) or minimal")
    parser.add_argument("--node-every-request", action="store_true",
                        help="send the node on every request (Envoy without set_node_on_first_message_only; our "
                             "bootstrap sets it, so by default only the first request of a stream carries it)")
    parser.add_argument("--per-channel", type=int, default=100, help="simulated streams per gRPC connection")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds to wait after convergence before counting")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between pod changes")
    parser.add_argument("--timeout", type=float, default=120, help="seconds any one phase may take")
    parser.add_argument("--real-envoys", action="store_true", help="run real Envoys (.venv/bin/envoy), not simfleet")
    parser.add_argument("--poll-ms", type=float, default=25,
                        help="with --real-envoys: admin API poll interval (faster polling loads the 2 cores)")
    parser.add_argument("--peer", type=Path, metavar="BINARY",
                        help="also run this xDS server (e.g. ../shared/peers/go-control-plane/gocp) on the same "
                             "topology and fleet, alternating with ours, and print both columns and the ratios")
    parser.add_argument("--source", choices=("files", "kubernetes"), default="files",
                        help="what our control plane reads: manifest files, or the fake Kubernetes API server "
                             "(tests/fakekube, a process of its own: list at start, then watch events; its CPU is "
                             "reported apart). A --peer always reads files")
    parser.add_argument("--no-status-write", dest="status_write", action="store_false",
                        help="with --source kubernetes: status.write false (by default the control plane writes "
                             "listener status, as deployed, and the pod changes start once it has)")
    parser.add_argument("--runs", type=int, default=1,
                        help="with --peer: alternated runs of each server per mode (the table shows medians)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--py-spy", type=Path, metavar="PREFIX",
                        help="profile the control plane with py-spy (pip install py-spy): PREFIX.<mode>.txt, raw")
    parser.add_argument("--keep-logs", type=Path, help="copy the control plane's and fleet's logs here")
    args = parser.parse_args(argv)
    if args.clusters is None:
        args.clusters = max(10, args.pods // 50)
    args.modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not args.modes or any(m not in ("sotw", "delta") for m in args.modes):
        parser.error("--mode: sotw, delta or sotw,delta")
    if args.peer is not None:
        if args.real_envoys:
            parser.error("--peer runs with the simulated fleet only")
        if args.source == "kubernetes":
            print("--source kubernetes --peer: the peer has no Kubernetes source; it runs on the same topology from "
                  "files, as the reference column (its event is its log line for the pod)", file=sys.stderr)
        if not os.access(args.peer, os.X_OK):
            parser.error(f"--peer: {args.peer} is not an executable file")
        args.peer = args.peer.resolve()
    if args.real_envoys and args.source == "kubernetes":
        parser.error("--source kubernetes runs with the simulated fleet only")
    if args.runs < 1:
        parser.error("--runs: at least 1")
    return args


async def main_async(args: argparse.Namespace) -> Json:
    doc: Json = {"machine": machine(), "command": "python -m bench.fanout " + " ".join(sys.argv[1:]), "runs": []}
    # With --peer: ours, peer, ours, peer... per mode (alternated, so a change in the machine's load hits both).
    servers: list[Path | None] = [None, args.peer] * args.runs if args.peer else [None]
    for mode, peer in [(mode, peer) for mode in args.modes for peer in servers]:
        started, load_before = time.monotonic(), os.getloadavg()
        try:
            if args.real_envoys:
                from .realenvoy import run_real

                result = await run_real(args, mode)
            else:
                result = await run_simulated(args, mode, peer)
        except Exception as e:  # one failed mode still reports the others
            result = {"mode": mode, "server": "peer" if peer else "ours", "nodes": args.nodes, "pods": args.pods,
                      "error": f"{type(e).__name__}: {e}"}
        result["wall_s"] = round(time.monotonic() - started, 1)
        # Other work on the machine shows here (1-minute load averages before and after the run).
        result["loadavg_1m"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        doc["runs"].append(result)
        print(human(result), file=sys.stderr, flush=True)
    if args.peer:
        doc["comparison"] = compare(doc["runs"])
        source = "ours from the fake Kubernetes API server, the peer from files" if args.source == "kubernetes" else ""
        print(f"ours vs {args.peer.name} (medians of {args.runs} alternated run(s) each; ratio = ours / peer"
              f"{'; ' + source if source else ''}):", file=sys.stderr)
        print(comparison_table(doc["comparison"], args.source), file=sys.stderr, flush=True)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc = asyncio.run(main_async(args))
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if any("error" in run for run in doc["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
