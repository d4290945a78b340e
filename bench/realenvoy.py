"""The same measurements with real Envoys instead of the simulated fleet (`python -m bench.fanout --real-envoys`).

N Envoy processes (`.venv/bin/envoy --use-dynamic-base-id --concurrency 1 -l error`, each with the bootstrap
`envoy-control-plane bootstrap --node-id node-<i> --admin-port <free>` prints) against the control plane. What an
Envoy holds is read from its admin API: `/stats?filter=version_text` gives the CDS and LDS versions it accepted
(the version it ACKs), `/clusters?format=json` the hosts of each cluster, i.e. what EDS it has applied. A node has
converged when its CDS and LDS versions are the ones the benchmark computed and every egress cluster has exactly the
expected hosts. Times are when a poll (every --poll-ms, default 25 ms, only of the nodes not yet converged) first saw
it: up to one poll interval plus one admin round trip later than the fact (polling faster than 25 ms loads a
2-core machine enough to slow the Envoys down); Envoy's own `update_time` gauges then say when it applied the
update, to the millisecond.

Messages to unaffected nodes: the sum of every `update_attempt`, `update_success`, `update_rejected` and
`update_failure` counter (CDS, LDS and each cluster's EDS) of each Envoy, before and after; a node the change does not
touch must show the same sum.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from . import procs
from .fanout import Json, log_times, summary
from .procs import Clock, LogTail
from .runners import ControlPlane, control_plane_command
from .topology import Expected, Topology

COUNTERS = ("update_attempt", "update_success", "update_rejected", "update_failure")


class RealEnvoy:
    def __init__(self, index: int, workdir: Path, xds: str, delta: bool) -> None:
        self.node = Topology.node_id(index)
        self.admin_port = procs.free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.bootstrap = workdir / f"{self.node}.yaml"
        self.log = workdir / f"{self.node}.log"
        command = [*control_plane_command(), "bootstrap", "--node-id", self.node, "--xds", xds]
        command += ["--admin-port", str(self.admin_port)] + (["--delta"] if delta else [])
        self.bootstrap.write_text(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        envoy = Path(sys.executable).parent / "envoy"
        args = [str(envoy), "-c", str(self.bootstrap), "--use-dynamic-base-id", "--concurrency", "1", "-l", "error"]
        self.proc = procs.spawn(args, self.log)

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"envoy {self.node} exited with {self.proc.returncode}; log: {self.log}")

    def stop(self) -> None:
        procs.stop(self.proc)


class Poller:
    """Reads Envoy admin APIs and says whether a node holds what it should."""

    def __init__(self, expected: Expected, topology: Topology) -> None:
        self.expected = expected
        self.topology = topology
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def text(self, envoy: RealEnvoy, path: str) -> str | None:
        try:
            async with self.session.get(envoy.admin + path) as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return None

    async def holds(self, envoy: RealEnvoy) -> bool:
        """CDS and LDS at the expected versions, and every egress cluster with exactly the expected hosts."""
        versions = self.expected.versions[envoy.node]
        stats = await self.text(envoy, "/stats?filter=^(cluster_manager.cds|listener_manager.lds).version_text$")
        if stats is None:
            return False
        texts = dict(line.split(": ", 1) for line in stats.splitlines() if ": " in line)
        if texts.get("cluster_manager.cds.version_text") != f'"{versions["cds"]}"':
            return False
        if texts.get("listener_manager.lds.version_text") != f'"{versions["lds"]}"':
            return False
        raw = await self.text(envoy, "/clusters?format=json")
        if raw is None:
            return False
        hosts = {
            c["name"]: sorted(
                f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}"
                for h in c.get("host_statuses", [])
            )
            for c in json.loads(raw).get("cluster_statuses", [])
        }
        index = int(envoy.node.rsplit("-", 1)[1])
        for k, target in enumerate(self.topology.node_egress[index]):
            if hosts.get(f"egress_{envoy.node}-out-{k}_cluster") != sorted(self.expected.endpoints(target)):
                return False
        return True

    async def applied_at(self, envoy: RealEnvoy) -> float | None:
        """The wall-clock time (s) of the latest successful CDS, LDS or EDS update, by Envoy's own `update_time`
        gauges (ms resolution): when the node applied what it holds, free of the poll interval."""
        text = await self.text(envoy, "/stats?filter=(cds|lds|cluster\\..*)\\.update_time$")
        if text is None:
            return None
        values = [int(v) for line in text.splitlines() for v in [line.rpartition(": ")[2]] if v.isdigit()]
        return max(values) / 1000 if values else None

    async def counters(self, envoy: RealEnvoy) -> int:
        pattern = "(cds|lds|cluster\\..*)\\.update_(attempt|success|rejected|failure)$"
        text = await self.text(envoy, "/stats?filter=" + pattern)
        if text is None:
            return -1
        return sum(int(v) for line in text.splitlines() for v in [line.rpartition(": ")[2]] if v.isdigit())

    async def wait(self, envoys: list[RealEnvoy], timeout: float, poll: float) -> dict[str, float | None]:
        """Poll each envoy until it holds its expected config; the time each was first seen there (None: timeout)."""

        async def one(envoy: RealEnvoy) -> float | None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                envoy.check()
                if await self.holds(envoy):
                    return time.monotonic()
                await asyncio.sleep(poll)
            return None

        times = await asyncio.gather(*(one(e) for e in envoys))
        return {e.node: t for e, t in zip(envoys, times)}

    async def close(self) -> None:
        await self.session.close()


async def run_real(args: Any, mode: str) -> Json:
    topology = Topology(args.nodes, args.pods, args.clusters, args.egress, args.ingress, seed=args.seed)
    poll = args.poll_ms / 1000
    with tempfile.TemporaryDirectory(prefix=f"fanout-real-{mode}-") as tmp:
        workdir = Path(tmp)
        manifests, scratch = workdir / "manifests", workdir / "scratch"
        scratch.mkdir()
        topology.write(manifests)
        expected = Expected(topology)
        cp = ControlPlane(workdir, manifests, args.debounce_ms)
        log = LogTail(cp.log_path, Clock())
        envoys: list[RealEnvoy] = []
        poller = Poller(expected, topology)
        result: Json = {
            "mode": "real-envoy",
            "xds": mode,
            "nodes": args.nodes,
            "pods": args.pods,
            "clusters": args.clusters,
            "egress_per_node": args.egress,
            "ingress_per_node": args.ingress,
            "poll_ms": args.poll_ms,
        }
        try:
            cp.start()
            result["startup_s"] = round(await cp.wait_ready(args.timeout), 3)
            envoys = [RealEnvoy(i, workdir, cp.xds, mode == "delta") for i in range(args.nodes)]
            cpu0 = cp.usage().cpu
            started = time.monotonic()
            for envoy in envoys:
                envoy.start()
            times = await poller.wait(envoys, args.timeout, poll)
            if None in times.values():
                raise RuntimeError(f"not configured: {[n for n, t in times.items() if t is None]}")
            done = sorted(t - started for t in times.values() if t is not None)
            result["initial"] = {
                "seconds": round(done[-1], 3),
                "p50_node_s": round(done[len(done) // 2], 3),
                "cpu_s": round(cp.usage().cpu - cpu0, 3),
                "note": "from spawning the first Envoy (process start included) to the last one seen configured",
            }
            samples = []
            for _ in range(args.repeats):
                await asyncio.sleep(args.gap)
                pod = topology.change_one_pod()
                clusters, names = {pod.cluster}, [pod.name]
                sample = await _change(args, topology, expected, cp, log, poller, envoys, scratch, clusters, names)
                samples.append(sample)
            ok = [s for s in samples if s["ok"]]
            result["pod_change"] = {
                "repeats": len(samples),
                "converged": len(ok),
                "event_to_seen_s": summary([s["event_to_seen_s"] for s in ok if "event_to_seen_s" in s]),
                "event_to_applied_s": summary([s["event_to_applied_s"] for s in ok if "event_to_applied_s" in s]),
                "write_to_seen_s": summary([s["write_to_seen_s"] for s in ok]),
                "affected_nodes": summary([s["affected_nodes"] for s in samples], 1),
                "unaffected_nodes_with_updates": sum(s["unaffected_nodes_with_updates"] for s in samples),
                "samples": samples,
            }
            if args.rollout > 0:
                replaced = topology.rollout(args.rollout)
                clusters = {p.cluster for p in replaced}
                names = [p.name for p in topology.pod_list if p.cluster in clusters]
                sample = await _change(args, topology, expected, cp, log, poller, envoys, scratch, clusters, names)
                sample["pods_replaced"] = len(replaced)
                result["rollout"] = sample
            usage = cp.usage()
            result["control_plane"] = {"cpu_s_total": round(usage.cpu, 3), "peak_rss_mb": round(usage.hwm_mb, 1)}
        finally:
            await poller.close()
            for envoy in envoys:
                envoy.stop()
            await cp.stop()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for path in workdir.glob("*.log"):
                    (args.keep_logs / f"{workdir.name}-{path.name}").write_bytes(path.read_bytes())
    return result


async def _change(
    args: Any, topology: Topology, expected: Expected, cp: ControlPlane, log: LogTail, poller: Poller,
    envoys: list[RealEnvoy], scratch: Path, clusters: set[str], pods: list[str],
) -> Json:  # fmt: skip
    changed = expected.update()
    affected = [e for e in envoys if e.node in changed]
    others = [e for e in envoys if e.node not in changed]
    before = await asyncio.gather(*(poller.counters(e) for e in envoys))
    log.read()
    written = topology.rewrite_pod_files(cp.workdir / "manifests", clusters, scratch)
    times = await poller.wait(affected, args.timeout, args.poll_ms / 1000)
    applied = await asyncio.gather(*(poller.applied_at(e) for e in affected))
    await asyncio.sleep(args.settle)
    after = await asyncio.gather(*(poller.counters(e) for e in envoys))
    moved = {e.node for e, b, a in zip(envoys, before, after) if b != a}
    marks = log_times(log.read(), written, set(pods))
    seen = [t for t in times.values() if t is not None]
    out: Json = {
        "ok": len(seen) == len(affected),
        "affected_nodes": len(affected),
        "changed_types": sorted({t for types in changed.values() for t in types}),
        "unaffected_nodes_with_updates": sum(1 for e in others if e.node in moved),
        "affected_nodes_with_updates": sum(1 for e in affected if e.node in moved),  # shows the counters see pushes
        "counter_read_failures": sum(1 for v in before + after if v < 0),
    }
    if seen and out["ok"]:
        last = max(seen)
        out["write_to_seen_s"] = round(last - written, 4)
        if "event" in marks:
            out["event_to_seen_s"] = round(last - marks["event"], 4)
            known = [a for a in applied if a is not None]
            if len(known) == len(applied):
                out["event_to_applied_s"] = round(log.clock.mono(max(known)) - marks["event"], 4)
        if "detected" in marks:
            out["write_to_watch_s"] = round(marks["detected"] - written, 4)
    return out


def human(result: Json) -> str:
    ch = result["pod_change"]
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
    lines = [
        f"real Envoys ({result['xds']}): N={result['nodes']} P={result['pods']} C={result['clusters']}",
        f"  all configured in {result['initial']['seconds']:.2f} s (from spawning the first Envoy)",
        f"  pod change ({ch['converged']}/{ch['repeats']}): "
        f"event->last seen p50 {ms(ch['event_to_seen_s'].get('p50'))} "
        f"p99 {ms(ch['event_to_seen_s'].get('p99'))}; write->last seen p50 {ms(ch['write_to_seen_s'].get('p50'))} "
        f"p99 {ms(ch['write_to_seen_s'].get('p99'))}; event->last applied (Envoy's update_time) p50 "
        f"{ms(ch['event_to_applied_s'].get('p50'))} p99 {ms(ch['event_to_applied_s'].get('p99'))}; "
        f"{ch['affected_nodes'].get('mean')} nodes affected; "
        f"unaffected Envoys with any update: {ch['unaffected_nodes_with_updates']}",
    ]
    if "rollout" in result:
        ro = result["rollout"]
        lines.append(
            f"  rollout {ro['pods_replaced']} pods: {ro['affected_nodes']} nodes, event->last seen "
            f"{ms(ro.get('event_to_seen_s'))}; unaffected with updates {ro['unaffected_nodes_with_updates']}"
        )
    return "\n".join(lines)

