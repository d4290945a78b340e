"""A fake Kubernetes API server for tests: an aiohttp app on a loopback port, plus cues that let a test
change the cluster (pods, listeners, readiness, termination) and break it (compaction, dropped watches,
failing requests, restarts).

Checked with the real kubernetes_asyncio client in test_fakekube.py. kubectl (v1.32) was checked by hand only,
as tests must not need it: run `python -m tests.fakekube --kubeconfig /tmp/fake.kubeconfig`, then
`kubectl --kubeconfig /tmp/fake.kubeconfig apply --validate=false -f manifests/examples/`,
`get pods -w`, `get ingresslisteners`, `delete -f manifests/examples/`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import resources
from .resources import POD, ResourceType
from .selectors import ObjectPredicate, field_selector, label_selector
from .status import ApiError
from .store import Store, Watch, now

_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


class FakeKube:
    """One fake cluster. Use `async with FakeKube() as kube:`, or `start()`/`stop()` (data is kept across them)."""

    def __init__(self, port: int = 0, bookmark_interval: float = 1.0) -> None:
        self.store = Store()
        self.bookmark_interval = bookmark_interval
        self._port = port
        self._runner: web.AppRunner | None = None
        self._watch_transports: set[asyncio.Transport] = set()
        self._failures: list[int] = []
        self._unserved: set[ResourceType] = set()
        self._forbidden: set[ResourceType] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        """Listen; after a `stop()` this listens on the same port again, as a restarted API server."""
        runner = web.AppRunner(self._app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self._port).start()
        self._port = runner.addresses[0][1]
        self._runner = runner

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

    def write_kubeconfig(self, path: str | Path, context_name: str = "fake", namespace: str = "default") -> Path:
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context_name, "cluster": {"server": self.url}}],
            "users": [{"name": context_name, "user": {"token": "fake-token"}}],
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
        # Discovery paths are asked for with and without a trailing slash (kubernetes_asyncio adds one).
        for path in ("/version", "/api", "/api/{version}", "/apis", "/apis/{group}", "/apis/{group}/{version}"):
            app.router.add_get(path, self._discovery)
            app.router.add_get(path + "/", self._discovery)
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            app.router.add_get(prefix + "/{plural}", self._collection)
            app.router.add_route("*", prefix + "/namespaces/{ns}/{plural}", self._collection)
            app.router.add_route("*", prefix + "/namespaces/{ns}/{plural}/{name}", self._item)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            if self._failures:
                code = self._failures.pop()
                raise ApiError(code, f"injected failure ({len(self._failures)} more to come)")
            return await handler(request)
        except ApiError as err:
            return _status(err)
        except web.HTTPNotFound:
            return _status(ApiError(404, "the server could not find the requested resource"))
        except web.HTTPMethodNotAllowed:
            return _status(ApiError(405, f"the server does not allow this method ({request.method})"))

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
        if request.method == "POST" and namespace is not None:
            return web.json_response(self.store.create(rtype, namespace, await _body(request)), status=201)
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        query = request.query
        labels = label_selector(query.get("labelSelector"))
        fields = field_selector(query.get("fieldSelector"), rtype.field_selectors)

        def matches(obj: dict) -> bool:
            return labels(obj) and fields(obj)

        if _flag(query.get("watch")):
            return await self._watch(request, rtype, namespace, matches)
        return web.json_response(self._list(rtype, self.store.list(rtype, namespace, matches), query))

    def _list(self, rtype: ResourceType, items: list[dict], query: Mapping[str, str]) -> dict:
        """A list, paged by `limit` and `continue`. Unlike the real server, later pages come from the current
        state, not from a snapshot at the first page's resourceVersion. As the real server does, items of the
        core group come without kind and apiVersion."""
        offset = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items)
        meta: dict[str, Any] = {"resourceVersion": str(self.store.revision)}
        if offset + limit < len(items):
            meta.update({"continue": str(offset + limit), "remainingItemCount": len(items) - offset - limit})
        page = items[offset:offset + limit]
        if not rtype.group:
            page = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in page]
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta, "items": page}

    async def _item(self, request: web.Request) -> web.Response:
        rtype, info = self._resource_type(request), request.match_info
        namespace, name = info["ns"], info["name"]
        if request.method == "GET":
            return web.json_response(self.store.get(rtype, namespace, name))
        if request.method == "PUT":
            return web.json_response(self.store.replace(rtype, namespace, name, await _body(request)))
        if request.method == "PATCH":
            kind = _PATCH_TYPES.get(request.content_type)
            if kind is None:
                raise ApiError(415, f"the body of the request was in an unknown format: {request.content_type}")
            body = await _body(request)
            if kind == "apply":
                return web.json_response(self.store.apply(rtype, namespace, name, body))
            return web.json_response(self.store.patch(rtype, namespace, name, body, kind == "strategic"))
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
        try:
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
            await response.write(event.line())

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
    return web.json_response(err.status(), status=err.code)


async def _body(request: web.Request) -> dict:
    text = await request.text()
    try:
        body = yaml.safe_load(text) if request.content_type.endswith("yaml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ApiError(400, f"the request body is not valid: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be an object")
    return body
