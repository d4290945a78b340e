"""The README's Kubernetes quick demo, as far as a machine without a cluster allows: two fake API servers stand for two
clusters, the objects of manifests/examples/ are put into them (as `kubectl apply -f manifests/examples/` would), the
control plane runs as the command `envoy-control-plane run --config config.json` with the original project's
config.json, and an Envoy bootstrapped by `envoy-control-plane bootstrap --node-id test-node` gets the listeners.

Also: the files under manifests/ agree with the code (the CRDs with the fields the parser takes, the RBAC rules with
what the source lists and watches, the deployment's config with the config loader)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoy_control_plane.config import build_config
from envoy_control_plane.model import API_VERSIONS, LISTENER_KINDS, EgressSpec, IngressSpec, parse_object
from envoy_control_plane.sources.kubernetes.reflector import RESOURCES

from .harness import free_port, http, procs, wait_until
from .harness.envoy import ENVOY_FLAGS, envoy_binary
from .harness.plane import plane_command

pytestmark = pytest.mark.timeout(60)

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NODE = "test-node"


def load_all(folder: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def scheduled(pod: dict[str, Any], ip: str) -> dict[str, Any]:
    """The pod as it is once a kubelet runs it: an IP and a Ready condition (the fake has no kubelet)."""
    status = {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
    return {**pod, "status": status}


class Processes:
    """Child processes of the demo, stopped on teardown; their logs are printed when the test failed."""

    def __init__(self) -> None:
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        proc = procs.spawn(args, log)
        self.started.append((proc, log))
        return proc


@pytest.fixture
async def processes(request: pytest.FixtureRequest) -> AsyncIterator[Processes]:
    children = Processes()
    try:
        yield children
    finally:
        failed = any(getattr(getattr(request.node, f"report_{w}", None), "failed", False) for w in ("setup", "call"))
        for proc, log in reversed(children.started):
            procs.stop(proc)
            if failed:
                print(f"---- {log.name}\n{procs.tail(log, 60)}")


async def cli(*args: str) -> str:
    """`envoy-control-plane ARGS`, without blocking the event loop the fake API servers run in."""
    child = await asyncio.create_subprocess_exec(
        plane_command(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0, err.decode()
    return out.decode()


async def test_quick_demo_with_two_clusters(tmp_path: Path, fake_clusters, processes) -> None:
    # Two clusters; `kubectl apply -f manifests/examples/` into aws, and the same app running in gcp too.
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    examples = {doc["kind"]: doc for doc in load_all(MANIFESTS / "examples")}
    assert set(examples) == {"Pod", "IngressListener", "EgressListener"}
    ingress, egress, pod = examples["IngressListener"], examples["EgressListener"], examples["Pod"]
    # The examples listen on 8080 and 9090; free ports keep the test off whatever else uses those.
    ingress["spec"]["listenport"] = free_port("0.0.0.0")  # IngressListeners bind 0.0.0.0 (the config's default)
    egress["spec"]["listenport"] = free_port()
    for doc in (ingress, egress):
        aws.kube.upsert(doc)
    aws.kube.upsert(scheduled(pod, "127.0.0.2"))
    gcp.kube.upsert(scheduled(pod, "127.0.0.3"))

    # The original project's config.json: a bare list of clusters; kubeconfig paths relative to the file.
    config = tmp_path / "config.json"
    config.write_text(json.dumps([{"name": "aws", "kubeconfig": "aws.kubeconfig"},
                                  {"name": "gcp", "kubeconfig": "gcp.kubeconfig"}]))
    xds_port, admin_port, envoy_admin = free_port(), free_port(), free_port()
    plane = processes.spawn(
        [plane_command(), "run", "--config", str(config), "--xds-port", str(xds_port), "--admin-port", str(admin_port)],
        tmp_path / "plane.log",
    )
    admin = f"http://127.0.0.1:{admin_port}"

    async def ready() -> bool:
        assert plane.poll() is None, "the control plane exited"
        return await http.reachable(admin + "/readyz")

    await wait_until(ready, 20, what="control plane /readyz (both clusters listed)")
    sources = {s["name"]: s for s in await http.get_json(admin + "/debug/sources")}
    assert set(sources) == {"aws", "gcp"}
    assert all(s["up"] and s["synced"] and not s["stale"] for s in sources.values()), sources

    # `envoy-control-plane bootstrap --node-id test-node > envoy.yaml && envoy -c envoy.yaml`
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(
        await cli("bootstrap", "--node-id", NODE, "--xds", f"127.0.0.1:{xds_port}", "--admin-port", str(envoy_admin))
    )
    envoy = processes.spawn([envoy_binary(), "-c", str(bootstrap), *ENVOY_FLAGS], tmp_path / "envoy.log")
    envoy_url = f"http://127.0.0.1:{envoy_admin}"

    async def listening() -> dict[str, str] | None:
        assert envoy.poll() is None, "envoy exited"
        if not await http.reachable(envoy_url + "/ready"):
            return None
        listeners = await http.get_json(envoy_url + "/listeners?format=json")
        found = {
            status["name"]: "{address}:{port_value}".format(**status["local_address"]["socket_address"])
            for status in listeners["listener_statuses"]
        }
        return found if len(found) == 2 else None

    # `curl localhost:9901/config_dump`: the listeners are bound where the objects say.
    ingress_name, egress_name = f"ingress_{ingress['metadata']['name']}", f"egress_{egress['metadata']['name']}"
    assert (ingress_name, egress_name) == ("ingress_test-ingress", "egress_test-egress")
    assert await wait_until(listening, 20, what="envoy's two listeners") == {
        ingress_name: f"0.0.0.0:{ingress['spec']['listenport']}",
        egress_name: f"127.0.0.1:{egress['spec']['listenport']}",
    }
    dump = await http.get_json(envoy_url + "/config_dump?include_eds")
    sections = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    listeners = {
        listener["name"]: listener["active_state"]["listener"]
        for listener in sections["ListenersConfigDump"]["dynamic_listeners"]
    }
    assert set(listeners) == {ingress_name, egress_name}
    clusters = {c["cluster"]["name"] for c in sections["ClustersConfigDump"]["dynamic_active_clusters"]}
    assert clusters == {f"{ingress_name}_cluster", f"{egress_name}_cluster"}

    # The app's pods in both clusters: the egress balances over both, on the targetport; the ingress admits both.
    assignment_name = f"{egress['spec']['targetcluster']}:{egress['spec']['targetport']}"  # test-cluster:8080
    [endpoint_config] = [
        c["endpoint_config"]
        for c in sections["EndpointsConfigDump"]["dynamic_endpoint_configs"]
        if c["endpoint_config"]["cluster_name"] == assignment_name
    ]
    hosts = sorted(
        "{address}:{port_value}".format(**lb["endpoint"]["address"]["socket_address"])
        for group in endpoint_config["endpoints"]
        for lb in group["lb_endpoints"]
    )
    assert hosts == ["127.0.0.2:8080", "127.0.0.3:8080"]
    [chain] = listeners[ingress_name]["filter_chains"]
    assert [f["name"] for f in chain["filters"]] == ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
    prefixes = sorted(r["address_prefix"] for r in chain["filter_chain_match"]["source_prefix_ranges"])
    assert prefixes == ["127.0.0.2", "127.0.0.3"]


# ---- manifests/ agrees with the code ---------------------------------------------------------------------------------


def test_the_crds_describe_what_the_control_plane_reads() -> None:
    crds = {doc["spec"]["names"]["kind"]: doc for doc in load_all(MANIFESTS / "crds") if doc["kind"] != "Kustomization"}
    specs = {"IngressListener": IngressSpec, "EgressListener": EgressSpec}
    assert set(crds) == set(specs)
    plurals = {r.kind: r.plural for r in RESOURCES}
    kustomization = yaml.safe_load((MANIFESTS / "crds" / "Kustomization").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in (MANIFESTS / "crds").glob("*listener.yaml"))
    for kind, crd in crds.items():
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
        spec = crd["spec"]
        [version] = spec["versions"]
        assert f"{spec['group']}/{version['name']}" == API_VERSIONS[kind]
        assert spec["names"]["plural"] == plurals[kind]
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        assert spec["scope"] == "Namespaced" and version["served"] and version["storage"]
        schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        model = specs[kind]
        assert set(schema["properties"]) == set(model.model_fields), kind
        assert set(schema["required"]) == {n for n, f in model.model_fields.items() if f.is_required()}, kind


def test_the_examples_parse_and_fit_their_crds() -> None:
    crds = {doc["spec"]["names"]["kind"]: doc for doc in load_all(MANIFESTS / "crds") if doc["kind"] != "Kustomization"}
    examples = load_all(MANIFESTS / "examples")
    for doc in examples:
        parsed = parse_object(doc)
        assert parsed is not None, doc
        if doc["kind"] in crds:
            schema = crds[doc["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            assert set(schema["required"]) <= set(doc["spec"]) <= set(schema["properties"]), doc
    pods = [parse_object(doc) for doc in examples if doc["kind"] == "Pod"]
    listeners = [doc for doc in examples if doc["kind"] != "Pod"]
    assert {p.cluster_name for p in pods} == {"test-cluster"}  # type: ignore[union-attr]
    assert {d["spec"]["nodename"] for d in listeners} == {NODE}
    assert {d["spec"].get("targetcluster") or d["spec"].get("rbacallowcluster") for d in listeners} == {"test-cluster"}


def test_the_deployment_is_consistent_with_the_code() -> None:
    deploy = MANIFESTS / "deploy"
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for doc in load_all(deploy) if doc["kind"] != "Kustomization"}
    kustomization = yaml.safe_load((deploy / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        ["../crds", *(p.name for p in deploy.glob("*.yaml") if p.name != "kustomization.yaml")]
    )

    # The ConfigMap's config loads, and watches the cluster it runs in with in-cluster credentials.
    config_map = docs[("ConfigMap", "envoy-control-plane")]
    config = build_config(yaml.safe_load(config_map["data"]["config.yaml"]), source="configmap")
    assert [(c.name, c.kubeconfig) for c in config.clusters] == [("local", None)]

    # RBAC reads every kind the source lists and watches; it writes only what the status writer writes.
    rules = docs[("ClusterRole", "envoy-control-plane")]["rules"]
    granted = {(group, resource): set(rule["verbs"]) for rule in rules
               for group in rule["apiGroups"] for resource in rule["resources"]}
    wanted = {(r.api_version.rpartition("/")[0], r.plural) for r in RESOURCES}
    assert {key for key, verbs in granted.items() if verbs == {"get", "list", "watch"}} == wanted
    written = {key: verbs for key, verbs in granted.items() if key not in wanted}
    listeners = {(r.api_version.rpartition("/")[0], f"{r.plural}/status") for r in RESOURCES if r.kind in LISTENER_KINDS}
    assert written == {**{key: {"get", "patch"} for key in listeners}, ("", "events"): {"create"}}
    lease = docs[("Role", "envoy-control-plane-lease")]
    assert lease["rules"][0]["resources"] == ["leases"] and lease["metadata"]["namespace"] == "envoy-control-plane"

    # The pod serves on the config's ports, probed on the admin port: /readyz waits for the first lists.
    [container] = docs[("Deployment", "envoy-control-plane")]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"xds": config.xds.port, "admin": config.admin.port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    # Liveness waits for the start: xDS is served after the first loads or initial_sync_timeout_s, well within it.
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3 * config.xds.initial_sync_timeout_s
    # The root filesystem is read-only: /tmp is an emptyDir.
    pod_spec = docs[("Deployment", "envoy-control-plane")]["spec"]["template"]["spec"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in pod_spec["volumes"]}[mounts["/tmp"]]
    assert container["args"] == ["run", "--config", "/etc/envoy-control-plane/config.yaml"]
    # Highly available: two replicas spread over nodes, a disruption budget that keeps one, and a Service that
    # carries xDS only (the admin port is probed and scraped per pod; /debug/* answers loopback only).
    deployment = docs[("Deployment", "envoy-control-plane")]
    assert deployment["spec"]["replicas"] >= 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    anti = pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    budget = docs[("PodDisruptionBudget", "envoy-control-plane")]["spec"]
    assert budget["selector"]["matchLabels"] == selector and budget["minAvailable"] == 1
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys() and "memory" in container["resources"]["limits"]
    service = docs[("Service", "envoy-control-plane")]["spec"]
    assert [p["targetPort"] for p in service["ports"]] == ["xds"] and service["selector"] == selector
    assert not config.admin.debug_remote
    assert docs[("Deployment", "envoy-control-plane")]["spec"]["template"]["spec"]["serviceAccountName"] == (
        docs[("ClusterRoleBinding", "envoy-control-plane")]["subjects"][0]["name"]
    )
