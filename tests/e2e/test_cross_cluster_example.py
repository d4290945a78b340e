"""examples/cross-cluster: each overlay builds with `kubectl kustomize` into what the README describes, its Envoy
bootstrap is what `envoy-control-plane bootstrap` prints now, and run.py shows traffic crossing between the two
clusters (two fake API servers, two control planes, two real Envoys) and refused by RBAC, then stops everything."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoy_control_plane.config import build_config
from envoy_control_plane.model import CLUSTER_NAME_ANNOTATION, parse_object

from .harness.plane import plane_command

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cross-cluster"
SIDES = {"a": "b", "b": "a"}
XDS = "envoy-control-plane.envoy-control-plane.svc:18000"


def build(side: str) -> dict[tuple[str, str], dict[str, Any]]:
    """`kubectl kustomize cluster-<side>`, by (kind, name)."""
    out = subprocess.run(["kubectl", "kustomize", str(EXAMPLE / f"cluster-{side}")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(out.stdout) if doc}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("side", sorted(SIDES))
def test_each_overlay_builds_into_the_topology(side: str, tmp_path: Path) -> None:
    other = SIDES[side]
    objects = build(side)
    assert not [key for key in objects if key[0] == "Pod"]  # the quick demo's bare Pod gave way to the Deployment

    # The control plane: its config lists both clusters, the other one pods only, through the mounted Secret.
    plane = objects[("Deployment", "envoy-control-plane")]["spec"]["template"]["spec"]
    assert {"name": "remote-kubeconfig", "secret": {"secretName": "remote-kubeconfig"}} in plane["volumes"]
    mounts = {m["name"]: m["mountPath"] for m in plane["containers"][0]["volumeMounts"]}
    raw = yaml.safe_load(objects[("ConfigMap", "envoy-control-plane")]["data"]["config.yaml"])
    remote = raw["clusters"][1]["kubeconfig"]
    assert Path(remote).parent == Path(mounts["remote-kubeconfig"])
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    raw["clusters"][1]["kubeconfig"] = str(tmp_path / "kubeconfig")
    raw["state_dir"] = str(tmp_path)
    config = build_config(raw)
    assert [(c.name, c.kubeconfig is None, c.listenersource) for c in config.clusters] == [
        (f"cluster-{side}", True, True), (f"cluster-{other}", False, False)]

    # The app: pods of app-<side>, with a sidecar bootstrapped from the generated ConfigMap.
    app = objects[("Deployment", "test-app")]
    assert app["metadata"]["namespace"] == "demo"
    template = app["spec"]["template"]
    assert template["metadata"]["annotations"][CLUSTER_NAME_ANNOTATION] == f"app-{side}"
    bootstrap_map = next(v["configMap"]["name"] for v in template["spec"]["volumes"] if v["name"] == "envoy-bootstrap")
    bootstrap = yaml.safe_load(objects[("ConfigMap", bootstrap_map)]["data"]["envoy.yaml"])
    assert bootstrap["node"]["id"] == f"node-{side}"

    # The quick demo's listeners, for that node: calling app-<other>, admitting only app-<other>.
    egress = parse_object(objects[("EgressListener", "test-egress")])
    ingress = parse_object(objects[("IngressListener", "test-ingress")])
    assert (egress.ref.namespace, egress.spec.nodename, egress.spec.targetcluster) == ("demo", f"node-{side}",
                                                                                       f"app-{other}")
    assert (ingress.spec.nodename, ingress.spec.allow_cluster) == (f"node-{side}", f"app-{other}")
    assert (egress.spec.listenport, egress.spec.targetport) == (9090, ingress.spec.listenport)


@pytest.mark.parametrize("side", sorted(SIDES))
def test_the_committed_bootstrap_is_what_the_cli_prints(side: str) -> None:
    printed = subprocess.run([plane_command(), "bootstrap", "--node-id", f"node-{side}", "--xds", XDS],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    committed = (EXAMPLE / f"cluster-{side}" / "envoy-bootstrap.yaml").read_text()
    assert committed == printed, f"regenerate cluster-{side}/envoy-bootstrap.yaml (see its kustomization.yaml)"


@pytest.mark.timeout(150)
def test_run_py_shows_traffic_crossing_the_clusters() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE / "run.py"), "--once"], capture_output=True, text=True,
                         timeout=120)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "UNEXPECTED" not in out.stdout

    def line(start: str) -> str:
        return next(text for text in lines if text.startswith("==> " + start))

    assert line("pod 127.0.0.2 (app-a, cluster-a) -> node-a egress").endswith(
        "-> pods of app-b -> node-b ingress: answered by the app of cluster-b (pod 127.0.0.3)")
    assert line("pod 127.0.0.3 (app-b, cluster-b) -> node-b egress").endswith(
        "answered by the app of cluster-a (pod 127.0.0.2)")
    assert line("127.0.0.9 (no pod of either cluster) -> node-b ingress").endswith("refused (RBAC)")
    assert line("127.0.0.3 (a pod of app-b itself) -> node-b ingress").endswith("refused (RBAC)")
    assert line("control plane of cluster-a watches:").endswith(
        "cluster-a: EgressListener, IngressListener, Pod, Secret; cluster-b: Pod")
    assert lines[-1] == "==> stopping everything"
