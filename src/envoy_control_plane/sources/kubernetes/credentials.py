"""The Authorization header for an API server, kept fresh as client-go keeps it.

- An exec plugin is run when there is no token (or client certificate) yet, when its `expirationTimestamp` has
  passed, and after a 401; a new client certificate makes the client reconnect with it (client.py);
- a token file (the pod's service account token, which kubelet rotates) is re-read every minute and after a 401;
- an OIDC ID token (auth-provider oidc) is renewed with its refresh token once its `exp` has passed, and after a 401
  (oidc.py);
- a token written in the kubeconfig is read again from the kubeconfig file after a 401 (a mounted Secret that an
  outside job refreshes);
- basic auth never changes.

A 401 invalidates only the token it was answered for (`generation`), so that several watches failing at once run the
plugin once. The plugin runs bounded in time and output, and never interactively.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ...text import clip, quote
from . import oidc
from .kubeconfig import MAX_FILE_BYTES, ClusterAccess, ExecConfig, KubeconfigError, read_bytes

log = logging.getLogger(__name__)

TOKEN_FILE_PERIOD = 60.0  # client-go re-reads a token file this often
EXEC_TIMEOUT = 60.0  # a plugin that has not answered by then is killed


class CredentialsError(Exception):
    """The credentials could not be obtained (a plugin failed, a token file vanished)."""


@dataclass(frozen=True)
class ExecResult:
    token: str | None
    client_cert: bytes | None
    client_key: bytes | None
    expires: float | None  # time.time() after which the token is no longer valid


class Credentials:
    """The current Authorization header value for one cluster, refreshed when it expires or is refused."""

    def __init__(self, access: ClusterAccess, reload: Callable[[], ClusterAccess] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.access = access
        self._reload = reload  # reads the kubeconfig again (a static token after a 401)
        self._clock = clock
        self._header: str | None = None
        self._obtained = False
        self._expires: float | None = None  # when the header must be renewed
        self._lock = asyncio.Lock()
        self.generation = 0  # counts the headers obtained; a 401 names the one it refused
        self.refreshes = 0  # plugin runs and token file reads after the first
        self.exec_cert: tuple[bytes, bytes] | None = None  # the client certificate and key the plugin gave last
        self._refresh_token = access.oidc.refresh_token if access.oidc else None  # the newest one

    @property
    def obtained_header(self) -> str | None:
        """The header obtained last, without renewing it."""
        return self._header

    @property
    def refreshable(self) -> bool:
        """Whether asking again may give another header (a 401 is worth one retry)."""
        a = self.access
        return (a.exec is not None or a.token_file is not None or self._refresh_token is not None
                or (a.token is not None and self._reload is not None))

    async def header(self) -> str | None:
        """The Authorization header value, renewed first if it expired; None when the user has no token."""
        if self._obtained and not self._expired():
            return self._header
        async with self._lock:  # several watches at once: one renewal
            if not self._obtained or self._expired():
                await self._renew()
            return self._header

    def _expired(self) -> bool:
        return self._expires is not None and self._clock() >= self._expires

    def invalidate(self, generation: int) -> None:
        """A request sent with the header of `generation` got a 401: renew before the next request, unless it was
        renewed meanwhile."""
        if generation == self.generation and self.refreshable:
            self._expires = 0.0

    async def _renew(self) -> None:
        first = not self._obtained
        access = self.access
        if access.exec is not None:
            result = await run_exec(access.exec, access)
            if result.token is None:
                if result.client_cert is None or result.client_key is None:
                    raise CredentialsError(f"exec plugin {quote(access.exec.command)}: no token and no certificate")
                self.exec_cert = result.client_cert, result.client_key
                self._header, self._expires = None, result.expires
            else:
                self._header, self._expires = f"Bearer {result.token}", result.expires
        elif access.oidc is not None:
            await self._renew_oidc(first)
        elif access.token_file is not None:
            try:
                token = read_bytes(access.token_file, "token file").decode().strip()
            except (KubeconfigError, UnicodeDecodeError) as e:
                raise CredentialsError(str(e)) from None
            if not token:
                raise CredentialsError(f"token file {access.token_file} is empty")
            self._header, self._expires = f"Bearer {token}", self._clock() + TOKEN_FILE_PERIOD
        elif access.token is not None:
            if not first and self._reload is not None:
                try:
                    self.access = access = self._reload()
                except KubeconfigError as e:
                    raise CredentialsError(str(e)) from None
            self._header, self._expires = (f"Bearer {access.token}" if access.token else None), None
        elif access.username is not None and access.password is not None:
            basic = base64.b64encode(f"{access.username}:{access.password}".encode()).decode()
            self._header, self._expires = f"Basic {basic}", None
        self._obtained = True
        self.generation += 1
        if not first:
            self.refreshes += 1
            log.info("%s: credentials renewed", access.source)


    async def _renew_oidc(self, first: bool) -> None:
        config = self.access.oidc
        assert config is not None
        try:
            token = config.id_token if first else None
            expires = oidc.expiry(token) if token else None
            if token is None or (expires is not None and self._clock() >= expires):
                if self._refresh_token is None:
                    raise CredentialsError("oidc: the id-token expired, and there is no refresh-token")
                tokens = await oidc.refresh(config, self._refresh_token)
                token, expires, self._refresh_token = tokens.id_token, tokens.expires, tokens.refresh_token
        except oidc.OidcError as e:
            raise CredentialsError(f"oidc: {e}") from None
        self._header, self._expires = f"Bearer {token}", expires


def _exec_info(spec: ExecConfig, access: ClusterAccess) -> str:
    body: dict[str, object] = {"interactive": False}
    if spec.provide_cluster_info:
        cluster: dict[str, object] = {"server": access.server, "insecure-skip-tls-verify": access.insecure}
        if access.ca is not None:
            cluster["certificate-authority-data"] = base64.b64encode(access.ca).decode()
        if access.tls_server_name:
            cluster["tls-server-name"] = access.tls_server_name
        if access.proxy_url:
            cluster["proxy-url"] = access.proxy_url
        body["cluster"] = cluster
    return json.dumps({"apiVersion": spec.api_version, "kind": "ExecCredential", "spec": body})


async def run_exec(spec: ExecConfig, access: ClusterAccess, timeout: float = EXEC_TIMEOUT) -> ExecResult:
    """Run a credential plugin once, as client-go does (KUBERNETES_EXEC_INFO in, an ExecCredential out)."""
    what = f"exec plugin {quote(spec.command, 80)}"
    env = {**os.environ, **dict(spec.env), "KUBERNETES_EXEC_INFO": _exec_info(spec, access)}
    try:
        proc = await asyncio.create_subprocess_exec(
            spec.command, *spec.args, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        hint = f" ({clip(spec.install_hint.strip())})" if spec.install_hint else ""
        raise CredentialsError(f"{what}: cannot run: {e.strerror or e}{hint}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CredentialsError(f"{what}: no answer in {timeout:g}s") from None
    finally:
        if proc.returncode is None:  # cancelled: do not leave it behind
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        stderr = clip(err.decode(errors="replace").strip())
        raise CredentialsError(f"{what}: exited with {proc.returncode}{': ' + stderr if stderr else ''}")
    if len(out) > MAX_FILE_BYTES:
        raise CredentialsError(f"{what}: answer larger than {MAX_FILE_BYTES} bytes")
    return parse_exec_credential(out, spec, what)


def parse_exec_credential(out: bytes, spec: ExecConfig, what: str) -> ExecResult:
    try:
        doc = json.loads(out)
    except ValueError as e:
        raise CredentialsError(f"{what}: answer is not JSON: {clip(str(e))}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise CredentialsError(f"{what}: answer is not an ExecCredential")
    if doc.get("apiVersion") != spec.api_version:
        raise CredentialsError(f"{what}: answered apiVersion {quote(doc.get('apiVersion'))}, asked {spec.api_version}")
    status = doc.get("status")
    if not isinstance(status, dict):
        raise CredentialsError(f"{what}: answer has no status")
    token, cert, key = status.get("token"), status.get("clientCertificateData"), status.get("clientKeyData")
    if not (isinstance(token, str) and token) and not (isinstance(cert, str) and isinstance(key, str)):
        raise CredentialsError(f"{what}: status has neither a token nor clientCertificateData and clientKeyData")
    expires = None
    stamp = status.get("expirationTimestamp")
    if stamp is not None:
        try:
            expires = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise CredentialsError(f"{what}: expirationTimestamp {quote(stamp)} is not RFC 3339") from None
    return ExecResult(
        token if isinstance(token, str) and token else None,
        cert.encode() if isinstance(cert, str) else None,
        key.encode() if isinstance(key, str) else None,
        expires,
    )

