"""The control plane and the simulated fleet as child processes, with the handles the benchmark drives them by."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from . import procs

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)


def control_plane_command() -> list[str]:
    """`envoy-control-plane` of this environment (the console script next to this Python)."""
    script = Path(sys.executable).parent / "envoy-control-plane"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envoy_control_plane"]


class HttpChild:
    """A child process we talk to over HTTP: its pid, CPU and memory, and stopping it (the session first)."""

    proc: subprocess.Popen[bytes] | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
        return self._session

    def usage(self) -> procs.Usage:
        return procs.usage(self.pid)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        procs.stop(self.proc)


class ControlPlane(HttpChild):
    """`envoy-control-plane run --config X` on loopback, with free xDS and admin ports."""

    def __init__(self, workdir: Path, manifests: Path, debounce_ms: int | None = None) -> None:
        self.workdir = workdir
        self.xds_port = procs.free_port()
        self.admin_port = procs.free_port()
        self.config_path = workdir / "control-plane.yaml"
        self.log_path = workdir / "control-plane.log"
        xds: dict[str, Any] = {"address": "127.0.0.1", "port": self.xds_port}
        if debounce_ms is not None:
            xds["debounce_ms"] = debounce_ms
        config = {
            "xds": xds,
            "admin": {"address": "127.0.0.1", "port": self.admin_port},
            "manifests": [str(manifests)],
            "ingress_address": "127.0.0.1",
            "egress_address": "127.0.0.1",
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.started = 0.0
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    @property
    def xds(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    def start(self) -> None:
        self.started = time.monotonic()
        command = [*control_plane_command(), "run", "--config", str(self.config_path), "--log-level", "INFO"]
        self.proc = procs.spawn(command, self.log_path)

    async def wait_ready(self, timeout: float) -> float:
        """Wait for /readyz (manifests loaded, snapshots built, both servers listening); returns the time it took."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                status, _ = await self.get("/readyz")
                if status == 200:
                    return time.monotonic() - self.started
            await asyncio.sleep(0.05)
        raise TimeoutError(f"control plane not ready after {timeout} s; log: {self.log_path}")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"control plane exited with {self.proc.returncode}; log: {self.log_path}")

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session().get(self.admin + path) as response:
            return response.status, await response.text()

    async def get_json(self, path: str) -> Any:
        status, text = await self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {text[:300]}")
        return json.loads(text)

    async def metrics(self) -> dict[str, float]:
        """The Prometheus samples, by "name{labels}"."""
        _, text = await self.get("/metrics")
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    samples[name] = float(value)
        return samples

class PeerControlPlane(ControlPlane):
    """Another xDS server serving the same manifests (../shared/peers/go-control-plane/gocp) in place of ours.

    It is started as `PEER --manifests DIR --xds-port P --admin-port A --debounce Nms`, logs the same lines our log
    parsing looks for, and answers /readyz, /debug/nodes and /debug/versions on its admin port (/metrics is empty)."""

    def __init__(self, workdir: Path, manifests: Path, peer: Path, debounce_ms: int | None = None) -> None:
        super().__init__(workdir, manifests, debounce_ms)
        self.log_path = workdir / "peer.log"
        self.command = [str(peer), "--manifests", str(manifests), "--xds-port", str(self.xds_port),
                        "--admin-port", str(self.admin_port), "--debounce", f"{debounce_ms or 20}ms"]  # fmt: skip

    def start(self) -> None:
        self.started = time.monotonic()
        self.proc = procs.spawn(self.command, self.log_path)

    async def served_versions(self, expected: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """expected with the versions the peer reports where they differ by construction (CDS: Go serialises oneof
        fields last, so the same clusters hash to another version; LDS and EDS bytes are identical to ours)."""
        served = await self.get_json("/debug/versions")
        return {
            node: {t: served.get(node, {}).get(t, v) if t == "cds" else v for t, v in types.items()}
            for node, types in expected.items()
        }


class Fleet:
    """`python -m bench.simfleet` as a child, driven over its JSON-lines protocol (one request at a time)."""

    def __init__(self, workdir: Path, xds: str, nodes: int, mode: str, extra: list[str]) -> None:
        self.args = [sys.executable, "-m", "bench.simfleet", "--xds", xds, "--nodes", str(nodes), "--mode", mode]
        self.args += extra
        self.log_path = workdir / f"simfleet-{mode}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}
        self._ids = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60) -> dict[str, Any]:
        root = Path(__file__).resolve().parent.parent
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *procs.GUARD, *self.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, cwd=root, limit=256 << 20,
            )  # fmt: skip
        self.ready = await self._read(timeout)
        if self.ready.get("event") != "ready":
            raise RuntimeError(f"simfleet did not start: {self.ready}")
        return self.ready

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"simfleet exited ({await self.proc.wait()}); log: {self.log_path}")
        return json.loads(line)

    async def call(self, command: str, timeout: float = 600, **fields: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self._ids += 1
        self.proc.stdin.write(json.dumps({"cmd": command, "id": self._ids, **fields}).encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await self._read(timeout)
        if reply.get("id") != self._ids:
            raise RuntimeError(f"simfleet answered out of order: {reply}")
        return reply

    def usage(self) -> procs.Usage:
        return procs.usage(self.pid)

    async def stop(self) -> dict[str, Any] | None:
        if self.proc is None or self.proc.returncode is not None:
            return None
        reply = None
        with contextlib.suppress(Exception):
            reply = await self.call("stop", timeout=15)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        return reply
