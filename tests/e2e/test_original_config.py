"""The original project's settings at work: a cluster with `listenersource: false` gives its pods and nothing else
(its listeners are never even requested), and `cluster_name_annotation` names pods' Envoy clusters in every source,
Kubernetes and manifest files alike, as a real Envoy's traffic shows."""

from __future__ import annotations

from typing import Any

import pytest

from .harness import free_port, pod
from .kube_fixtures import kegress, kpod, reaches, wait_synced

pytestmark = pytest.mark.timeout(30)

ANNOTATION = "mesh.example.com/envoy-cluster"


def annotated(doc: dict[str, Any], cluster: str) -> dict[str, Any]:
    doc["metadata"]["annotations"] = {ANNOTATION: cluster}
    return doc


async def test_pods_only_cluster_and_custom_annotation(
    fake_clusters, start_kube_plane, start_envoy, backends, manifests
) -> None:
    pods = await backends({"aws-1": "127.0.0.2", "gcp-1": "127.0.0.3", "file-1": "127.0.0.4", "old": "127.0.0.5"})
    listen, ignored = free_port(), free_port()
    aws, gcp = await fake_clusters("aws"), await fake_clusters("gcp")
    aws.kube.upsert(annotated(kpod("aws-1", "127.0.0.2", "x"), "backends"))
    aws.kube.upsert(kpod("old", "127.0.0.5", "backends"))  # the default annotation means nothing now
    aws.kube.upsert(kegress("backends", "node-a", listen, pods.port, "backends"))
    gcp.kube.upsert(annotated(kpod("gcp-1", "127.0.0.3", "x"), "backends"))
    gcp.kube.upsert(kegress("from-gcp", "node-a", ignored, pods.port, "backends"))  # gcp is no listener source
    manifests.write("pods.yaml", annotated(pod("file-1", "127.0.0.4", "x"), "backends"))

    plane = await start_kube_plane(
        aws, {**gcp.config(), "listenersource": False},
        manifests=[str(manifests.path)], cluster_name_annotation=ANNOTATION,
    )
    await wait_synced(plane, "aws", "gcp")
    envoy = await start_envoy("node-a", plane.xds_port)

    await reaches(listen, {"aws-1", "gcp-1", "file-1"})
    assert set(await envoy.listeners()) == {"egress_backends"}
    sources = {s["name"]: s for s in await plane.admin.json("/debug/sources")}
    assert set(sources["gcp"]["kinds"]) == {"Pod"}
    assert set(sources["aws"]["kinds"]) == {"Pod", "IngressListener", "EgressListener", "Secret"}
    asked = {path.split("?")[0].rsplit("/", 1)[-1] for _, path in gcp.kube.requests}
    assert "pods" in asked and not asked & {"ingresslisteners", "egresslisteners", "secrets"}, asked
    assert any(path.split("?")[0].endswith("/egresslisteners") for _, path in aws.kube.requests)
