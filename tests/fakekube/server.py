"""A fake Kubernetes API server for tests: an aiohttp app on a loopback port, plus cues that let a test
change the cluster (pods, listeners, readiness, termination) and break it (compaction, dropped watches,
failing requests, restarts that rebuild the watch cache, a restored etcd, throttling, expiring tokens).

What it speaks: discovery, list (paged from a consistent snapshot; continue tokens expire with compaction), watch
(bookmarks, 410, 504 "Too large resource version"), create/replace/patch/delete, bearer tokens and client
certificates (access.py; HTTPS with `tls=True`, certs.py), CRDs (apiextensions.k8s.io/v1) with schema validation
of custom resources (crds.py, schema.py), OpenAPI v3 discovery (openapi.py) so that kubectl validates, the
listeners' status subresource (subresources.py), core/v1 Events and coordination.k8s.io/v1 Leases; for the
benchmark (bench/kube.py), when each watch event was written and writes applied in one go (benchapi.py).

Checked with the real kubernetes_asyncio client in test_fakekube.py, and with kubectl (v1.32) in test_kubectl.py
(skipped where kubectl is not installed): `python -m tests.fakekube --kubeconfig /tmp/fake.kubeconfig`, then
`kubectl --kubeconfig /tmp/fake.kubeconfig apply -f manifests/crds/`, `apply -f manifests/examples/`,
`get pods -w`, `get ingresslisteners`, `delete -f manifests/examples/`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import benchapi, crds, openapi, resources, subresources
from .patches import merge_patch
from .access import Authenticator, Throttle, rfc3339
from .paging import Pager
from .resources import POD, ResourceType
from .selectors import ObjectPredicate, field_selector, label_selector
from .status import ApiError, expired
from .store import Store, Watch, now

WRITE_BATCH = 32 * 1024  # bytes of queued watch events written at once

_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


class FakeKube:
    """One fake cluster. Use `async with FakeKube() as kube:`, or `start()`/`stop()` (data is kept across them)."""

    def __init__(
        self,
        port: int = 0,
        bookmark_interval: float = 1.0,
        tls: bool = False,
        install_crds: bool = False,
        record_sent: bool = False,
    ) -> None:
        """`tls`: serve HTTPS with a certificate of a CA of its own (`self.tls`), and accept its client certificates
        as x509 authentication. `install_crds`: start with the repository's CRDs (manifests/crds) installed; else
        they are installed as in a real cluster, by `kubectl apply`, and until then custom resources go unvalidated.
        `record_sent`: record when each watch event is written (benchapi.py; for the benchmark)."""
        self.store = Store()
        if install_crds:
            crds.install_repo_crds(self.store)
        self.bookmark_interval = bookmark_interval
        self.auth = Authenticator()  # off until `auth.require()`
        self.throttle = Throttle()
        self.tls = None
        if tls:
            from .certs import ServerTLS  # needs `cryptography`

            self.tls = ServerTLS()
        self._port = port
        self._runner: web.AppRunner | None = None
        self._watch_transports: set[asyncio.Transport] = set()
        self._failures: list[int] = []
        self._unserved: set[ResourceType] = set()
        self._forbidden: set[ResourceType] = set()
        self._pager = Pager()
        self.requests: list[tuple[str, str]] = []  # (method, path and query) of every request, in order
        self._watch_answer: str | None = None  # "expired" or "empty": how every watch is answered (see cues)
        self.sent = benchapi.SentLog() if record_sent else None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    async def start(self) -> None:
        """Listen; after a `stop()` this listens on the same port again, as an API server that was unreachable."""
        runner = web.AppRunner(self._app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        context = self.tls.context() if self.tls else None
        await web.TCPSite(runner, "127.0.0.1", self._port, ssl_context=context).start()
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def restart(self) -> None:
        """Stop and start as a restarted API server does: its watch cache is rebuilt from the current state, so
        watches from any older resourceVersion get 410 Expired, and continue tokens of earlier lists expire."""
        await self.stop()
        self.store.compact()
        self._pager.clear()
        await self.start()

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKube:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # cues

    def upsert(self, obj: dict) -> dict:
        """Create or replace `obj` (its `kind` says which type, namespace defaults to `default`)."""
        return self.store.upsert(resources.by_kind(obj["kind"]), obj)

    def get(self, kind: str, namespace: str, name: str) -> dict:
        return self.store.get(resources.by_kind(kind), namespace, name)

    def delete(self, kind: str, namespace: str, name: str) -> dict:
        """Delete as a client would: a held pod becomes Terminating instead."""
        return self.store.delete(resources.by_kind(kind), namespace, name)

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> dict:
        pod = self.store.get(POD, namespace, name)
        status = pod.setdefault("status", {})
        others = [c for c in status.get("conditions", []) if c.get("type") != "Ready"]
        ready_condition = {"type": "Ready", "status": str(ready), "lastTransitionTime": now()}
        status["conditions"] = [*others, ready_condition]
        return self.store.replace(POD, namespace, name, pod)

    def compact(self) -> None:
        self.store.compact()

    def drop_watches(self) -> None:
        """Cut every open watch connection, as a network failure or a crashing API server would."""
        for transport in list(self._watch_transports):
            transport.abort()
        self._watch_transports.clear()

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next `n` requests, whatever they are, fail with `status`."""
        self._failures = [status] * n

    def throttle_next(self, n: int, retry_after: int = 1) -> None:
        """The next `n` API requests get 429 TooManyRequests with `Retry-After: retry_after` (seconds)."""
        self.throttle.count, self.throttle.retry_after = n, retry_after

    def answer_watches(self, how: str | None) -> None:
        """From now on answer every watch with a 410 Expired event ("expired": a server that compacts faster than
        clients can relist) or with a 200 that ends at once with no event ("empty": a broken proxy); None: normally."""
        assert how in (None, "expired", "empty")
        self._watch_answer = how

    def backup(self) -> Store:
        """The data and revision now, for `restore()`."""
        return self.store.snapshot()

    def restore(self, backup: Store) -> None:
        """Go back in time, as a cluster whose etcd was restored from a backup: the resourceVersion drops, watches
        are cut, and a watch from a version the server has not reached gets 504 "Too large resource version"."""
        self.drop_watches()
        self.store.restore(backup)
        self._pager.clear()

    def set_served(self, kind: str, served: bool) -> None:
        """Stop (or resume) serving a kind's paths with 404, as a cluster where its CRD is not installed.
        Discovery still lists it, and the stored objects are kept."""
        rtype = resources.by_kind(kind)
        if served:
            self._unserved.discard(rtype)
        else:
            self._unserved.add(rtype)

    def set_forbidden(self, kind: str, forbidden: bool) -> None:
        """Answer a kind's paths with 403 (or stop), as RBAC does for a service account its role does not cover."""
        rtype = resources.by_kind(kind)
        if forbidden:
            self._forbidden.add(rtype)
        else:
            self._forbidden.discard(rtype)

    def hold_terminating(self, hold: bool = True) -> None:
        self.store.hold_terminating = hold

    def finish_termination(self) -> None:
        self.store.finish_termination()

    def write_kubeconfig(
        self, path: str | Path, context_name: str = "fake", namespace: str = "default", user: dict | None = None
    ) -> Path:
        """A kubeconfig for this server; `user` replaces the user entry (default: the token `fake-token`). With TLS,
        the CA is embedded as certificate-authority-data."""
        path = Path(path)
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls:
            cluster["certificate-authority-data"] = base64.b64encode(self.tls.ca.pem).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context_name, "cluster": cluster}],
            "users": [{"name": context_name, "user": user if user is not None else {"token": "fake-token"}}],
            "contexts": [{
                "name": context_name,
                "context": {"cluster": context_name, "user": context_name, "namespace": namespace},
            }],
            "current-context": context_name,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # HTTP

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/fakekube/token", self._issue_token)
        app.router.add_get("/fakekube/client-certificate", self._issue_certificate)
        benchapi.add_routes(app, self)
        # Discovery paths are asked for with and without a trailing slash (kubernetes_asyncio adds one).
        for path in ("/version", "/api", "/api/{version}", "/apis", "/apis/{group}", "/apis/{group}/{version}"):
            app.router.add_get(path, self._discovery)
            app.router.add_get(path + "/", self._discovery)
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            app.router.add_route("*", prefix + "/{plural}", self._collection)  # all namespaces, or cluster-scoped
            app.router.add_route("*", prefix + "/{plural}/{name}", self._item)  # cluster-scoped
            app.router.add_route("*", prefix + "/namespaces/{ns}/{plural}", self._collection)
            app.router.add_route("*", prefix + "/namespaces/{ns}/{plural}/{name}", self._item)
            app.router.add_route("*", prefix + "/namespaces/{ns}/{plural}/{name}/status", self._status_item)
        app.router.add_get("/openapi/v3", self._openapi)
        app.router.add_get("/openapi/v3/{gv:.+}", self._openapi)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        try:
            if self._failures:
                code = self._failures.pop()
                raise ApiError(code, f"injected failure ({len(self._failures)} more to come)")
            if not request.path.startswith("/fakekube/"):
                self.auth.check(request.headers.get("Authorization"), self._client_certificate(request))
                self.throttle.check()
            return await handler(request)
        except ApiError as err:
            return _status(err)
        except web.HTTPNotFound:
            return _status(ApiError(404, "the server could not find the requested resource"))
        except web.HTTPMethodNotAllowed:
            return _status(ApiError(405, f"the server does not allow this method ({request.method})"))

    def _client_certificate(self, request: web.Request) -> str | None:
        """The CN of the request's client certificate, which the TLS layer verified against the server's CA."""
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        names = [value for rdn in (peer or {}).get("subject", ()) for key, value in rdn if key == "commonName"]
        return names[0] if names else None

    async def _issue_token(self, request: web.Request) -> web.Response:
        """For the test credential plugin: a new token, the only one accepted from now on (see access.py)."""
        lifetime = request.query.get("lifetime")
        token, expires = self.auth.issue(float(lifetime) if lifetime else None)
        body: dict[str, Any] = {"token": token}
        if expires is not None:
            body["expirationTimestamp"] = rfc3339(expires)
        return web.json_response(body)

    async def _issue_certificate(self, request: web.Request) -> web.Response:
        """For the test credential plugin: a new client certificate, the only one accepted from now on."""
        if self.tls is None:
            raise ApiError(404, "the fake serves client certificates only with tls=True")
        lifetime = float(request.query["lifetime"]) if "lifetime" in request.query else None
        self.auth.issued += 1
        name = f"exec-{self.auth.issued}"
        issued = self.tls.ca.issue(name, server=False)
        self.auth.accept_certificate(name, lifetime)
        body: dict[str, Any] = {"name": name, "cert": issued.cert.decode(), "key": issued.key.decode()}
        if lifetime is not None:
            body["expirationTimestamp"] = rfc3339(time.time() + lifetime)
        return web.json_response(body)

    async def _discovery(self, request: web.Request) -> web.Response:
        info, path = request.match_info, request.path.rstrip("/")
        found: dict | None
        if path == "/version":
            found = resources.version_info()
        elif path == "/api":
            found = resources.core_versions(f"127.0.0.1:{self._port}")
        elif path == "/apis":
            found = resources.group_list()
        elif "version" not in info:
            found = resources.group(info["group"])
        else:
            found = resources.resource_list(info.get("group", ""), info["version"])
        if found is None:
            raise ApiError(404, "the server could not find the requested resource")
        return web.json_response(found)

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        rtype, namespace = self._resource_type(request), request.match_info.get("ns")
        if request.method == "POST" and (namespace is not None or not rtype.namespaced):
            namespace = namespace or ""
            obj = self._admit(request, rtype, subresources.on_create(rtype, await _body(request)))
            return web.json_response(self.store.create(rtype, namespace, obj), status=201)
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        query = request.query
        labels = label_selector(query.get("labelSelector"))
        fields = field_selector(query.get("fieldSelector"), rtype.field_selectors)

        def matches(obj: dict) -> bool:
            return labels(obj) and fields(obj)

        if _flag(query.get("watch")):
            return await self._watch(request, rtype, namespace, matches)
        return web.json_response(self._list(rtype, lambda: self.store.list(rtype, namespace, matches), query))

    def _list(self, rtype: ResourceType, items: Callable[[], list[dict]], query: Mapping[str, str]) -> dict:
        """A list, paged by `limit` and `continue` from one snapshot (paging.py; `items()` is read for a first page
        only). As the real server does, items of the core group come without kind and apiVersion."""
        page, meta = self._pager.page(items, self.store.revision, self.store.compacted, query)
        if not rtype.group:
            page = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in page]
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta, "items": page}

    async def _status_item(self, request: web.Request) -> web.Response:
        if not self._resource_type(request).status_subresource:
            raise ApiError(404, "the server could not find the requested resource")
        if request.method not in ("GET", "PUT", "PATCH"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "PATCH"])
        return await self._item(request, subresources.STATUS)

    async def _item(self, request: web.Request, subresource: str | None = None) -> web.Response:
        rtype, info = self._resource_type(request), request.match_info
        namespace, name = info.get("ns", ""), info["name"]
        if rtype.namespaced != bool(namespace):
            raise ApiError(404, "the server could not find the requested resource")
        if request.method == "GET":
            return web.json_response(self.store.get(rtype, namespace, name))
        if request.method == "PUT":
            current = self.store.get(rtype, namespace, name)
            obj = self._admit(request, rtype, subresources.scoped(rtype, subresource, current, await _body(request)))
            return web.json_response(self.store.replace(rtype, namespace, name, obj))
        if request.method == "PATCH":
            kind = _PATCH_TYPES.get(request.content_type)
            if kind is None:
                raise ApiError(415, f"the body of the request was in an unknown format: {request.content_type}")
            body = await _body(request)
            exists = self.store.exists(rtype, namespace, name)
            if (kind != "apply" or subresource) and not exists:
                self.store.get(rtype, namespace, name)  # 404
            if exists:  # the object as the patch makes it, admitted, then written
                current = self.store.get(rtype, namespace, name)
                patched = merge_patch(current, body, kind != "merge")
                obj = self._admit(request, rtype, subresources.scoped(rtype, subresource, current, patched))
                return web.json_response(self.store.replace(rtype, namespace, name, obj))
            obj = self._admit(request, rtype, merge_patch({"metadata": {"name": name}}, body))
            return web.json_response(self.store.create(rtype, namespace, obj))
        if request.method == "DELETE":
            options = await _body(request) if request.can_read_body else {}
            grace = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            return web.json_response(self.store.delete(rtype, namespace, name, None if grace is None else int(grace)))
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "PATCH", "DELETE"])

    async def _watch(
        self, request: web.Request, rtype: ResourceType, namespace: str | None, matches: ObjectPredicate
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        if self._watch_answer == "empty":
            await response.prepare(request)
            await response.write_eof()
            return response
        try:
            if self._watch_answer == "expired":
                raise expired(request.query.get("resourceVersion") or "0", self.store.revision)
            watch = self.store.open_watch(rtype, namespace, matches, request.query.get("resourceVersion"))
        except ApiError as err:
            if err.code != 410:
                raise
            # As the real server: the answer is a 200 stream whose only event is the error.
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": err.status()}).encode() + b"\n")
            await response.write_eof()
            return response
        await response.prepare(request)
        transport = request.transport
        assert transport is not None, "a request being answered has a connection"
        self._watch_transports.add(transport)
        try:
            await self._stream(request, response, watch)
        finally:
            self.store.close_watch(watch)
            self._watch_transports.discard(transport)
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request, response: web.StreamResponse, watch: Watch) -> None:
        """Write events until `timeoutSeconds` is up; when idle, a BOOKMARK every `bookmark_interval` if asked."""
        loop = asyncio.get_running_loop()
        timeout = request.query.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        bookmarks = _flag(request.query.get("allowWatchBookmarks"))
        next_bookmark = loop.time() + self.bookmark_interval
        while deadline is None or loop.time() < deadline:
            wake = min((t for t in (deadline, next_bookmark if bookmarks else None) if t is not None), default=None)
            try:
                event = await asyncio.wait_for(watch.queue.get(), None if wake is None else wake - loop.time())
            except TimeoutError:
                if bookmarks and loop.time() >= next_bookmark:
                    await response.write(self._bookmark(watch.rtype))
                    next_bookmark = loop.time() + self.bookmark_interval
                continue
            # Events already queued go out in one write of up to WRITE_BATCH bytes, as the real server's buffered
            # writer sends them (it flushes when no more are queued): a burst is not one syscall per event.
            events, lines = [event], [event.line()]
            size = len(lines[0])
            while size < WRITE_BATCH and not watch.queue.empty():
                events.append(watch.queue.get_nowait())
                lines.append(events[-1].line())
                size += len(lines[-1])
            await response.write(b"".join(lines))
            if self.sent is not None:
                for sent in events:
                    self.sent.record(watch.rtype, sent)

    def _admit(self, request: web.Request, rtype: ResourceType, obj: dict) -> dict:
        """Validation of a written object (custom resources against their CRD; see crds.py)."""
        return crds.admit(self.store, rtype, obj, request.query.get("fieldValidation"))

    async def _openapi(self, request: web.Request) -> web.Response:
        schemas = {rt: found for rt in resources.RESOURCE_TYPES if rt.group
                   and (found := crds.schema_of(self.store, rt)) is not None}
        gv = request.match_info.get("gv")
        if gv is None:
            return web.json_response(openapi.root(schemas))
        parts = gv.split("/")
        group, version = (parts[1], parts[2]) if parts[0] == "apis" and len(parts) == 3 else ("", parts[-1])
        found = openapi.document(group, version, schemas) if parts[0] in ("api", "apis") else None
        if found is None:
            raise ApiError(404, "the server could not find the requested resource")
        return web.json_response(found)

    def _resource_type(self, request: web.Request) -> ResourceType:
        info = request.match_info
        rtype = resources.by_path(info.get("group", ""), info["version"], info["plural"])
        if rtype is None or rtype in self._unserved:
            raise ApiError(404, "the server could not find the requested resource")
        if rtype in self._forbidden:
            raise ApiError(403, f'{rtype.plural} is forbidden: User "fake" cannot list resource "{rtype.plural}"')
        return rtype

    def _bookmark(self, rtype: ResourceType) -> bytes:
        obj = {"kind": rtype.kind, "apiVersion": rtype.api_version,
               "metadata": {"resourceVersion": str(self.store.revision)}}
        return json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"


def _flag(value: str | None) -> bool:
    """A boolean query parameter, read as Go's strconv.ParseBool does (clients send `true`, `True` or `1`)."""
    return value in ("1", "t", "T", "true", "True", "TRUE")


def _status(err: ApiError) -> web.Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
    return web.json_response(err.status(), status=err.code, headers=headers)


async def _body(request: web.Request) -> dict:
    text = await request.text()
    try:
        body = yaml.safe_load(text) if request.content_type.endswith("yaml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ApiError(400, f"the request body is not valid: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be an object")
    return body
