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
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from . import certs
from .duration import format_duration, parse_duration
from .text import quote

CLUSTER_NAME_ANNOTATION = "cluster-name.envoy.uw.io"  # the default; config key cluster_name_annotation
# An annotation key as the API server takes it: an optional DNS-subdomain prefix and "/", then a name of 1-63 characters.
ANNOTATION_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
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


class UnnamedError(ObjectError):
    """An object without a usable identity (no mapping, no valid name or namespace): which object it is, is unknown."""


@dataclass(frozen=True, order=True, slots=True)
class ObjectRef:
    """Identifies one object within one source (a Kubernetes cluster or a manifest set)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
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


# The CRD schema's types, strictly: an integer port is an integer ("80", 80.0 and true are not), a name a string.
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Name = Annotated[str, Field(strict=True, min_length=1)]


# A Secret's name as Kubernetes allows it (a DNS subdomain): it becomes part of SDS resource names.
SecretName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
# A URI or DNS subject alternative name, compared exactly: no whitespace or control characters.
San = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[!-~]+$")]
Layer = Literal["tcp", "http"]


class Rbac(_Frozen):
    """Who may connect to an IngressListener: pods of `cluster` (by source IP) and/or peers whose certificate has one
    of `sans`; both given, a peer must satisfy both."""

    cluster: Name | None = None
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

    nodename: Name
    listenport: Port
    targetport: Port


class IngressSpec(_Spec):
    # The original's field: the same as rbac.cluster. "" is invalid, so a templating gap cannot open the listener.
    rbacallowcluster: Name | None = None
    rbac: Rbac | None = None
    tls: Tls | None = None
    layer: Layer = "tcp"

    @field_validator("targetport")
    @classmethod
    def _not_the_listen_port(cls, port: int, info: ValidationInfo) -> int:
        if port == info.data.get("listenport"):
            raise _error("equals spec.listenport: Envoy would proxy the listener to itself")
        return port

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


# ---- EgressListener health: active health checks and outlier detection (each optional, off when absent) ------------


def _duration(low: str, high: str) -> Any:
    """A Go-style duration string (`5s`, `500ms`) from `low` to `high`, in whole milliseconds (Envoy's resolution)."""
    low_ns, high_ns = parse_duration(low), parse_duration(high)

    def check(value: Any) -> timedelta:
        try:
            nanos = parse_duration(value)
        except ValueError as e:
            raise _error(str(e)) from None
        if nanos < 0:
            raise _error("must not be negative")
        if not low_ns <= nanos <= high_ns:
            raise _error(f"must be from {low} to {high}")
        if nanos % 10**6:
            raise _error("must be a whole number of milliseconds")
        return timedelta(milliseconds=nanos // 10**6)

    def text(value: timedelta) -> str:
        return format_duration(value // timedelta(microseconds=1) * 1000)

    return Annotated[timedelta, BeforeValidator(check), PlainSerializer(text, when_used="json")]


def _error(problem: str, kind: str = "value_error") -> PydanticCustomError:
    """A validation error whose message is `problem` as it stands (no "Value error, " prefix, no formatting)."""
    return PydanticCustomError(kind, "{problem}", {"problem": problem})


def _count(high: int) -> Any:
    return Annotated[int, Field(strict=True, ge=1, le=high)]


Interval = _duration("1ms", "1h")
HttpStatus = Annotated[int, Field(strict=True, ge=100, le=599)]


def _list(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        raise _error("must be a list")
    return tuple(value)


StatusList = Annotated[tuple[HttpStatus, ...], BeforeValidator(_list), Field(min_length=1, max_length=100)]
# Header-safe text: visible ASCII, no spaces or control characters (Envoy would NACK or send a broken request).
_PATH = re.compile(r"/[!-~]{0,1023}")
_HOST = re.compile(r"[!-~]{1,255}")


class _Health(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel)


class HealthCheck(_Health):
    """Active health checking: Envoy connects (tcp) or sends GET `path` (http) to every endpoint each `interval`."""

    type: Literal["tcp", "http"]
    interval: Interval = timedelta(seconds=5)
    timeout: Interval = timedelta(seconds=1)
    unhealthy_threshold: _count(100) = 3
    healthy_threshold: _count(100) = 2
    path: Annotated[str, Field(strict=True)] | None = Field(None, validate_default=True)  # required for http
    host: Annotated[str, Field(strict=True)] | None = None  # http: the Host header; the targetcluster when absent
    expected_statuses: StatusList | None = None  # http: [200] when absent

    @field_validator("path", "host", "expected_statuses")
    @classmethod
    def _http_only(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if kind == "tcp" and value is not None:
            raise _error("is only for type http")
        if kind == "http" and info.field_name == "path":
            if value is None:
                raise _error("is required for type http", "missing")
            if not _PATH.fullmatch(value):
                raise _error("must start with / and be at most 1024 visible ASCII characters (no spaces)")
        if info.field_name == "host" and value is not None and not _HOST.fullmatch(value):
            raise _error("must be 1 to 255 visible ASCII characters (no spaces)")
        return value


class OutlierDetection(_Health):
    """Passive health checking: an endpoint with `consecutive_errors` failed connections or 5xx in a row is ejected."""

    consecutive_errors: _count(1000) = 5
    interval: Interval = timedelta(seconds=10)
    base_ejection_time: Interval = timedelta(seconds=30)
    max_ejection_percent: Annotated[int, Field(strict=True, ge=0, le=100)] = 10


class EgressSpec(_Spec):
    targetcluster: Name
    tls: EgressTls | None = None
    layer: Layer = "tcp"
    healthcheck: HealthCheck | None = None
    outlierDetection: OutlierDetection | None = None  # noqa: N815 (the CRD's name)

    @field_validator("healthcheck")
    @classmethod
    def _host_header(cls, check: HealthCheck | None, info: ValidationInfo) -> HealthCheck | None:
        target = info.data.get("targetcluster")
        if check and check.type == "http" and check.host is None and target and not _HOST.fullmatch(target):
            raise _error("needs a host: spec.targetcluster (the default Host header) is no valid Host header")
        return check


@dataclass(frozen=True, slots=True)
class IngressListener:
    ref: ObjectRef
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text); "" when absent
    spec: IngressSpec
    generation: int = 0  # metadata.generation: the spec version status conditions report (observedGeneration)


@dataclass(frozen=True, slots=True)
class EgressListener:
    ref: ObjectRef
    created: str
    spec: EgressSpec
    generation: int = 0


@dataclass(frozen=True, slots=True)
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


def parse_object(
    doc: Any, default_namespace: str = "default", *, cluster_name_annotation: str = CLUSTER_NAME_ANNOTATION
) -> KubeObject | None:
    """Parse one Kubernetes-style object. Returns None for kinds we do not use; raises ObjectError when it is bad.

    A pod's Envoy cluster is the value of its `cluster_name_annotation`."""
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
        return _parse_pod(ref, meta, _mapping(str(ref), "status", doc.get("status")), cluster_name_annotation)
    if kind == "Secret":
        return _parse_secret(ref, doc)
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ObjectError(str(ref), "spec", "is required" if spec is None else f"must be a mapping, got {quote(spec)}")
    created = _timestamp(ref, meta.get("creationTimestamp"))
    generation = generation_of(meta)
    if kind == "IngressListener":
        ingress_spec = _validate(IngressSpec, ref, spec)
        _check_ingress(ref, ingress_spec)
        return IngressListener(ref, created, ingress_spec, generation)
    return EgressListener(ref, created, _validate(EgressSpec, ref, spec), generation)


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
        shown = "input" in first and first["type"] != "missing"  # a missing field's input is the whole spec
        problem = f"{first['msg']} (got {quote(first['input'])})" if shown else first["msg"]
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


def _parse_pod(ref: ObjectRef, meta: dict[str, Any], status: dict[str, Any], annotation: str) -> Pod:
    annotations = _mapping(str(ref), "metadata.annotations", meta.get("annotations"))
    cluster_name = annotations.get(annotation)
    if cluster_name is not None and not isinstance(cluster_name, str):
        raise ObjectError(str(ref), f"metadata.annotations.{annotation}",
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
    if _PLAIN_IPV4.fullmatch(value) and 0 < int(value[:value.index(".")]) < 224:
        return value  # the common case, decided without ipaddress (3 us a pod): canonical, unicast, specified
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ObjectError(str(ref), "status.podIP", f"not an IP address: {quote(value)}") from None
    if ip.is_unspecified or ip.is_multicast or ip == _BROADCAST:
        raise ObjectError(str(ref), "status.podIP", f"not an endpoint address: {quote(value)}")
    return str(ip)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# An IPv4 address as str(ipaddress.ip_address(...)) writes it: four decimal octets without leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_PLAIN_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


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
