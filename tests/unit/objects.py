"""Builders for Kubernetes-style test objects, shared by the unit tests."""

from __future__ import annotations

from typing import Any

from envoy_control_plane.model import (
    CLUSTER_NAME_ANNOTATION,
    EgressListener,
    IngressListener,
    Pod,
    parse_object,
)


def pod_doc(name: str, cluster: str | None, ip: str | None, ready: bool = True, terminating: bool = False) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if cluster:
        meta["annotations"] = {CLUSTER_NAME_ANNOTATION: cluster}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def pod(name: str, cluster: str | None, ip: str | None, **kw: Any) -> Pod:
    obj = parse_object(pod_doc(name, cluster, ip, **kw))
    assert isinstance(obj, Pod)
    return obj


def ingress_doc(
    name: str, node: str, listen: int, target: int, allow: str | None = None, spec_extra: dict | None = None, **meta: Any
) -> dict:
    spec: dict[str, Any] = {"nodename": node, "listenport": listen, "targetport": target, **(spec_extra or {})}
    if allow is not None:
        spec["rbacallowcluster"] = allow
    return {
        "apiVersion": "ingresslistener.envoy.uw.systems/v1alpha1",
        "kind": "IngressListener",
        "metadata": {"name": name, "namespace": "default", **meta},
        "spec": spec,
    }


def egress_doc(
    name: str, node: str, listen: int, target: int, cluster: str, spec_extra: dict | None = None, **meta: Any
) -> dict:
    return {
        "apiVersion": "egresslistener.envoy.uw.systems/v1alpha1",
        "kind": "EgressListener",
        "metadata": {"name": name, "namespace": "default", **meta},
        "spec": {
            "nodename": node, "listenport": listen, "targetport": target, "targetcluster": cluster, **(spec_extra or {})
        },
    }


def ingress(*args: Any, **kw: Any) -> IngressListener:
    obj = parse_object(ingress_doc(*args, **kw))
    assert isinstance(obj, IngressListener)
    return obj


def egress(*args: Any, **kw: Any) -> EgressListener:
    obj = parse_object(egress_doc(*args, **kw))
    assert isinstance(obj, EgressListener)
    return obj
