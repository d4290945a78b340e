"""The control plane's configuration file (YAML or JSON), validated with pydantic.

Two shapes load: the full mapping (`xds`, `admin`, `manifests`, `clusters`, ...) and the original project's
`config.json`, a bare list of `{name, kubeconfig, listenersource}` entries, which becomes the `clusters` list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import certs
from .logs import LEVELS, LogFormat
from .model import CLUSTER_NAME_ANNOTATION, ANNOTATION_KEY
from .text import quote

if TYPE_CHECKING:
    from cryptography import x509


MANIFEST_SOURCE = "manifests"  # the source name of manifest files; no Kubernetes cluster may take it


class ConfigError(ValueError):
    """A configuration problem, worded as one line naming the key or file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endpoint(_Strict):
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM contents of xds.tls's files, read together and checked."""

    cert: bytes
    key: bytes
    client_ca: bytes | None


class XdsTlsConfig(_Strict):
    """TLS on the xDS port: the server's certificate and key; with client_ca, clients must present a certificate
    from that CA, and a stream may only ask for a node id its certificate names (see xds/identity.py)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @field_validator("cert", "client_ca")
    @classmethod
    def _certificates(cls, path: Path | None) -> Path | None:
        if path is not None:
            _certificates(_read(path), path)
        return path

    @field_validator("key")
    @classmethod
    def _key(cls, path: Path) -> Path:
        _private_key(_read(path), path)
        return path

    @model_validator(mode="after")
    def _key_matches(self) -> XdsTlsConfig:
        self.load()
        return self

    def load(self) -> TlsMaterial:
        """Read the files and check them together (each parses, the key is the certificate's); ValueError if not."""
        cert, key = _read(self.cert), _read(self.key)
        ca = _read(self.client_ca) if self.client_ca else None
        leaf = _certificates(cert, self.cert)[0]
        if ca is not None:
            _certificates(ca, self.client_ca)
        from cryptography.hazmat.primitives import serialization  # only with TLS: see certs.py

        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if _private_key(key, self.key).public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            raise ValueError(f"key {self.key} does not match the certificate {self.cert}")
        return TlsMaterial(cert, key, ca)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"file not found: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None


def _certificates(pem: bytes, path: Path | None) -> list[x509.Certificate]:
    try:
        return certs.certificates(pem)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _private_key(pem: bytes, path: Path) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: the key is encrypted
        raise ValueError(f"{path}: not an unencrypted PEM private key") from None


class XdsConfig(Endpoint):
    port: int = Field(default=18000, ge=1, le=65535)
    tls: XdsTlsConfig | None = None
    # Serve SDS secrets (private keys) to clients that did not prove who they are: for demos and tests only.
    insecure_secrets: bool = False
    # Rebuild snapshots once no source event came for this long, so a rollout is one push per node, not many...
    debounce_ms: int = Field(default=20, ge=0, le=10_000)
    # ...but at most this long after the burst's first event (a stream that never goes quiet); default 10 x debounce_ms.
    debounce_max_ms: int | None = Field(default=None, ge=0, le=600_000)
    # Serve xDS only once every source has loaded, or after this long (a cluster that cannot be reached).
    initial_sync_timeout_s: float = Field(default=10, ge=0, le=600)
    # Wait this long at most for an Envoy to answer (ACK or NACK) a response before other types go ahead without it.
    ack_timeout_s: float = Field(default=10, gt=0, le=600)

    @model_validator(mode="after")
    def _debounce_ordered(self) -> XdsConfig:
        if self.debounce_max_ms is not None and self.debounce_max_ms < self.debounce_ms:
            raise ValueError(
                f"debounce_max_ms ({self.debounce_max_ms}) is less than debounce_ms ({self.debounce_ms}): the ceiling "
                "cannot come before the quiet period"
            )
        return self


class AdminConfig(Endpoint):
    port: int = Field(default=18001, ge=1, le=65535)
    # /debug/* shows every node's configuration and subscriptions: answered only to loopback clients (kubectl
    # port-forward arrives there) unless this is true. /healthz, /readyz and /metrics answer everyone.
    debug_remote: bool = False


class ClusterConfig(_Strict):
    """One Kubernetes cluster to watch. No kubeconfig means in-cluster credentials."""

    name: str = Field(min_length=1)
    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str | None = None
    # A label selector (as kubectl -l takes it) narrowing the Secrets read from this cluster, like `mesh=true`.
    secret_selector: str | None = Field(default=None, min_length=1, max_length=1024)
    # The original's key: false watches only this cluster's pods (endpoints), not its listeners (nor Secrets).
    listenersource: bool = Field(default=True, strict=True)

    @field_validator("kubeconfig")
    @classmethod
    def _exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.expanduser().is_file():
            raise ValueError(f"file not found: {path}")
        return path.expanduser() if path is not None else None


class LeaseConfig(_Strict):
    """The coordination.k8s.io/v1 Lease whose holder, alone among the replicas, writes status and Events."""

    cluster: str | None = None  # the configured cluster that holds it; default: the first
    # default: the control plane's own namespace (POD_NAMESPACE, or the service account's), else "default"
    namespace: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    name: str = Field(default="envoy-control-plane", max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    duration_s: float = Field(default=15, ge=1, le=3600)
    renew_deadline_s: float = Field(default=10, gt=0, le=3600)
    retry_period_s: float = Field(default=2, gt=0, le=600)

    @model_validator(mode="after")
    def _ordered(self) -> LeaseConfig:
        if not self.retry_period_s < self.renew_deadline_s < self.duration_s:
            raise ValueError("needs retry_period_s < renew_deadline_s < duration_s")
        return self


class EventsConfig(_Strict):
    burst: int = Field(default=5, ge=0, le=1000)  # Events per object at once...
    every_s: float = Field(default=60, gt=0, le=86_400)  # ...then one per this long


class StatusConfig(_Strict):
    """Writing listener status and Events back to the Kubernetes clusters (needs the RBAC in manifests/deploy)."""

    write: bool = True
    identity: str | None = Field(default=None, min_length=1, max_length=128)  # default: POD_NAME or host, + random
    interval_s: float = Field(default=1, gt=0, le=60)  # how often conditions are compared with the objects' status
    resync_s: float = Field(default=300, gt=0, le=86_400)  # re-read every object's status this often
    startup_grace_s: float = Field(default=10, ge=0, le=600)  # first write after start: Envoys reconnect meanwhile
    events: EventsConfig = EventsConfig()
    lease: LeaseConfig = LeaseConfig()


class Config(_Strict):
    xds: XdsConfig = XdsConfig()
    admin: AdminConfig = AdminConfig()
    manifests: list[Path] = []
    # A manifest file that vanishes is deleted only once it stayed away this long (an editor's save, `git checkout`,
    # rsync); a ConfigMap's atomic `..data` swap applies at once.
    manifest_delete_grace_s: float = Field(default=1.0, ge=0, le=60)
    clusters: list[ClusterConfig] = []
    status: StatusConfig = StatusConfig()
    # Where the last good objects are kept across restarts (state.json); None: nothing is written.
    state_dir: Path | None = None
    # Where IngressListeners listen; the original used 0.0.0.0. Tests bind loopback.
    ingress_address: str = "0.0.0.0"
    egress_address: str = "127.0.0.1"
    log_level: str = "INFO"  # our own loggers
    library_log_level: str = "WARNING"  # grpc, asyncio, aiohttp, watchfiles, kubernetes_asyncio
    log_format: LogFormat = "text"
    # The pod annotation naming a pod's Envoy cluster (the original's -cluster-name-annotation), in every source.
    cluster_name_annotation: str = CLUSTER_NAME_ANNOTATION

    @field_validator("cluster_name_annotation")
    @classmethod
    def _annotation_key(cls, key: str) -> str:
        if len(key) > 317 or not ANNOTATION_KEY.fullmatch(key):
            raise ValueError(f"not an annotation key (like example.com/name): {quote(key)}")
        return key

    @field_validator("log_level", "library_log_level")
    @classmethod
    def _level(cls, level: str) -> str:
        if level.upper() not in LEVELS:
            raise ValueError(f"expected one of {', '.join(LEVELS)} (any case), got {quote(level)}")
        return level.upper()

    @property
    def may_serve_secrets(self) -> bool:
        """Whether SDS secrets may go out: only to clients bound to a node by their certificate, unless the
        operator said otherwise; whoever reaches an open xDS port could otherwise read every private key."""
        return (self.xds.tls is not None and self.xds.tls.client_ca is not None) or self.xds.insecure_secrets

    @field_validator("manifests")
    @classmethod
    def _manifests_exist(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            if not path.exists():
                raise ValueError(f"file or directory not found: {path}")
        return paths

    @field_validator("clusters")
    @classmethod
    def _unique_names(cls, clusters: list[ClusterConfig]) -> list[ClusterConfig]:
        names = [c.name for c in clusters]
        if MANIFEST_SOURCE in names:
            raise ValueError(f"{MANIFEST_SOURCE!r} names the manifest files' source; call the cluster otherwise")
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"cluster name {name!r} appears twice")
        return clusters


    @model_validator(mode="after")
    def _lease_cluster_exists(self) -> Config:
        wanted = self.status.lease.cluster
        if wanted is not None and wanted not in {c.name for c in self.clusters}:
            raise ValueError(f"status.lease.cluster {wanted!r} is not a configured cluster")
        return self


def load_config(path: Path) -> Config:
    """Read and validate a config file; relative paths inside it are relative to the file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {detail}") from None
    if raw is None:
        raw = {}
    if isinstance(raw, list):  # the original project's config.json
        raw = {"clusters": _original_clusters(raw)}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping or a list of clusters")
    return build_config(_resolve_paths(raw, path.parent), source=str(path))


def _original_clusters(entries: list[Any]) -> list[Any]:
    """The original's list as `clusters`. Before it had `listenersource`, every cluster was a listener source; once it
    had it, a missing one was false (Go's zero value): so when any entry says it, the others are pods only."""
    if not any(isinstance(e, dict) and "listenersource" in e for e in entries):
        return entries
    return [{"listenersource": False, **e} if isinstance(e, dict) else e for e in entries]


def build_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{source}: {key}: {msg}") from None


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    raw = dict(raw)
    if isinstance(raw.get("state_dir"), str):
        raw["state_dir"] = _under(base, raw["state_dir"])
    if isinstance(raw.get("manifests"), list):
        raw["manifests"] = [_under(base, p) for p in raw["manifests"]]
    xds = raw.get("xds")
    if isinstance(xds, dict) and isinstance(xds.get("tls"), dict):
        tls = {k: _under(base, v) if k in ("cert", "key", "client_ca") else v for k, v in xds["tls"].items()}
        raw["xds"] = {**xds, "tls": tls}
    if isinstance(raw.get("clusters"), list):
        raw["clusters"] = [
            {**c, "kubeconfig": _under(base, c["kubeconfig"])} if isinstance(c, dict) and c.get("kubeconfig") else c
            for c in raw["clusters"]
        ]
    return raw


def _under(base: Path, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)
