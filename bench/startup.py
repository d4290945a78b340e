"""Startup to ready, alone: `envoy-control-plane run` on the fan-out topology's manifests, spawn to /readyz.

    python -m bench.startup -N 1000 -P 10000 --runs 5      # spawn -> /readyz 200, CPU (with reaped children), RSS
    python -m bench.startup -N 1000 -P 10000 --breakdown   # in-process, CPU seconds of each phase (best of runs)

/readyz is polled every 5 ms (the fan-out bench polls every 50 ms). The breakdown runs `ControlPlane.start` in this
process without the forked parse: imports, reading and parsing the manifests (the worker thread's CPU), the World's
first load, building every node's snapshot, and the rest of `start` (admin, bookkeeping, the xDS server).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def _config(root: Path, manifests: Path) -> Path:
    from bench.procs import free_port

    config = {
        "xds": {"address": "127.0.0.1", "port": free_port()},
        "admin": {"address": "127.0.0.1", "port": free_port()},
        "manifests": [str(manifests)],
        "ingress_address": "127.0.0.1",
        "egress_address": "127.0.0.1",
    }
    path = root / "control-plane.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def spawn_to_ready(root: Path, manifests: Path) -> dict[str, float]:
    from bench.procs import usage

    config = _config(root, manifests)
    admin = yaml.safe_load(config.read_text())["admin"]["port"]
    started = time.monotonic()
    with open(root / "control-plane.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "envoy_control_plane", "run", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the control plane exited; see {root / 'control-plane.log'}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.005)
        seconds = time.monotonic() - started
        u = usage(proc.pid)
        return {"seconds": seconds, "cpu_s": u.cpu, "rss_mb": u.rss_mb, "hwm_mb": u.hwm_mb}
    finally:
        proc.terminate()
        proc.wait(10)


def breakdown(manifests: Path, root: Path) -> dict[str, float]:
    """One in-process start: CPU seconds per phase (in a fresh process: imports count from its start)."""
    cpu = time.process_time
    from envoy_control_plane.cli import _parser, resolve_config

    config = resolve_config(_parser().parse_args(["run", "--config", str(_config(root, manifests))]))
    from envoy_control_plane import logs

    logs.setup(config.log_level, config.log_format, config.library_log_level)  # as `run` logs, into a file
    import logging

    logging.getLogger().handlers[0].setStream(open(root / "in-process.log", "w"))  # noqa: SIM115
    from envoy_control_plane.app import ControlPlane
    from envoy_control_plane.sources.manifests import ManifestSource
    from envoy_control_plane.state import World

    phases = {"interpreter and imports": cpu()}

    def timed(owner: object, name: str, phase: str, clock=cpu) -> None:
        real = getattr(owner, name)

        def wrapper(*args: object, **kw: object) -> object:
            begun = clock()
            try:
                return real(*args, **kw)
            finally:
                phases[phase] = phases.get(phase, 0.0) + clock() - begun

        setattr(owner, name, wrapper)

    timed(ManifestSource, "_parse_ahead", "read and parse manifests (thread CPU)", time.thread_time)
    timed(World, "replace", "World first load")

    async def start() -> None:
        plane = ControlPlane(config)
        timed(plane.controller, "rebuild", "every node's snapshot")
        begun = cpu()
        await plane.start()
        phases["start, all of it"] = cpu() - begun
        await plane.stop()

    asyncio.run(start())
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-N", "--nodes", type=int, default=1000)
    parser.add_argument("-P", "--pods", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true", help="in-process CPU per phase instead (best of runs)")
    parser.add_argument("--one-breakdown", type=Path, help=argparse.SUPPRESS)  # the child of --breakdown
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        root = Path(tmp)
        if args.one_breakdown:
            print(json.dumps(breakdown(args.one_breakdown, root)))
            return
        from bench.topology import Topology

        manifests = root / "manifests"
        Topology(args.nodes, args.pods, max(10, args.pods // 50), 4, 1).write(manifests)
        print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
        if args.breakdown:
            runs = [json.loads(subprocess.run([sys.executable, "-m", "bench.startup", "--one-breakdown", str(manifests)],
                                        check=True, capture_output=True, text=True).stdout)
                    for _ in range(args.runs)]
            for phase in runs[0]:
                print(f"{phase}: best {min(r[phase] for r in runs):.3f} s, "
                      f"median {statistics.median(r[phase] for r in runs):.3f} s")
        else:
            runs = [spawn_to_ready(root, manifests) for _ in range(args.runs)]
            for run in runs:
                print("  ".join(f"{k} {v:.3f}" if k != "seconds" else f"ready {v:.3f} s" for k, v in run.items()))
            seconds = [r["seconds"] for r in runs]
            print(f"spawn to /readyz: best {min(seconds):.3f} s, median {statistics.median(seconds):.3f} s; "
                  f"RSS at ready median {statistics.median(r['rss_mb'] for r in runs):.0f} MB")
        print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
