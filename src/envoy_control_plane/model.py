"""The objects the control plane understands, parsed from Kubernetes-style dicts.

Three kinds matter: Pods (endpoints, by their `cluster-name.envoy.uw.io` annotation), IngressListeners and
EgressListeners (custom resources, exactly as the original project defined them). Parsing never raises anything but
`ObjectError`, whose message names the object and the field, so one bad object can be reported and skipped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CLUSTER_NAME_ANNOTATION = "cluster-name.envoy.uw.io"
INGRESS_GROUP = "ingresslistener.envoy.uw.systems"
EGRESS_GROUP = "egresslistener.envoy.uw.systems"
CRD_VERSION = "v1alpha1"

Kind = Literal["Pod", "IngressListener", "EgressListener"]
KINDS: tuple[Kind, ...] = ("Pod", "IngressListener", "EgressListener")
LISTENER_KINDS: tuple[Kind, ...] = ("IngressListener", "EgressListener")
API_VERSIONS: dict[str, str] = {
    "Pod": "v1",
    "IngressListener": f"{INGRESS_GROUP}/{CRD_VERSION}",
    "EgressListener": f"{EGRESS_GROUP}/{CRD_VERSION}",
}


class ObjectError(ValueError):
    """A Kubernetes object we cannot use; the message names the object and the field."""

    def __init__(self, ref: str, field: str, problem: str) -> None:
        self.ref, self.field, self.problem = ref, field, problem
        super().__init__(f"{ref}: {field}: {problem}" if field else f"{ref}: {problem}")


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identifies one object within one source (a Kubernetes cluster or a manifest set)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Pod:
    ref: ObjectRef
    cluster_name: str | None
    ip: str | None
    ready: bool
    terminating: bool

    @property
    def is_endpoint(self) -> bool:
        """Only a pod that can take traffic is an endpoint: annotated, with an IP, Ready and not terminating."""
        return bool(self.cluster_name and self.ip and self.ready and not self.terminating)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodename: str = Field(min_length=1)
    listenport: int = Field(ge=1, le=65535)
    targetport: int = Field(ge=1, le=65535)


class IngressSpec(_Spec):
    rbacallowcluster: str | None = None


class EgressSpec(_Spec):
    targetcluster: str = Field(min_length=1)


@dataclass(frozen=True)
class IngressListener:
    ref: ObjectRef
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text); "" when absent
    spec: IngressSpec
    generation: int = 0  # metadata.generation: the spec version status conditions report (observedGeneration)


@dataclass(frozen=True)
class EgressListener:
    ref: ObjectRef
    created: str
    spec: EgressSpec
    generation: int = 0


Listener = IngressListener | EgressListener
KubeObject = Pod | IngressListener | EgressListener


def parse_object(doc: Any, default_namespace: str = "default") -> KubeObject | None:
    """Parse one Kubernetes-style object. Returns None for kinds we do not use; raises ObjectError when it is bad."""
    if not isinstance(doc, dict):
        raise ObjectError("document", "", f"expected a mapping, got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind not in KINDS:
        return None
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ObjectError(f"{kind} (unnamed)", "metadata.name", "is required")
    namespace = meta.get("namespace") or default_namespace
    ref = ObjectRef(kind, str(namespace), meta["name"])
    api_version = doc.get("apiVersion")
    if api_version != API_VERSIONS[kind]:
        raise ObjectError(str(ref), "apiVersion", f"expected {API_VERSIONS[kind]!r}, got {api_version!r}")
    if kind == "Pod":
        return _parse_pod(ref, meta, doc.get("status") or {})
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ObjectError(str(ref), "spec", "is required")
    created = str(meta.get("creationTimestamp") or "")
    generation = generation_of(meta)
    if kind == "IngressListener":
        return IngressListener(ref, created, _validate(IngressSpec, ref, spec), generation)
    return EgressListener(ref, created, _validate(EgressSpec, ref, spec), generation)


def generation_of(meta: dict[str, Any]) -> int:
    """metadata.generation when it is a sane integer (Kubernetes sets it; manifests rarely do), else 0."""
    generation = meta.get("generation")
    return generation if isinstance(generation, int) and not isinstance(generation, bool) and 0 <= generation < 2**63 else 0


def _validate(model: type[_Spec], ref: ObjectRef, spec: dict[str, Any]) -> Any:
    try:
        return model.model_validate(spec)
    except ValidationError as e:
        first = e.errors()[0]
        field = "spec." + ".".join(str(p) for p in first["loc"])
        problem = first["msg"] if "input" not in first else f"{first['msg']} (got {first['input']!r})"
        raise ObjectError(str(ref), field, problem) from None


def _parse_pod(ref: ObjectRef, meta: dict[str, Any], status: dict[str, Any]) -> Pod:
    annotations = meta.get("annotations") or {}
    cluster_name = annotations.get(CLUSTER_NAME_ANNOTATION) or None
    ip = status.get("podIP") or None
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ObjectError(str(ref), "status.podIP", f"not an IP address: {ip!r}") from None
    return Pod(
        ref=ref,
        cluster_name=cluster_name,
        ip=ip,
        ready=_is_ready(status),
        terminating=bool(meta.get("deletionTimestamp")),
    )


def _is_ready(status: dict[str, Any]) -> bool:
    """The Ready condition decides; a pod without conditions (a hand-written manifest) counts as ready."""
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return str(condition.get("status")) == "True"
    return True
