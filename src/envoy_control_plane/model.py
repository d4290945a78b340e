"""The objects the control plane understands, parsed from Kubernetes-style dicts.

Three kinds matter: Pods (endpoints, by their `cluster-name.envoy.uw.io` annotation), IngressListeners and
EgressListeners (custom resources, exactly as the original project defined them). Parsing never raises anything but
`ObjectError`, whose message names the object and the field, so one bad object can be reported and skipped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .text import quote

CLUSTER_NAME_ANNOTATION = "cluster-name.envoy.uw.io"
INGRESS_GROUP = "ingresslistener.envoy.uw.systems"
EGRESS_GROUP = "egresslistener.envoy.uw.systems"
CRD_VERSION = "v1alpha1"

Kind = Literal["Pod", "IngressListener", "EgressListener"]
KINDS: tuple[Kind, ...] = ("Pod", "IngressListener", "EgressListener")
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


class UnnamedError(ObjectError):
    """An object without a usable identity (no mapping, no valid name or namespace): which object it is, is unknown."""


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


# The CRD schema's types, strictly: an integer port is an integer ("80", 80.0 and true are not), a name a string.
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Name = Annotated[str, Field(strict=True, min_length=1)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodename: Name
    listenport: Port
    targetport: Port


class IngressSpec(_Spec):
    # None (absent) admits every peer; "" is invalid, so a templating gap cannot open the listener.
    rbacallowcluster: Name | None = None

    @field_validator("targetport")
    @classmethod
    def _not_the_listen_port(cls, port: int, info: ValidationInfo) -> int:
        if port == info.data.get("listenport"):
            raise ValueError("equals spec.listenport: Envoy would proxy the listener to itself")
        return port


class EgressSpec(_Spec):
    targetcluster: Name


@dataclass(frozen=True)
class IngressListener:
    ref: ObjectRef
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text); "" when absent
    spec: IngressSpec


@dataclass(frozen=True)
class EgressListener:
    ref: ObjectRef
    created: str
    spec: EgressSpec


Listener = IngressListener | EgressListener
KubeObject = Pod | IngressListener | EgressListener


def parse_object(doc: Any, default_namespace: str = "default") -> KubeObject | None:
    """Parse one Kubernetes-style object. Returns None for kinds we do not use; raises ObjectError when it is bad."""
    if not isinstance(doc, dict):
        raise UnnamedError("document", "", f"expected a mapping, got {type(doc).__name__}")
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        return None
    ref = identify(kind, doc, default_namespace)
    meta = doc["metadata"]
    api_version = doc.get("apiVersion")
    if api_version != API_VERSIONS[kind]:
        raise ObjectError(str(ref), "apiVersion", f"expected {API_VERSIONS[kind]!r}, got {quote(api_version)}")
    if kind == "Pod":
        return _parse_pod(ref, meta, _mapping(str(ref), "status", doc.get("status")))
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ObjectError(str(ref), "spec", "is required" if spec is None else f"must be a mapping, got {quote(spec)}")
    created = _timestamp(ref, meta.get("creationTimestamp"))
    if kind == "IngressListener":
        return IngressListener(ref, created, _validate(IngressSpec, ref, spec))
    return EgressListener(ref, created, _validate(EgressSpec, ref, spec))


def identify(kind: str, doc: Any, default_namespace: str = "default") -> ObjectRef:
    """Which object `doc` is (of `kind`), from its metadata; raises UnnamedError when that cannot be told."""
    if not isinstance(doc, dict):
        raise UnnamedError("document", "", f"expected a mapping, got {type(doc).__name__}")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise UnnamedError(f"{kind} (unnamed)", "metadata", "is required" if meta is None else "must be a mapping")
    name = _name(kind, meta)
    return ObjectRef(kind, _namespace(f"{kind} {name}", meta, default_namespace), name)


# What the API server accepts: a name is a DNS subdomain (RFC 1123), a namespace a DNS label.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _name(kind: str, meta: dict[str, Any]) -> str:
    name = meta.get("name")
    if name is None or name == "":
        raise UnnamedError(f"{kind} (unnamed)", "metadata.name", "is required")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UnnamedError(f"{kind} (unnamed)", "metadata.name", f"not a DNS subdomain name: {quote(name)}")
    return name


def _namespace(what: str, meta: dict[str, Any], default: str) -> str:
    namespace = meta.get("namespace")
    if namespace is None or namespace == "":
        return default
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise UnnamedError(what, "metadata.namespace", f"not a DNS label: {quote(namespace)}")
    return namespace


def _mapping(ref: str, field: str, value: Any) -> dict[str, Any]:
    """An optional mapping field: {} when absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ObjectError(ref, field, f"must be a mapping, got {quote(value)}")
    return value


def _timestamp(ref: ObjectRef, value: Any) -> str:
    """metadata.creationTimestamp as UTC text of fixed width (so it sorts as time); "" when absent.

    YAML turns an unquoted timestamp into a datetime: both forms give the same text.
    """
    if value is None or value == "":
        return ""
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
    elif isinstance(value, date) and not isinstance(value, datetime):
        when = datetime(value.year, value.month, value.day)
    if not isinstance(when, datetime):
        raise ObjectError(str(ref), "metadata.creationTimestamp", f"not an RFC 3339 time: {quote(value)}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _validate(model: type[_Spec], ref: ObjectRef, spec: dict[str, Any]) -> Any:
    try:
        return model.model_validate(spec)
    except ValidationError as e:
        first = e.errors()[0]
        field = "spec." + ".".join(str(p) for p in first["loc"])
        shown = "input" in first and first["type"] != "missing"  # a missing field's input is the whole spec
        problem = f"{first['msg']} (got {quote(first['input'])})" if shown else first["msg"]
        raise ObjectError(str(ref), field, problem) from None


def _parse_pod(ref: ObjectRef, meta: dict[str, Any], status: dict[str, Any]) -> Pod:
    annotations = _mapping(str(ref), "metadata.annotations", meta.get("annotations"))
    cluster_name = annotations.get(CLUSTER_NAME_ANNOTATION)
    if cluster_name is not None and not isinstance(cluster_name, str):
        raise ObjectError(str(ref), f"metadata.annotations.{CLUSTER_NAME_ANNOTATION}",
                          f"must be a string, got {quote(cluster_name)}")
    return Pod(
        ref=ref,
        cluster_name=cluster_name or None,
        ip=_pod_ip(ref, status.get("podIP")),
        ready=_is_ready(ref, status.get("conditions")),
        terminating=meta.get("deletionTimestamp") is not None,
    )


def _pod_ip(ref: ObjectRef, value: Any) -> str | None:
    """status.podIP, normalised; an address no pod can have (unspecified, multicast, broadcast) is refused."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ObjectError(str(ref), "status.podIP", f"must be a string, got {quote(value)}")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ObjectError(str(ref), "status.podIP", f"not an IP address: {quote(value)}") from None
    if ip.is_unspecified or ip.is_multicast or ip == _BROADCAST:
        raise ObjectError(str(ref), "status.podIP", f"not an endpoint address: {quote(value)}")
    return str(ip)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _is_ready(ref: ObjectRef, conditions: Any) -> bool:
    """The Ready condition decides; a pod without conditions (a hand-written manifest) counts as ready."""
    if conditions is None:
        return True
    if not isinstance(conditions, list):
        raise ObjectError(str(ref), "status.conditions", f"must be a list, got {quote(conditions)}")
    for i, condition in enumerate(conditions):
        if not isinstance(condition, dict):
            raise ObjectError(str(ref), f"status.conditions[{i}]", f"must be a mapping, got {quote(condition)}")
        if condition.get("type") == "Ready":
            status = condition.get("status")
            if not isinstance(status, str):
                raise ObjectError(str(ref), f"status.conditions[{i}].status",
                                  f"must be a string (\"True\", \"False\" or \"Unknown\"), got {quote(status)}")
            return status == "True"
    return True
