"""The cross-cluster example (the overlays beside this file) on one machine, without Kubernetes:

- two fake API servers (tests/fakekube) stand for cluster-a and cluster-b; each holds what `kubectl apply -k
  cluster-X` puts there: the quick demo's listeners as patched by the overlay's listeners.yaml, and a Ready pod of
  the app, annotated as the overlay's app.yaml says;
- two control planes, one per cluster, each run as `envoy-control-plane run --config` with the overlay's config.yaml
  (listeners from its own cluster, only pods from the other: `listenersource: false`), its kubeconfig paths pointed
  at the fakes;
- two real Envoys, node-a and node-b (the sidecars), and for each app a TCP backend that answers with its name.

Pod IPs are loopback addresses: cluster-a's pod is 127.0.0.2, cluster-b's 127.0.0.3. Each Envoy stands in for a
sidecar in its pod's network namespace: its listeners bind the pod's IP (the config's ingress_address and
egress_address), and its outgoing connections leave from it (the bootstrap's upstream_bind_config). The apps listen
on 127.0.0.1, on ports of their own. All ports are free ones, picked at start.

Run: `.venv/bin/python examples/cross-cluster/run.py` (Ctrl-C stops everything); `--once` stops after showing the
traffic, with exit code 1 if anything was not as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # the fake API server and the end-to-end harness live under tests/

from envoy_control_plane.model import API_VERSIONS, CLUSTER_NAME_ANNOTATION  # noqa: E402
from tests.e2e.harness import Backend, Envoy, free_port, start_backend, talk, wait_until  # noqa: E402
from tests.e2e.harness import http, procs  # noqa: E402
from tests.e2e.harness.plane import plane_command  # noqa: E402
from tests.fakekube import FakeKube  # noqa: E402

EXAMPLES = ROOT / "manifests" / "examples"
POD_IPS = {"a": "127.0.0.2", "b": "127.0.0.3"}
STRANGER = "127.0.0.9"  # an address no pod of either cluster has


@dataclass
class Side:
    """One cluster: its overlay, its fake API server, the app pod, the control plane and the Envoy next to the pod."""

    name: str  # "a" or "b"
    pod_ip: str
    overlay: Path = field(init=False)
    kube: FakeKube | None = None
    kubeconfig: Path | None = None
    app: Backend | None = None
    plane: subprocess.Popen[bytes] | None = None
    plane_log: Path | None = None
    admin_url: str = ""
    envoy: Envoy | None = None
    listeners: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> object

    def __post_init__(self) -> None:
        self.overlay = HERE / f"cluster-{self.name}"

    @property
    def cluster(self) -> str:
        return f"cluster-{self.name}"

    @property
    def envoy_cluster(self) -> str:
        """The Envoy cluster of this side's app pods: the overlay's annotation."""
        app = yaml.safe_load((self.overlay / "app.yaml").read_text())
        return app["spec"]["template"]["metadata"]["annotations"][CLUSTER_NAME_ANNOTATION]

    @property
    def node(self) -> str:
        """The sidecars' node id: the one in the overlay's bootstrap."""
        return yaml.safe_load((self.overlay / "envoy-bootstrap.yaml").read_text())["node"]["id"]

    def port(self, kind: str) -> int:
        return self.listeners[kind]["spec"]["listenport"]


def overlay_listeners(side: Side, ingress_port: int, app_port: int) -> dict[str, dict[str, Any]]:
    """The quick demo's listeners with the overlay's patches (listeners.yaml), on this machine's ports."""
    patches = {doc["kind"]: doc for doc in yaml.safe_load_all((side.overlay / "listeners.yaml").read_text())}
    listeners = {}
    for kind, filename in (("IngressListener", "ingresslistener.yaml"), ("EgressListener", "egresslistener.yaml")):
        doc = yaml.safe_load((EXAMPLES / filename).read_text())
        doc["metadata"]["namespace"] = patches[kind]["metadata"]["namespace"]
        doc["spec"].update(patches[kind]["spec"])
        listeners[kind] = doc
    # In the clusters every pod has its own 8080, 8081 and 9090; here they share one machine.
    listeners["IngressListener"]["spec"].update(listenport=ingress_port, targetport=app_port)
    listeners["EgressListener"]["spec"].update(listenport=free_port(side.pod_ip), targetport=ingress_port)
    return listeners


def app_pod(side: Side) -> dict[str, Any]:
    """A pod of the app's Deployment, as the kubelet reports it once it runs: an IP, Ready."""
    return {
        "apiVersion": API_VERSIONS["Pod"],
        "kind": "Pod",
        "metadata": {"name": f"test-app-{side.name}1", "namespace": "demo",
                     "annotations": {CLUSTER_NAME_ANNOTATION: side.envoy_cluster}, "labels": {"app": "test-app"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}, {"name": "envoy", "image": "envoy"}]},
        "status": {"phase": "Running", "podIP": side.pod_ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def plane_config(side: Side, sides: dict[str, Side], xds_port: int, admin_port: int) -> dict[str, Any]:
    """The overlay's config.yaml, on loopback: kubeconfigs of the fakes, listeners bound to the pod's IP."""
    config = yaml.safe_load((side.overlay / "config.yaml").read_text())
    by_cluster = {s.cluster: s for s in sides.values()}
    for entry in config["clusters"]:
        entry["kubeconfig"] = str(by_cluster[entry["name"]].kubeconfig)  # in the cluster: in-cluster credentials
    config.pop("state_dir", None)
    config.update(
        xds={"address": "127.0.0.1", "port": xds_port},
        admin={"address": "127.0.0.1", "port": admin_port},
        ingress_address=side.pod_ip,  # 0.0.0.0 in the pod's network namespace
        egress_address=side.pod_ip,  # 127.0.0.1 there
    )
    return config


def common_free_port(*hosts: str) -> int:
    """A port free on every one of these addresses (the ingress listeners share one, like 8080 in every pod)."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


@contextlib.asynccontextmanager
async def topology(workdir: Path) -> AsyncIterator[dict[str, Side]]:
    """Start everything; stop everything on the way out, whatever happened."""
    sides = {name: Side(name, ip) for name, ip in POD_IPS.items()}
    ingress_port = common_free_port(*POD_IPS.values())
    try:
        for side in sides.values():
            side.kube = FakeKube(port=free_port(), bookmark_interval=1.0)
            await side.kube.start()
            side.kubeconfig = side.kube.write_kubeconfig(workdir / f"{side.cluster}.kubeconfig", context_name=side.cluster)
            side.app = await start_backend(f"app of {side.cluster} (pod {side.pod_ip})")
            side.listeners = overlay_listeners(side, ingress_port, side.app.port)
            for obj in (*side.listeners.values(), app_pod(side)):
                side.kube.upsert(obj)
        say(f"fake API servers: cluster-a at {sides['a'].kube.url}, cluster-b at {sides['b'].kube.url}; "
            f"pods: {', '.join(f'{s.envoy_cluster} {s.pod_ip} in {s.cluster}' for s in sides.values())}")

        for side in sides.values():
            xds_port, admin_port = free_port(), free_port()
            config = workdir / f"{side.cluster}-config.yaml"
            config.write_text(yaml.safe_dump(plane_config(side, sides, xds_port, admin_port), sort_keys=False))
            side.plane_log = workdir / f"{side.cluster}-plane.log"
            side.plane = procs.spawn([plane_command(), "run", "--config", str(config)], side.plane_log)
            side.admin_url = f"http://127.0.0.1:{admin_port}"
            side.envoy = Envoy(side.node, workdir, xds_port)
            boot = yaml.safe_load(side.envoy.bootstrap_path.read_text())
            boot["cluster_manager"] = {"upstream_bind_config": {"source_address": {"address": side.pod_ip, "port_value": 0}}}
            side.envoy.bootstrap_path.write_text(yaml.safe_dump(boot, sort_keys=False))
        for side in sides.values():
            await wait_until(lambda s=side: _ready(s), 30, what=f"{side.cluster}'s control plane /readyz")
            say(f"control plane of {side.cluster}: {side.admin_url} (config {workdir}/{side.cluster}-config.yaml)")
        for side in sides.values():
            await side.envoy.start()
            await side.envoy.wait_live(30)
            say(f"Envoy {side.node} (sidecar of pod {side.pod_ip}): admin {side.envoy.admin_url}, "
                f"ingress {side.pod_ip}:{side.port('IngressListener')}, egress {side.pod_ip}:{side.port('EgressListener')}")
        yield sides
    finally:
        say("stopping everything")
        for side in sides.values():
            if side.envoy:
                side.envoy.stop()
        for side in sides.values():
            procs.stop(side.plane)
            if side.app:
                await side.app.close()
            if side.kube:
                with contextlib.suppress(Exception):
                    await side.kube.stop()


async def _ready(side: Side) -> bool:
    if side.plane is not None and side.plane.poll() is not None:
        raise RuntimeError(f"{side.cluster}'s control plane exited:\n{procs.tail(side.plane_log)}")
    return await http.reachable(side.admin_url + "/readyz")


async def show(sides: dict[str, Side]) -> bool:
    """Send the traffic the example is about; print what happened; whether it all went as expected."""
    ok = True

    def report(what: str, reply: str | None, expected: str | None) -> None:
        nonlocal ok
        ok &= reply == expected
        verdict = f"answered by the {reply}" if reply else "refused (RBAC)"
        say(f"{what}: {verdict}" + ("" if reply == expected else f"  <-- UNEXPECTED, expected {expected or 'a refusal'}"))

    a, b = sides["a"], sides["b"]
    for src, dst in ((a, b), (b, a)):
        egress = src.port("EgressListener")
        # The first connections may race the last endpoint update; wait until the route is complete.
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: _answers(egress, src.pod_ip, dst.app.name), 15, what="traffic through")
        reply = await talk(egress, src.pod_ip, source=src.pod_ip)
        report(f"pod {src.pod_ip} ({src.envoy_cluster}, {src.cluster}) -> {src.node} egress "
               f"{src.pod_ip}:{egress} -> pods of {dst.envoy_cluster} -> {dst.node} ingress", reply, dst.app.name)
    ingress = b.port("IngressListener")
    for source, who in ((STRANGER, "no pod of either cluster"), (b.pod_ip, f"a pod of {b.envoy_cluster} itself")):
        reply = await talk(ingress, b.pod_ip, source=source)
        report(f"{source} ({who}) -> {b.node} ingress {b.pod_ip}:{ingress} directly", reply, None)
    sources = {s["name"]: s for s in await http.get_json(a.admin_url + "/debug/sources")}
    say("control plane of cluster-a watches: " + "; ".join(
        f"{name}: {', '.join(sorted(s.get('kinds', {})))}" for name, s in sorted(sources.items())))
    return ok


async def _answers(port: int, host: str, name: str) -> bool:
    return await talk(port, host, source=host) == name


async def main(once: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="envoy-cp-cross-cluster-"))
    async with topology(workdir) as sides:
        ok = await show(sides)
        say(f"logs and configs in {workdir}")
        if once:
            return 0 if ok else 1
        b = sides["b"]
        say("try it by hand, then Ctrl-C to stop everything:")
        print(f"    nc -s {POD_IPS['a']} {POD_IPS['a']} {sides['a'].port('EgressListener')}    "
              "# a pod of app-a calls app-b through its sidecar")
        print(f"    nc -s {STRANGER} {b.pod_ip} {b.port('IngressListener')}    # anyone else: refused by node-b's RBAC")
        print(f"    curl -s {sides['a'].admin_url}/debug/sources")
        print(f"    curl -s {b.envoy.admin_url}/config_dump")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
    return 0


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="show the traffic, then stop (exit 1 if not as expected)")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(arguments.once)))
