"""The one module that talks to Kubernetes API servers, through kubernetes_asyncio.

It offers what the reflectors need: paged lists and watch streams of plain dicts (no model classes: parsing is
`model.parse_object`'s job, and deserialising every pod into a V1Pod costs CPU for nothing); and the few writes the
status writer makes (get, create, update, JSON merge patch), with plain dicts too. Every failure,
whether HTTP, connection, timeout, credentials or a watch's ERROR event, comes out as one exception type, `KubeError`.

The kubeconfig is read by kubeconfig.py, not by kubernetes_asyncio (no temp files, clear errors); the bearer token
comes from credentials.py before every request (renewed when it expires), and a 401 renews it and retries once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as k8s_client

from ...text import clip
from . import kubeconfig
from .credentials import Credentials, CredentialsError
from .memfiles import memory_files

RETRY_AFTER_MAX = 300.0  # a Retry-After longer than this is read as this

from ...text import clip


class KubeError(Exception):
    """A failed request or watch; `code` is the HTTP status (or the Status code of a watch ERROR event), None when
    the server could not be reached or the connection broke."""

    def __init__(self, message: str, code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after  # seconds the server asked to wait (429 Retry-After)

    @property
    def expired(self) -> bool:
        """410 Gone: the resourceVersion asked for is older than the server keeps; only a relist helps."""
        return self.code == 410

    @property
    def too_large_resource_version(self) -> bool:
        """504 "Too large resource version": the server is behind the version asked for (etcd restored from a
        backup, a rebuilt cluster); it may never catch up, so only a list from scratch helps."""
        return self.code == 504 and "too large resource version" in str(self).lower()


@dataclass(frozen=True)
class Resource:
    kind: str
    api_version: str  # "v1" for the core group, else "group/version"
    plural: str

    def path(self, namespace: str | None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.plural}"

    def item_path(self, namespace: str, name: str, subresource: str = "") -> str:
        """One object's path (or its subresource's: "status"); names are quoted, so none can change the path."""
        path = f"{self.path(namespace)}/{quote(name, safe='')}"
        return f"{path}/{subresource}" if subresource else path


@dataclass(frozen=True)
class ListResult:
    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED or BOOKMARK
    object: dict[str, Any]

    @property
    def resource_version(self) -> str | None:
        meta = self.object.get("metadata") if isinstance(self.object, dict) else None
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        return version if isinstance(version, str) else None


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn connection-level failures into KubeError."""
    try:
        yield
    except CredentialsError as e:
        raise KubeError(f"{what}: credentials: {e}") from e
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, RuntimeError) as e:
        # RuntimeError: "Session is closed", a request that started on a client replaced meanwhile (a new exec
        # client certificate): it is retried like a broken connection.
        raise KubeError(f"{what}: {type(e).__name__}: {e}".rstrip(": ")) from e


def _status_error(status: Any, fallback_code: int, retry_after: float | None = None) -> KubeError:
    """A KubeError from a `Status` object (an error body, or a watch ERROR event)."""
    if not isinstance(status, dict):
        return KubeError(f"HTTP {fallback_code}", fallback_code, retry_after)
    code = status.get("code") if isinstance(status.get("code"), int) else fallback_code
    reason = status.get("reason") or "Error"
    details = status.get("details") if isinstance(status.get("details"), dict) else {}
    if retry_after is None and isinstance(details.get("retryAfterSeconds"), int):
        retry_after = min(max(float(details["retryAfterSeconds"]), 0.0), RETRY_AFTER_MAX)
    message = clip(f"{code} {reason}: {status.get('message', '')}".rstrip(": "), 400)
    return KubeError(message, code, retry_after)


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is not used by API servers), bounded."""
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MAX) if value else None
    except ValueError:
        return None


class WatchStream:
    """One open watch: iterate it for events until the server ends the stream; `close()` when done."""

    def __init__(self, response: aiohttp.ClientResponse, what: str) -> None:
        self._response = response
        self._what = what

    async def __aiter__(self) -> AsyncIterator[WatchEvent]:
        buffer = bytearray()
        chunks = self._response.content.iter_any()
        while True:
            with _errors(self._what):
                chunk = await anext(chunks, None)
            if chunk is None:
                return
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            buffer = bytearray(rest)
            for line in lines:
                if line.strip():
                    yield self._event(line)

    def _event(self, line: bytes | bytearray) -> WatchEvent:
        with _errors(self._what):
            event = json.loads(line)
        if not isinstance(event, dict):
            raise KubeError(f"{self._what}: not a watch event: {clip(line.decode(errors='replace'))}")
        if event.get("type") == "ERROR":
            raise _status_error(event.get("object"), 500)
        return WatchEvent(str(event.get("type", "")), event.get("object") or {})

    async def close(self) -> None:
        self._response.release()


class KubeClient:
    def __init__(self, access: kubeconfig.ClusterAccess, credentials: Credentials) -> None:
        self.access = access
        self.credentials = credentials
        self._tls = self._client_tls()
        self._api = _api_client(access, credentials, self._tls)

    def _client_tls(self) -> tuple[bytes | None, bytes | None]:
        """The client certificate and key to connect with: the exec plugin's, else the kubeconfig's."""
        return self.credentials.exec_cert or (self.access.client_cert, self.access.client_key)

    async def _current(self) -> k8s_client.ApiClient:
        """The API client, rebuilt first when the exec plugin renewed the client certificate (open watches on the
        old connections end, and resume from their resourceVersion)."""
        if self.credentials.access.exec is not None:
            await self.credentials.header()  # renews an expired certificate; a token is renewed per request anyway
            if self._client_tls() != self._tls:
                old, self._tls = self._api, self._client_tls()
                self._api = _api_client(self.access, self.credentials, self._tls)
                await old.close()
        return self._api

    @property
    def server(self) -> str:
        return str(self._api.configuration.host)

    async def _request(
        self, method: str, path: str, params: dict[str, str], timeout: aiohttp.ClientTimeout,
        body: dict[str, Any] | None = None, content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        """A request answered 2xx, or KubeError. A 401 renews refreshable credentials and tries once more."""
        what = f"{method} {path}"
        credentials = self.credentials
        for attempt in range(2):
            generation = credentials.generation if credentials else 0
            with _errors(what):
                api = await self._current()
                response = await api.call_api(
                    path, method, query_params=[(k, v) for k, v in params.items() if v],
                    header_params={"Accept": "application/json", "Content-Type": content_type}, body=body,
                    auth_settings=["BearerToken"], response_types_map={}, _preload_content=False,
                    _request_timeout=timeout,
                )
            if response.status < 300:
                return response
            retry_after = _retry_after(response.headers.get("Retry-After"))
            with _errors(what):
                text = await response.text()
            response.release()
            if response.status == 401 and attempt == 0 and credentials is not None and credentials.refreshable:
                credentials.invalidate(generation)
                continue
            try:
                body = json.loads(text)
            except ValueError:
                body = {"message": text[:200]}
            raise _status_error(body, response.status, retry_after)
        raise AssertionError("unreachable")

    async def _get(
        self, path: str, params: dict[str, str], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        return await self._request("GET", path, params, timeout)

    async def _json(
        self, method: str, path: str, timeout: float, body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        response = await self._request(method, path, {}, aiohttp.ClientTimeout(total=timeout), body, content_type)
        with _errors(f"{method} {path}"):
            answer = await response.json()
        return answer if isinstance(answer, dict) else {}

    # Writes: only the status writer (status/) uses them, and only while it holds the lease.

    async def get(self, path: str, *, timeout: float) -> dict[str, Any]:
        """One object (or a list), as a plain dict."""
        return await self._json("GET", path, timeout)

    async def create(self, path: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """POST `body` to a collection; 409 AlreadyExists comes out as KubeError with code 409."""
        return await self._json("POST", path, timeout, body)

    async def update(self, path: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """PUT `body`; with `metadata.resourceVersion` set, a stale one fails with 409 Conflict."""
        return await self._json("PUT", path, timeout, body)

    async def patch(self, path: str, patch: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): keys set to None are removed, lists are replaced whole."""
        return await self._json("PATCH", path, timeout, patch, "application/merge-patch+json")
    async def list(
        self, resource: Resource, namespace: str | None, *, field_selector: str = "", label_selector: str = "",
        page_size: int, timeout: float,
    ) -> ListResult:
        """Every object, in pages; the resourceVersion to watch from is the first page's."""
        items: list[dict[str, Any]] = []
        resource_version, token = "", ""
        while True:
            params = {
                "fieldSelector": field_selector, "labelSelector": label_selector, "limit": str(page_size),
                "continue": token,
            }
            response = await self._get(resource.path(namespace), params, aiohttp.ClientTimeout(total=timeout))
            with _errors(f"GET {resource.path(namespace)}"):
                body = await response.json()
            meta = body.get("metadata") or {}
            items += body.get("items") or []
            resource_version = resource_version or meta.get("resourceVersion", "")
            token = meta.get("continue") or ""
            if not token:
                return ListResult(items, resource_version)

    async def watch(
        self, resource: Resource, namespace: str | None, *, resource_version: str, field_selector: str = "",
        label_selector: str = "", timeout_seconds: int, connect_timeout: float, read_timeout: float,
    ) -> WatchStream:
        """Open a watch from `resource_version`, with bookmarks; the server ends it after `timeout_seconds`, and
        the client gives up on a connection silent for `read_timeout`."""
        params = {
            "watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds), "fieldSelector": field_selector, "labelSelector": label_selector,
        }
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        response = await self._get(resource.path(namespace), params, timeout)
        return WatchStream(response, f"watch {resource.path(namespace)}")

    async def close(self) -> None:
        await self._api.close()


async def connect(path: Path | None, context: str | None) -> KubeClient:
    """A client from a kubeconfig file (and context), or, without one, from the pod's service account. The
    credentials are obtained once here (an exec plugin runs), so that a cluster that cannot authenticate says so."""
    source = str(path) if path is not None else "in-cluster service account"
    try:
        access = kubeconfig.in_cluster() if path is None else kubeconfig.load(path, context)
    except kubeconfig.KubeconfigError as e:
        raise KubeError(f"cannot load credentials from {source}: {e}") from e
    credentials = Credentials(access, reload=None if path is None else lambda: kubeconfig.load(path, context))
    try:
        await credentials.header()
    except CredentialsError as e:
        raise KubeError(f"cannot get credentials for {access.server} from {source}: {e}") from e
    try:
        return KubeClient(access, credentials)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise KubeError(f"cannot use the TLS material from {source}: {type(e).__name__}: {e}") from e


def _api_client(
    access: kubeconfig.ClusterAccess, credentials: Credentials, client_tls: tuple[bytes | None, bytes | None]
) -> k8s_client.ApiClient:
    """A kubernetes_asyncio client whose requests carry the credentials' current Authorization header, with a TLS
    context built from memory (no file is written: the root filesystem may be read-only)."""
    configuration = k8s_client.Configuration(host=access.server)
    configuration.verify_ssl = not access.insecure
    configuration.tls_server_name = access.tls_server_name
    configuration.proxy = access.proxy_url
    if credentials.obtained_header is not None:  # a user without a token (a client certificate) sends none
        configuration.api_key["BearerToken"] = credentials.obtained_header

        async def authorize(config: k8s_client.Configuration) -> None:  # called before every request
            config.api_key["BearerToken"] = await credentials.header() or ""

        configuration.refresh_api_key_hook = authorize
    with memory_files(access.ca, *client_tls) as (ca_file, cert_file, key_file):
        configuration.ssl_ca_cert, configuration.cert_file, configuration.key_file = ca_file, cert_file, key_file
        api = k8s_client.ApiClient(configuration)  # builds its SSL context from the files, now
    configuration.ssl_ca_cert = configuration.cert_file = configuration.key_file = None
    return api
