"""The Kubernetes manifests under manifests/: well-formed, consistent with each other and with our own parsers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from envoy_control_plane.config import build_config
from envoy_control_plane.model import EgressListener, IngressListener, Pod, parse_object

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
READ_ONLY = {"get", "list", "watch"}


def documents(directory: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((MANIFESTS / directory).glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def one(directory: str, kind: str) -> dict[str, Any]:
    [found] = [doc for doc in documents(directory) if doc["kind"] == kind]
    return found


def crd(plural: str) -> dict[str, Any]:
    [found] = [doc for doc in documents("crds") if doc.get("spec", {}).get("names", {}).get("plural") == plural]
    return found


def test_every_yaml_file_parses_into_objects_with_kind_and_api_version() -> None:
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert files
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path
            assert doc["kind"] == "Kustomization" or doc["metadata"]["name"], path


@pytest.mark.parametrize(("plural", "group", "kind", "required", "optional", "columns"), [
    ("ingresslisteners", "ingresslistener.envoy.uw.systems", "IngressListener",
     ["nodename", "listenport", "targetport"], ["rbacallowcluster", "rbac", "tls", "layer"],
     ["RBAC allow cluster", "RBAC cluster", "TLS secret", "Layer"]),
    ("egresslisteners", "egresslistener.envoy.uw.systems", "EgressListener",
     ["nodename", "listenport", "targetport", "targetcluster"], ["tls", "layer", "healthcheck", "outlierDetection"],
     ["Target cluster", "TLS secret", "Layer"]),
])
def test_crd(plural: str, group: str, kind: str, required: list[str], optional: list[str], columns: list[str]) -> None:
    doc = crd(plural)
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == f"{plural}.{group}"
    spec = doc["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == (group, "Namespaced", kind)
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    status = schema["status"]["properties"]
    assert status["endpoints"]["type"] == "integer"
    condition = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"} <= condition.keys()
    fields = schema["spec"]["properties"]
    assert schema["spec"]["required"] == required
    assert sorted(fields) == sorted(required + optional)
    for port in ("listenport", "targetport"):
        assert (fields[port]["type"], fields[port]["minimum"], fields[port]["maximum"]) == ("integer", 1, 65535)
    for name in ["nodename", *required[3:], *optional]:
        objects = {"rbac": "object", "tls": "object", "healthcheck": "object", "outlierDetection": "object"}
        assert fields[name]["type"] == objects.get(name, "string")
    assert fields["layer"]["enum"] == ["tcp", "http"]
    assert fields["tls"]["required"] == ["secret"]
    printed = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(printed) == ["Node", "Listen port", "Target port", *columns, "Accepted", "Programmed", "Endpoints",
                             "Age"]
    assert printed["Age"] == ".metadata.creationTimestamp"
    assert printed["Accepted"] == '.status.conditions[?(@.type=="Accepted")].status'
    assert printed["Programmed"] == '.status.conditions[?(@.type=="Programmed")].status'
    assert printed["Endpoints"] == ".status.endpoints"
    for name, path in printed.items():
        assert path.startswith((".metadata.", ".status.")) or path.removeprefix(".spec.").split(".")[0] in fields


def test_examples_parse_with_our_model() -> None:
    parsed = [parse_object(doc) for doc in documents("examples")]
    [pod] = [o for o in parsed if isinstance(o, Pod)]
    [ingress] = [o for o in parsed if isinstance(o, IngressListener)]
    [egress] = [o for o in parsed if isinstance(o, EgressListener)]
    assert (pod.ref.name, pod.cluster_name) == ("test-app", "test-cluster")
    assert ingress.spec.model_dump(exclude_defaults=True) == {
        "nodename": "test-node", "listenport": 8080, "targetport": 8081, "rbacallowcluster": "test-cluster",
    }
    assert egress.spec.model_dump(exclude_defaults=True) == {
        "nodename": "test-node", "listenport": 9090, "targetport": 8080, "targetcluster": "test-cluster",
    }


def test_cluster_role_reads_what_the_control_plane_watches_and_writes_only_status_and_events() -> None:
    rules = one("deploy", "ClusterRole")["rules"]
    granted = {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    reads = {(g, r) for g, r, v in granted if v in READ_ONLY and not r.endswith("/status")}
    assert reads == {
        ("", "pods"),
        ("", "secrets"),
        ("ingresslistener.envoy.uw.systems", "ingresslisteners"),
        ("egresslistener.envoy.uw.systems", "egresslisteners"),
    }
    assert {(g, r, v) for g, r, v in granted if v not in READ_ONLY} == {
        ("ingresslistener.envoy.uw.systems", "ingresslisteners/status", "patch"),
        ("egresslistener.envoy.uw.systems", "egresslisteners/status", "patch"),
        ("", "events", "create"),
    }


def test_the_lease_role_lives_in_the_control_planes_namespace() -> None:
    role, binding = one("deploy", "Role"), one("deploy", "RoleBinding")
    namespace = one("deploy", "Namespace")["metadata"]["name"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": one("deploy", "ServiceAccount")["metadata"]["name"],
                                    "namespace": namespace}]


def test_binding_ties_the_role_to_the_deployments_service_account() -> None:
    binding, account = one("deploy", "ClusterRoleBinding"), one("deploy", "ServiceAccount")
    role = one("deploy", "ClusterRole")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    namespace = one("deploy", "Namespace")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": namespace}]
    pod_spec = one("deploy", "Deployment")["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == account["metadata"]["name"]


KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")  # what kustomize looks for


def kustomization_of(directory: Path) -> Path | None:
    return next((directory / n for n in KUSTOMIZATION_NAMES if (directory / n).is_file()), None)


@pytest.mark.parametrize("directory", ["crds", "deploy"])
def test_kustomization_lists_exactly_the_files_there(directory: str) -> None:
    path = kustomization_of(MANIFESTS / directory)
    assert path is not None
    listed = yaml.safe_load(path.read_text())["resources"]
    for entry in listed:
        target = MANIFESTS / directory / entry
        assert target.is_file() or kustomization_of(target) is not None, entry
    present = {p.name for p in (MANIFESTS / directory).glob("*.yaml")} - {path.name}
    assert present <= set(listed)


def test_kubectl_apply_f_on_the_crds_folder_reads_only_crds() -> None:
    """`kubectl apply -f manifests/crds/` reads every .yaml/.yml/.json file there: its kustomization is named
    `Kustomization`, which kustomize (`-k`, and deploy's `../crds`) finds and `-f` skips."""
    files = [p for p in (MANIFESTS / "crds").iterdir() if p.suffix in (".yaml", ".yml", ".json")]
    kinds = {doc["kind"] for p in files for doc in yaml.safe_load_all(p.read_text()) if doc}
    assert kinds == {"CustomResourceDefinition"} and len(files) == 2


def test_config_map_holds_a_valid_config_for_the_local_cluster() -> None:
    raw = yaml.safe_load(one("deploy", "ConfigMap")["data"]["config.yaml"])
    assert raw == {
        "xds": {"address": "0.0.0.0", "port": 18000},
        "admin": {"address": "0.0.0.0", "port": 18001},
        "state_dir": "/var/lib/envoy-control-plane",
        "clusters": [{"name": "local"}],
    }
    config = build_config(raw)
    assert [(c.name, c.kubeconfig) for c in config.clusters] == [("local", None)]


def test_deployment_runs_the_config_from_the_config_map_and_probes_admin() -> None:
    deployment, config_map = one("deploy", "Deployment"), one("deploy", "ConfigMap")
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    [container] = template["spec"]["containers"]
    command = container["command"] + container["args"]
    assert command[:3] == ["envoy-control-plane", "run", "--config"]
    [mount] = [m for m in container["volumeMounts"] if Path(command[3]).parent == Path(m["mountPath"])]
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    # state_dir on a writable volume of the pod's own (the root filesystem is read-only)
    state_dir = yaml.safe_load(config_map["data"]["config.yaml"])["state_dir"]
    [state] = [m for m in container["volumeMounts"] if m["mountPath"] == state_dir]
    assert not state.get("readOnly")
    assert [v for v in template["spec"]["volumes"] if v["name"] == state["name"]][0]["emptyDir"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"xds": 18000, "admin": 18001}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == 18001


def test_service_exposes_only_xds_of_the_deployments_pods() -> None:
    """The admin port is probed and scraped per pod; through the Service, /debug/* would reach any node's config."""
    service, deployment = one("deploy", "Service"), one("deploy", "Deployment")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["port"]: (p["targetPort"], p.get("appProtocol")) for p in service["spec"]["ports"]}
    assert ports == {18000: ("xds", "grpc")}


def test_namespaced_objects_live_in_the_control_plane_namespace() -> None:
    namespace = one("deploy", "Namespace")["metadata"]["name"]
    kustomization = yaml.safe_load((MANIFESTS / "deploy" / "kustomization.yaml").read_text())
    assert namespace == kustomization["namespace"] == "envoy-control-plane"
    for doc in documents("deploy"):
        if doc["kind"] in ("ServiceAccount", "ConfigMap", "Deployment", "Service"):
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]
