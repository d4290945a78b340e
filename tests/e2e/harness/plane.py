"""The control plane's side: its admin API, and the control plane run as a separate process (`envoy-control-plane
run`), for tests that kill and restart it. In-process control planes come from the `start_plane` fixture."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from envoy_control_plane.metrics import PREFIX

from . import http, procs
from .net import free_port
from .wait import wait_until

XDS_TYPES = ("CDS", "EDS", "LDS")


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format; None when the sample is absent.

    Our own metrics may be named without their `envoy_cp_` prefix (`xds_nacks_total`)."""
    if not name.startswith(("process_", "python_", PREFIX + "_")):
        name = f"{PREFIX}_{name}"
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?", line.strip())
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


class PlaneAdmin:
    """The control plane's admin HTTP API."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.url = f"http://{host}:{port}"

    async def get(self, path: str) -> tuple[int, str]:
        return await http.get(self.url + path)

    async def json(self, path: str) -> Any:
        return await http.get_json(self.url + path)

    async def metrics(self) -> str:
        status, text = await self.get("/metrics")
        assert status == 200, text
        return text

    async def metric(self, name: str, **labels: str) -> float:
        """A sample's value; an absent sample (a labelled counter never incremented) counts as 0."""
        return metric_value(await self.metrics(), name, **labels) or 0.0

    async def node_types(self, node: str) -> dict[str, dict[str, Any]]:
        """/debug/nodes for one node: its (newest) stream's status per type ({} when not connected)."""
        nodes = await self.json("/debug/nodes")
        streams = nodes.get(node, {}).get("streams", [])
        return max(streams, key=lambda s: s["stream"])["types"] if streams else {}

    async def snapshot(self, node: str) -> dict[str, Any]:
        return await self.json(f"/debug/snapshot/{node}")

    async def in_sync(self, node: str, types: tuple[str, ...] = XDS_TYPES) -> bool:
        """Whether the node's Envoy has (ACKed, or declared on connecting) the current version of every type."""
        status = await self.node_types(node)
        if not all(t in status for t in types):
            return False
        snapshot = await self.snapshot(node)
        return all(status[t]["acked_version"] == snapshot[t]["version"] for t in types)

    async def wait_in_sync(self, node: str, types: tuple[str, ...] = XDS_TYPES, timeout: float = 10.0) -> None:
        await wait_until(lambda: self.in_sync(node, types), timeout, what=f"node {node} in sync on {types}")


def plane_command() -> str:
    return str(Path(sys.prefix) / "bin" / "envoy-control-plane")


class PlaneProcess:
    """`envoy-control-plane run --config FILE` with fixed ports, so a restart comes back where Envoy looks for it."""

    def __init__(self, workdir: Path, manifests: Path, name: str = "plane", **extra: Any) -> None:
        """`name` names its directory (several may run); `extra`: more config keys (state_dir, ...)."""
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.xds_port = free_port()
        self.admin_port = free_port()
        self.config_path = self.dir / "config.yaml"
        self.log_path = self.dir / "plane.log"
        config = {
            "xds": {"address": "127.0.0.1", "port": self.xds_port, "debounce_ms": 10},
            "admin": {"address": "127.0.0.1", "port": self.admin_port},
            "manifests": [str(manifests)],
            "ingress_address": "127.0.0.1",
            **extra,
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.admin = PlaneAdmin(self.admin_port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self, timeout: float = 20.0) -> PlaneProcess:
        """Start and return once /readyz answers 200 (manifests loaded, both servers listening)."""
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"---- start #{self.starts}\n")
        args = [plane_command(), "run", "--config", str(self.config_path), "--log-level", "DEBUG"]
        self.proc = procs.spawn(args, self.log_path)

        async def ready() -> bool:
            self.check_running()
            return await http.reachable(self.admin.url + "/readyz")

        await wait_until(ready, timeout, what="control plane /readyz")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        procs.kill(self.proc)

    def stop(self) -> None:
        procs.stop(self.proc)

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"control plane exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return procs.tail(self.log_path, lines)


def loopback_config(**overrides: Any) -> Any:
    """A control plane config on loopback, with ports the kernel picks (ControlPlane reports what it bound)."""
    from envoy_control_plane.config import build_config

    raw = {
        "xds": {"address": "127.0.0.1", "debounce_ms": 10},
        "admin": {"address": "127.0.0.1"},
        "ingress_address": "127.0.0.1",
        **overrides,
    }
    config = build_config(raw, source="test")
    # Port 0 is not a valid port in a config file, so it is set after validation. An xDS port given is kept (a test
    # that restarts the control plane where its Envoys look for it).
    xds_port = overrides.get("xds", {}).get("port", 0)
    ports = {
        "xds": config.xds.model_copy(update={"port": xds_port}),
        "admin": config.admin.model_copy(update={"port": 0}),
    }
    return config.model_copy(update=ports)


class InProcessPlane:
    """A ControlPlane running in the test's event loop, with its admin API and manifest source at hand."""

    def __init__(self, control_plane: Any) -> None:
        self.control_plane = control_plane
        self.admin = PlaneAdmin(control_plane.admin_port)

    @property
    def xds_port(self) -> int:
        return self.control_plane.xds_port

    @property
    def manifest_status(self) -> Any:
        return self.control_plane.manifests.status

    async def wait_reloaded(self, since: float | None, timeout: float = 10.0) -> None:
        """Until the manifest source reloaded after `since` (a last_change value read before the edit)."""

        def reloaded() -> bool:
            last = self.manifest_status.last_change
            return last is not None and (since is None or last > since)

        await wait_until(reloaded, timeout, what="manifest reload")
