"""Reading a kubeconfig (or the pod's service account) into what a connection needs, checked field by field.

kubernetes_asyncio's loader is not used: it writes embedded certificates to temp files (no writable /tmp under a
read-only root filesystem), fails on a malformed file with bare assertions, and has no answer to an expired token but
a timer. Here a kubeconfig becomes a `ClusterAccess`: the server, the TLS material as bytes, and where the credentials
come from (a token, a token file, an exec plugin, an OIDC provider, basic auth); `credentials.py` turns that into a bearer token and
refreshes it, `client.py` into a connection. Relative paths (files, an exec command with a slash) are relative to the
kubeconfig's directory, as client-go reads them.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...text import clip, quote

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_FILE_BYTES = 1 << 20  # a kubeconfig, a token or a certificate bigger than this is not one


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used, worded as one line naming the file and field."""


@dataclass(frozen=True)
class ExecConfig:
    """users[].user.exec: a credential plugin (`aws eks get-token`, `gke-gcloud-auth-plugin`, kubelogin)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    provide_cluster_info: bool = False
    install_hint: str | None = None  # shown when the command cannot be run


@dataclass(frozen=True)
class OidcConfig:
    """users[].user.auth-provider with name oidc: an ID token, and how to get a new one (a refresh token)."""

    issuer: str | None  # idp-issuer-url
    client_id: str | None
    client_secret: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    ca: bytes | None = None  # idp-certificate-authority(-data), PEM


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach and authenticate to one API server."""

    server: str
    source: str  # the kubeconfig's path, or "in-cluster service account": for messages
    ca: bytes | None = None  # PEM; None: the system's roots
    client_cert: bytes | None = None
    client_key: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    token: str | None = None
    token_file: Path | None = None
    exec: ExecConfig | None = None
    oidc: OidcConfig | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def read_bytes(path: Path, what: str) -> bytes:
    """A small file, or a KubeconfigError naming `what` it was for."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise KubeconfigError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KubeconfigError(f"{what}: {path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def load(path: Path, context: str | None) -> ClusterAccess:
    """The access a kubeconfig file gives through `context` (default: its current-context)."""
    try:
        doc = yaml.safe_load(read_bytes(path, "kubeconfig"))
    except yaml.YAMLError as e:
        raise KubeconfigError(f"{path}: not valid YAML: {clip(str(e).replace(chr(10), ' '))}") from None
    return _Reader(path).access(doc, context)


def in_cluster(environ: dict[str, str] | None = None, directory: Path = SERVICE_ACCOUNT) -> ClusterAccess:
    """The pod's service account: the API server from KUBERNETES_SERVICE_HOST/PORT, its CA, and its token file
    (kubelet rotates it: it is re-read, see credentials.py)."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeconfigError("not running in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
    host = f"[{host}]" if ":" in host else host
    token_file = directory / "token"
    read_bytes(token_file, "service account token")  # fail now, with a clear message, if it is not there
    return ClusterAccess(
        server=f"https://{host}:{port}", source="in-cluster service account",
        ca=read_bytes(directory / "ca.crt", "service account CA"), token_file=token_file,
    )


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, where: str, problem: str) -> KubeconfigError:
        return KubeconfigError(f"{self.path}: {where}: {problem}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, not {type(value).__name__}")
        return value

    def string(self, parent: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
        value = parent.get(key)
        if value is None or value == "":
            if required:
                raise self.fail(f"{where}.{key}", "required")
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"must be a string, not {type(value).__name__} {quote(value, 60)}")
        return value

    def flag(self, parent: dict[str, Any], key: str, where: str) -> bool:
        value = parent.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"must be true or false, not {quote(value, 60)}")
        return value

    def named(self, doc: dict[str, Any], section: str, name: str, body: str) -> dict[str, Any]:
        entries = doc.get(section)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise self.fail(section, f"must be a list, not {type(entries).__name__}")
        for i, entry in enumerate(entries):
            entry = self.mapping(entry, f"{section}[{i}]")
            if entry.get("name") == name:
                return self.mapping(entry.get(body), f"{section}[{name}].{body}")
        raise self.fail(section, f"no entry named {quote(name)}")

    def material(self, parent: dict[str, Any], key: str, where: str) -> bytes | None:
        """`<key>-data` (base64) or `<key>` (a file)."""
        data = self.string(parent, f"{key}-data", where)
        if data is not None:
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise self.fail(f"{where}.{key}-data", "not valid base64") from None
        file = self.string(parent, key, where)
        return None if file is None else read_bytes(self.base / file, f"{self.path}: {where}.{key}")

    def access(self, doc: Any, context_name: str | None) -> ClusterAccess:
        doc = self.mapping(doc, "the document")
        if not doc:
            raise self.fail("the document", "empty")
        context_name = context_name or self.string(doc, "current-context", "the document", required=True)
        assert context_name is not None
        context = self.named(doc, "contexts", context_name, "context")
        where = f"contexts[{context_name}].context"
        cluster_name = self.string(context, "cluster", where, required=True)
        assert cluster_name is not None
        cluster = self.named(doc, "clusters", cluster_name, "cluster")
        user_name = self.string(context, "user", where)
        user = self.named(doc, "users", user_name, "user") if user_name else {}
        cw, uw = f"clusters[{cluster_name}].cluster", f"users[{user_name}].user"
        server = self.string(cluster, "server", cw, required=True)
        assert server is not None
        if not server.startswith(("https://", "http://")):
            raise self.fail(f"{cw}.server", f"must be an http(s) URL, not {quote(server)}")
        oidc = self.auth_provider(user["auth-provider"], f"{uw}.auth-provider") if "auth-provider" in user else None
        token_file = self.string(user, "tokenFile", uw)
        cert, key = self.material(user, "client-certificate", uw), self.material(user, "client-key", uw)
        if (cert is None) != (key is None):
            raise self.fail(uw, "client-certificate and client-key go together: one is missing")
        return ClusterAccess(
            server=server.rstrip("/"), source=str(self.path),
            ca=self.material(cluster, "certificate-authority", cw),
            client_cert=cert, client_key=key,
            insecure=self.flag(cluster, "insecure-skip-tls-verify", cw),
            tls_server_name=self.string(cluster, "tls-server-name", cw),
            proxy_url=self.string(cluster, "proxy-url", cw),
            token=self.string(user, "token", uw),
            token_file=None if token_file is None else self.base / token_file,
            exec=self.exec(user.get("exec"), f"{uw}.exec") if "exec" in user else None,
            oidc=oidc,
            username=self.string(user, "username", uw),
            password=self.string(user, "password", uw),
        )

    def auth_provider(self, value: Any, where: str) -> OidcConfig:
        provider = self.mapping(value, where)
        name = provider.get("name")
        if name != "oidc":
            raise self.fail(f"{where}.name", f"{quote(name)} is not supported (the gcp and azure providers left kubectl"
                                             " in 1.26): use their exec plugins (gke-gcloud-auth-plugin, kubelogin)")
        config = self.mapping(provider.get("config"), f"{where}.config")
        cw = f"{where}.config"
        oidc = OidcConfig(
            issuer=self.string(config, "idp-issuer-url", cw), client_id=self.string(config, "client-id", cw),
            client_secret=self.string(config, "client-secret", cw), id_token=self.string(config, "id-token", cw),
            refresh_token=self.string(config, "refresh-token", cw),
            ca=self.material(config, "idp-certificate-authority", cw),
        )
        if oidc.id_token is None and oidc.refresh_token is None:
            raise self.fail(cw, "neither id-token nor refresh-token")
        if oidc.refresh_token is not None and (oidc.issuer is None or oidc.client_id is None):
            raise self.fail(cw, "refresh-token needs idp-issuer-url and client-id")
        return oidc

    def exec(self, value: Any, where: str) -> ExecConfig:
        spec = self.mapping(value, where)
        command = self.string(spec, "command", where, required=True)
        assert command is not None
        if "/" in command and not Path(command).is_absolute():
            command = str(self.base / command)
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise self.fail(f"{where}.args", "must be a list of strings")
        env = spec.get("env") or []
        pairs: list[tuple[str, str]] = []
        if not isinstance(env, list):
            raise self.fail(f"{where}.env", "must be a list of {name, value}")
        for i, item in enumerate(env):
            item = self.mapping(item, f"{where}.env[{i}]")
            name = self.string(item, "name", f"{where}.env[{i}]", required=True)
            value_ = item.get("value", "")
            if not isinstance(value_, str):
                raise self.fail(f"{where}.env[{i}].value", "must be a string")
            assert name is not None
            pairs.append((name, value_))
        api_version = self.string(spec, "apiVersion", where, required=True)
        assert api_version is not None
        if not api_version.startswith("client.authentication.k8s.io/"):
            raise self.fail(f"{where}.apiVersion", f"not a client.authentication.k8s.io version: {quote(api_version)}")
        if spec.get("interactiveMode") == "Always":
            raise self.fail(f"{where}.interactiveMode", "Always: a control plane has no terminal to ask on")
        return ExecConfig(command, tuple(args), tuple(pairs), api_version,
                          self.flag(spec, "provideClusterInfo", where), self.string(spec, "installHint", where))
