"""The benchmark's world: P pods over C Envoy clusters, N nodes with E egress and I ingress listeners, as manifests.

Deterministic for a seed. Pods are `pod-<j>` in cluster `svc-<j mod C>`, one manifest file per cluster
(pods/svc-<c>.yaml), so a pod change rewrites one small file; listeners are in files of 100 nodes
(listeners/nodes-<k>.yaml). Node i has E EgressListeners targeting E distinct clusters (port 8080) and I
IngressListeners admitting the pods of one cluster each (`rbacallowcluster`), drawn at random.

`Expected` mirrors the control plane with its own translation code (a World, node_resources, Snapshot), so the
benchmark knows, before it writes a file, the exact per-node versions every node must end up ACKing and which nodes a
change touches. Versions are content hashes, so they match the control plane's.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from envoy_control_plane.config import MANIFEST_SOURCE
from envoy_control_plane.model import parse_object
from envoy_control_plane.state import World
from envoy_control_plane.translate.node import Addresses, node_resources
from envoy_control_plane.xds.cache import Snapshot
from envoy_control_plane.xds.types import CLUSTER, ENDPOINT, LISTENER

TARGET_PORT = 8080
LOCAL_PORT = 8081
LISTEN_PORT0 = 10000
NODES_PER_FILE = 100
CLUSTER_ANNOTATION = "cluster-name.envoy.uw.io"
EGRESS_API = "egresslistener.envoy.uw.systems/v1alpha1"
INGRESS_API = "ingresslistener.envoy.uw.systems/v1alpha1"
SHORT = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds"}
# What the benchmark's config file sets: ingress listeners on loopback, as the demo and tests do.
ADDRESSES = Addresses(ingress="127.0.0.1", egress="127.0.0.1")


def pod_ip(serial: int) -> str:
    """A unique IPv4 address per serial number (10.0.0.1, 10.0.0.2, ...; 16 million of them)."""
    serial += 1
    return f"10.{(serial >> 16) & 255}.{(serial >> 8) & 255}.{serial & 255}"


@dataclass
class Pod:
    name: str
    cluster: str
    ip: str

    def obj(self) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": "default", "annotations": {CLUSTER_ANNOTATION: self.cluster}},
            "status": {"podIP": self.ip, "conditions": [{"type": "Ready", "status": "True"}]},
        }

    def doc(self) -> str:
        """obj() as YAML (written by hand: yaml.dump is too slow for 10,000 pods)."""
        return (
            "apiVersion: v1\nkind: Pod\nmetadata:\n"
            f"  name: {self.name}\n  namespace: default\n"
            f"  annotations:\n    {CLUSTER_ANNOTATION}: {self.cluster}\n"
            f"status:\n  podIP: {self.ip}\n  conditions:\n  - type: Ready\n    status: 'True'\n"
        )


@dataclass
class Topology:
    nodes: int
    pods: int
    clusters: int
    egress: int
    ingress: int
    seed: int = 1
    pod_list: list[Pod] = field(default_factory=list)
    node_egress: list[list[str]] = field(default_factory=list)  # node index -> target clusters
    node_ingress: list[list[str]] = field(default_factory=list)  # node index -> rbacallowcluster of each
    _serial: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.egress <= self.clusters:
            raise ValueError(f"egress listeners per node ({self.egress}) must be 1..clusters ({self.clusters})")
        if LISTEN_PORT0 + self.nodes * (self.egress + self.ingress) > 65535:
            raise ValueError("too many listeners for one port each: lower nodes, egress or ingress")
        rng = random.Random(self.seed)
        self.pod_list = [Pod(f"pod-{j}", self.cluster_name(j % self.clusters), self.new_ip()) for j in range(self.pods)]
        names = [self.cluster_name(c) for c in range(self.clusters)]
        for _ in range(self.nodes):
            self.node_egress.append(sorted(rng.sample(names, self.egress)))
            self.node_ingress.append([rng.choice(names) for _ in range(self.ingress)])
        self.rng = rng
        self.used = {c for names in self.node_egress + self.node_ingress for c in names}  # clusters some node uses

    @staticmethod
    def cluster_name(c: int) -> str:
        return f"svc-{c:04d}"

    @staticmethod
    def node_id(i: int) -> str:
        return f"node-{i}"

    def new_ip(self) -> str:
        ip = pod_ip(self._serial)
        self._serial += 1
        return ip

    # ---- manifests -----------------------------------------------------------------------------------------------

    def pod_file(self, root: Path, cluster: str) -> Path:
        return root / "pods" / f"{cluster}.yaml"

    def listener_objs(self, i: int) -> list[dict]:
        node, objs = self.node_id(i), []
        port = LISTEN_PORT0 + i * (self.egress + self.ingress)  # unique per node: real Envoys share one host
        for k, target in enumerate(self.node_egress[i]):
            spec = {"nodename": node, "listenport": port + k, "targetport": TARGET_PORT, "targetcluster": target}
            objs.append(_listener("EgressListener", EGRESS_API, f"{node}-out-{k}", spec))
        port += self.egress
        for k, allow in enumerate(self.node_ingress[i]):
            spec = {"nodename": node, "listenport": port + k, "targetport": LOCAL_PORT, "rbacallowcluster": allow}
            objs.append(_listener("IngressListener", INGRESS_API, f"{node}-in-{k}", spec))
        return objs

    def listener_docs(self, i: int) -> list[str]:
        return [_flat_yaml(obj) for obj in self.listener_objs(i)]

    def write(self, root: Path) -> None:
        """Write every manifest under root (pods/ and listeners/)."""
        (root / "pods").mkdir(parents=True, exist_ok=True)
        (root / "listeners").mkdir(parents=True, exist_ok=True)
        by_cluster: dict[str, list[Pod]] = {}
        for pod in self.pod_list:
            by_cluster.setdefault(pod.cluster, []).append(pod)
        for cluster, pods in by_cluster.items():
            self.pod_file(root, cluster).write_text("---\n".join(p.doc() for p in pods))
        for start in range(0, self.nodes, NODES_PER_FILE):
            docs = [doc for i in range(start, min(self.nodes, start + NODES_PER_FILE)) for doc in self.listener_docs(i)]
            (root / "listeners" / f"nodes-{start // NODES_PER_FILE:04d}.yaml").write_text("---\n".join(docs))

    def rewrite_pod_files(self, root: Path, clusters: Iterable[str], scratch: Path) -> float:
        """Rewrite these clusters' pod files, each atomically (written outside the watched tree, then renamed).

        The files are prepared first and renamed in together; returns time.monotonic() just before the first rename:
        the moment the change is written, for the watcher."""
        wanted = set(clusters)
        texts: dict[str, list[str]] = {cluster: [] for cluster in sorted(wanted)}
        for pod in self.pod_list:
            if pod.cluster in wanted:
                texts[pod.cluster].append(pod.doc())
        for cluster, docs in texts.items():
            (scratch / f"{cluster}.yaml.tmp").write_text("---\n".join(docs))
        written = time.monotonic()
        for cluster in texts:
            os.replace(scratch / f"{cluster}.yaml.tmp", self.pod_file(root, cluster))
        return written

    # ---- changes -------------------------------------------------------------------------------------------------

    def change_one_pod(self) -> Pod:
        """A pod of a cluster some node uses comes back with a new IP (recreated under the same name): one endpoint
        out, one in. (A pod of a cluster nobody uses touches no node: nothing to measure.)"""
        pod = self.rng.choice([p for p in self.pod_list if p.cluster in self.used])
        pod.ip = self.new_ip()
        return pod

    def rollout(self, fraction: float) -> list[Pod]:
        """Replace a fraction of the pods (new names, new IPs, same clusters), as a rolling update would."""
        count = max(1, round(len(self.pod_list) * fraction))
        chosen = self.rng.sample(range(len(self.pod_list)), count)
        replaced = []
        for index in chosen:
            old = self.pod_list[index]
            self.pod_list[index] = Pod(f"{old.name}-r{self._serial}", old.cluster, self.new_ip())
            replaced.append(old)
        return replaced


def _listener(kind: str, api: str, name: str, spec: dict) -> dict:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _flat_yaml(obj: dict, indent: str = "") -> str:
    """YAML for nested dicts of scalars (listeners): quick, and enough for what the benchmark writes."""
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:\n{_flat_yaml(value, indent + '  ')}")
        else:
            lines.append(f"{indent}{key}: {value}\n")
    return "".join(lines)


class Expected:
    """What the control plane should serve, computed with its own translation code from the same objects."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.world = World()
        objects = [parse_object(p.obj()) for p in topology.pod_list]
        objects += [parse_object(d) for i in range(topology.nodes) for d in topology.listener_objs(i)]
        self.world.replace(MANIFEST_SOURCE, objects)
        self.world.take_dirty()
        self.versions: dict[str, dict[str, str]] = {}  # node -> short type -> version
        for i in range(topology.nodes):
            node = topology.node_id(i)
            self.versions[node] = self._versions(node)

    def _versions(self, node: str) -> dict[str, str]:
        snapshot = Snapshot.build(node_resources(self.world, node, ADDRESSES))
        return {SHORT[t]: snapshot.version(t) for t in (CLUSTER, ENDPOINT, LISTENER)}

    def update(self) -> dict[str, dict[str, str]]:
        """After the topology's pods changed: re-sync the world and return {node: {type: new version}} for the nodes
        whose config changed (only the types that changed)."""
        self.world.replace(MANIFEST_SOURCE, [parse_object(p.obj()) for p in self.topology.pod_list], kinds=["Pod"])
        dirty, _ = self.world.take_dirty()
        changed: dict[str, dict[str, str]] = {}
        for node in dirty:
            new = self._versions(node)
            diff = {t: v for t, v in new.items() if self.versions[node].get(t) != v}
            self.versions[node] = new
            if diff:
                changed[node] = diff
        return changed

    def endpoints(self, cluster: str) -> list[str]:
        """The "ip:port" endpoints Envoy should hold for an egress cluster targeting this Envoy cluster name."""
        return [f"{ip}:{TARGET_PORT}" for ip in self.world.endpoints(cluster)]
