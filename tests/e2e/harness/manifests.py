"""Kubernetes-style objects as the control plane reads them, and a watched directory to write them into.

Files are replaced atomically (written beside the directory, then renamed in), so the control plane never reads a
half-written file: a test that edits a manifest sees exactly one reload with the new content.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import yaml

from envoy_control_plane.model import API_VERSIONS, CLUSTER_NAME_ANNOTATION

_serial = itertools.count()


def pod(
    name: str,
    ip: str,
    cluster: str,
    *,
    ready: bool = True,
    terminating: bool = False,
    namespace: str = "default",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": {CLUSTER_NAME_ANNOTATION: cluster}}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": API_VERSIONS["Pod"],
        "kind": "Pod",
        "metadata": meta,
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def ingress(
    name: str, node: str, listenport: int, targetport: int, rbacallowcluster: str | None = None, **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodename": node, "listenport": listenport, "targetport": targetport}
    if rbacallowcluster is not None:
        spec["rbacallowcluster"] = rbacallowcluster
    return _listener("IngressListener", name, {**spec, **extra})


def egress(name: str, node: str, listenport: int, targetport: int, targetcluster: str, **extra: Any) -> dict[str, Any]:
    spec = {"nodename": node, "listenport": listenport, "targetport": targetport, "targetcluster": targetcluster}
    return _listener("EgressListener", name, {**spec, **extra})


def _listener(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in spec.items() if v is not None}  # `targetport=None` drops the field
    meta = {"name": name, "namespace": "default"}
    return {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": meta, "spec": spec}


class ManifestDir:
    """The directory the control plane watches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self._staging = path.parent / f".{path.name}-staging"
        self._staging.mkdir(exist_ok=True)

    def write(self, filename: str, *docs: dict[str, Any]) -> Path:
        """Replace `filename` with these documents (a multi-document YAML file)."""
        return self.write_text(filename, yaml.safe_dump_all(list(docs), sort_keys=False))

    def write_text(self, filename: str, text: str) -> Path:
        target = self.path / filename
        staged = self._staging / f"{next(_serial)}-{filename}"
        staged.write_text(text)
        os.replace(staged, target)
        return target

    def remove(self, filename: str) -> None:
        (self.path / filename).unlink()


def configmap_update(directory: Path, version: str, files: dict[str, str]) -> None:
    """Make `directory` hold exactly `files` the way the kubelet updates a ConfigMap volume: a new `..<version>`
    directory, the `..data` symlink swapped to it in one rename, symlinks `name -> ..data/name` for new keys, the
    removed keys' symlinks deleted, then the old version."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    (directory / version).mkdir()
    for name, text in files.items():
        (directory / version / name).write_text(text)
    os.symlink(version, directory / "..data_tmp")
    os.rename(directory / "..data_tmp", data)
    for name in files:
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)
    for entry in os.listdir(directory):
        if not entry.startswith(".") and entry not in files:
            os.unlink(directory / entry)
    if old:
        for name in os.listdir(directory / old):
            os.unlink(directory / old / name)
        os.rmdir(directory / old)


def write_egress_and_ingress(
    manifests: ManifestDir, pod_port: int, app_port: int, egress_port: int, ingress_port: int
) -> None:
    """Node node-a with two listeners in files of their own: egress_backends (to pod `a`, 127.0.0.2, on `pod_port`;
    pods.yaml, egress.yaml) and ingress_app (to `app_port`, admitting the pods of `backends`; ingress.yaml)."""
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"))
    manifests.write("egress.yaml", egress("backends", "node-a", egress_port, pod_port, "backends"))
    manifests.write("ingress.yaml", ingress("app", "node-a", ingress_port, app_port, rbacallowcluster="backends"))


def write_two_pods_egress_and_ingress(
    manifests: ManifestDir, pod_port: int, app_port: int, egress_port: int, ingress_port: int
) -> None:
    """Node node-a's listeners in one file: egress_backends (to pods `a`, 127.0.0.2, and `b`, 127.0.0.3, on
    `pod_port`; pods.yaml) and ingress_app (to `app_port`, admitting the pods of `backends`; listeners.yaml)."""
    manifests.write("pods.yaml", pod("a", "127.0.0.2", "backends"), pod("b", "127.0.0.3", "backends"))
    manifests.write(
        "listeners.yaml",
        egress("backends", "node-a", egress_port, pod_port, "backends"),
        ingress("app", "node-a", ingress_port, app_port, rbacallowcluster="backends"),
    )
