"""What the benchmark (bench/kube.py) needs of the fake beyond the Kubernetes API: when each watch event left the
server, and writes applied all at once.

- `SentLog`: with `FakeKube(record_sent=True)`, every event written to a watch stream is recorded with the
  CLOCK_MONOTONIC time at which the write returned (the bytes handed to the connection), its resourceVersion, type
  and object. CLOCK_MONOTONIC is one clock for every process of the host, so another process can subtract it from
  its own `time.monotonic()`.
- `GET /fakekube/sent?after=K`: the records from the K-th on (`{"next": K', "events": [...]}`).
- `POST /fakekube/batch` `{"ops": [{"op": "upsert", "object": {...}} | {"op": "delete", "kind", "namespace",
  "name"}, ...]}`: applied in order in one go, as test cues are (objects are not admitted: no schema validation),
  so every event is queued before the first is sent, as when many controllers write at the same moment. Answers the
  first and last resourceVersion written and the monotonic times just before the first and after the last write.
- `GET /fakekube/stats`: the revision, open watches, and requests so far by method.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .resources import ResourceType
from .status import ApiError
from .store import Event

if TYPE_CHECKING:
    from .server import FakeKube

SENT_LIMIT = 500_000  # records kept; older ones are dropped (and `after` skips past them)


class SentLog:
    def __init__(self, limit: int = SENT_LIMIT) -> None:
        self._records: deque[dict[str, Any]] = deque(maxlen=limit)
        self._total = 0  # records ever made: the index of the next one

    def record(self, rtype: ResourceType, event: Event) -> None:
        meta = event.object.get("metadata", {})
        self._records.append({
            "t": time.monotonic(), "type": event.type, "kind": rtype.kind, "revision": event.revision,
            "namespace": meta.get("namespace"), "name": meta.get("name"),
        })
        self._total += 1

    def since(self, after: int) -> tuple[int, list[dict[str, Any]]]:
        first = self._total - len(self._records)  # index of the oldest record kept
        skip = max(0, after - first)
        return self._total, [r for i, r in enumerate(self._records) if i >= skip]


def add_routes(app: web.Application, kube: FakeKube) -> None:
    async def sent(request: web.Request) -> web.Response:
        if kube.sent is None:
            raise ApiError(404, "start the fake with record_sent=True (--record-sent) to record sent watch events")
        after = int(request.query.get("after", "0"))
        total, records = kube.sent.since(after)
        return web.json_response({"next": total, "events": records})

    async def batch(request: web.Request) -> web.Response:
        try:
            ops = json.loads(await request.text())["ops"]
        except (ValueError, KeyError, TypeError) as err:
            raise ApiError(400, f"a batch is {{'ops': [...]}}: {err}") from None
        first_revision = kube.store.revision + 1
        started = time.monotonic()
        for op in ops:
            if op.get("op") == "upsert":
                kube.upsert(op["object"])
            elif op.get("op") == "delete":
                kube.delete(op["kind"], op.get("namespace", "default"), op["name"])
            else:
                raise ApiError(400, f"unknown batch op {op.get('op')!r} (upsert or delete)")
        return web.json_response({"first_revision": first_revision, "last_revision": kube.store.revision,
                                  "t_start": started, "t_end": time.monotonic()})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"revision": kube.store.revision, "watches": kube.store.open_watches,
                                  "requests": len(kube.requests),
                                  "by_method": dict(Counter(method for method, _ in kube.requests))})

    app.router.add_get("/fakekube/sent", sent)
    app.router.add_post("/fakekube/batch", batch)
    app.router.add_get("/fakekube/stats", stats)
