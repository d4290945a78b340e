"""The objects the control plane understands, parsed from Kubernetes-style dicts.

Four kinds matter: Pods (endpoints, by their `cluster-name.envoy.uw.io` annotation), IngressListeners and
EgressListeners (custom resources, as the original project defined them, with the later `rbac`, `tls` and `layer`
fields), and the Secrets a listener's `tls` can name (`kubernetes.io/tls`, and Opaque ones holding `ca.crt`).
Parsing never raises anything but
`ObjectError`, whose message names the object and the field, so one bad object can be reported and skipped.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from . import certs

CLUSTER_NAME_ANNOTATION = "cluster-name.envoy.uw.io"
INGRESS_GROUP = "ingresslistener.envoy.uw.systems"
EGRESS_GROUP = "egresslistener.envoy.uw.systems"
CRD_VERSION = "v1alpha1"

Kind = Literal["Pod", "IngressListener", "EgressListener", "Secret"]
KINDS: tuple[Kind, ...] = ("Pod", "IngressListener", "EgressListener", "Secret")
LISTENER_KINDS: tuple[Kind, ...] = ("IngressListener", "EgressListener")
API_VERSIONS: dict[str, str] = {
    "Pod": "v1",
    "Secret": "v1",
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


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A Secret's name as Kubernetes allows it (a DNS subdomain): it becomes part of SDS resource names.
SecretName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
# A URI or DNS subject alternative name, compared exactly: no whitespace or control characters.
San = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[!-~]+$")]
Layer = Literal["tcp", "http"]


class Rbac(_Frozen):
    """Who may connect to an IngressListener: pods of `cluster` (by source IP) and/or peers whose certificate has one
    of `sans`; both given, a peer must satisfy both."""

    cluster: str | None = Field(default=None, min_length=1)
    sans: tuple[San, ...] | None = Field(default=None, min_length=1, max_length=64)


class Tls(_Frozen):
    """`secret`: a Secret with tls.crt and tls.key (the certificate Envoy presents); `validation`: a Secret with
    ca.crt (the CA a peer's certificate must chain to), the same Secret when left out. Both in the listener's
    namespace and source."""

    secret: SecretName
    validation: SecretName | None = None

    @property
    def ca_secret(self) -> str:
        return self.validation or self.secret


class EgressTls(Tls):
    sni: str | None = Field(default=None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$")


class _Spec(_Frozen):

    nodename: str = Field(min_length=1)
    listenport: int = Field(ge=1, le=65535)
    targetport: int = Field(ge=1, le=65535)


class IngressSpec(_Spec):
    rbacallowcluster: str | None = None  # the original's field: the same as rbac.cluster
    rbac: Rbac | None = None
    tls: Tls | None = None
    layer: Layer = "tcp"

    @property
    def allow_cluster(self) -> str | None:
        """The Envoy cluster whose pods' IPs are admitted (rbac.cluster or rbacallowcluster); None admits any IP."""
        if self.rbac is not None and self.rbac.cluster is not None:
            return self.rbac.cluster
        return self.rbacallowcluster

    @property
    def allow_sans(self) -> tuple[str, ...] | None:
        """The peer certificate SANs admitted; None admits any certificate the validation CA signed."""
        return self.rbac.sans if self.rbac is not None else None


class EgressSpec(_Spec):
    targetcluster: str = Field(min_length=1)
    tls: EgressTls | None = None
    layer: Layer = "tcp"


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


@dataclass(frozen=True)
class Secret:
    """The PEM material a listener can use, and what is wrong with it (by key). Only the three keys we use are kept;
    none of them is in the repr, so a Secret logged by accident shows no key."""

    ref: ObjectRef
    type: str
    cert: bytes = field(default=b"", repr=False)  # tls.crt
    key: bytes = field(default=b"", repr=False)  # tls.key
    ca: bytes = field(default=b"", repr=False)  # ca.crt
    problems: tuple[tuple[str, str], ...] = ()  # (data key, what is wrong with it)

    def problem(self, data_key: str) -> str | None:
        return next((p for k, p in self.problems if k == data_key), None)


TLS_SECRET_TYPE = "kubernetes.io/tls"
OPAQUE_SECRET_TYPE = "Opaque"
SECRET_KEYS = ("tls.crt", "tls.key", "ca.crt")

Listener = IngressListener | EgressListener
KubeObject = Pod | IngressListener | EgressListener | Secret


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
    if kind == "Secret":
        return _parse_secret(ref, doc)
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ObjectError(str(ref), "spec", "is required")
    created = str(meta.get("creationTimestamp") or "")
    generation = generation_of(meta)
    if kind == "IngressListener":
        ingress_spec = _validate(IngressSpec, ref, spec)
        _check_ingress(ref, ingress_spec)
        return IngressListener(ref, created, ingress_spec, generation)
    return EgressListener(ref, created, _validate(EgressSpec, ref, spec), generation)


def generation_of(meta: dict[str, Any]) -> int:
    """metadata.generation when it is a sane integer (Kubernetes sets it; manifests rarely do), else 0."""
    generation = meta.get("generation")
    return generation if isinstance(generation, int) and not isinstance(generation, bool) and 0 <= generation < 2**63 else 0


def _check_ingress(ref: ObjectRef, spec: IngressSpec) -> None:
    if spec.rbacallowcluster is not None and spec.rbac is not None and spec.rbac.cluster is not None:
        raise ObjectError(str(ref), "spec.rbac.cluster", "give rbac.cluster or rbacallowcluster, not both")
    if spec.allow_sans is not None and spec.tls is None:
        raise ObjectError(str(ref), "spec.rbac.sans", "requires spec.tls (a peer certificate is only known over TLS)")


def _validate(model: type[_Spec], ref: ObjectRef, spec: dict[str, Any]) -> Any:
    try:
        return model.model_validate(spec)
    except ValidationError as e:
        first = e.errors()[0]
        field = "spec." + ".".join(str(p) for p in first["loc"])
        problem = first["msg"] if "input" not in first else f"{first['msg']} (got {first['input']!r})"
        raise ObjectError(str(ref), field, problem) from None


def _parse_secret(ref: ObjectRef, doc: dict[str, Any]) -> Secret | None:
    """A Secret a listener can name, or None for any other (service account tokens, Opaque without ca.crt, ...).

    Values come from `data` (base64, as the API server and `kubectl get -o yaml` give them) or, in hand-written
    manifests, `stringData`. Bad content does not make the object invalid: it is kept with its problems, so the
    listener that needs it can say exactly what is wrong, and a listener already served keeps the last good version.
    """
    secret_type = doc.get("type") or OPAQUE_SECRET_TYPE
    if secret_type not in (TLS_SECRET_TYPE, OPAQUE_SECRET_TYPE):
        return None
    values: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for section in ("stringData", "data"):
        entries = doc.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise ObjectError(str(ref), section, f"expected a mapping, got {type(entries).__name__}")
        for data_key in SECRET_KEYS:
            value = entries.get(data_key)
            if value is None or data_key in values:
                continue
            if not isinstance(value, str):
                problems[data_key] = f"data.{data_key}: expected a string, got {type(value).__name__}"
            elif section == "stringData":
                values[data_key] = value.encode()
            else:
                try:
                    values[data_key] = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    problems[data_key] = f"data.{data_key}: not valid base64"
    if secret_type == OPAQUE_SECRET_TYPE and "ca.crt" not in values and "ca.crt" not in problems:
        return None  # an Opaque Secret can only serve as a validation CA
    cert, key, ca = (values.get(k, b"") for k in SECRET_KEYS)
    for data_key, pem in (("tls.crt", cert), ("ca.crt", ca)):
        if pem and data_key not in problems:
            try:
                certs.certificates(pem)
            except ValueError as e:
                problems[data_key] = f"data.{data_key}: {e}"
    if key and cert and "tls.key" not in problems:
        key_problem = certs.key_problem(key, cert)
        if key_problem:
            problems["tls.key"] = f"data.tls.key: {key_problem}"
    return Secret(ref, secret_type, cert, key, ca, tuple(sorted(problems.items())))


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
