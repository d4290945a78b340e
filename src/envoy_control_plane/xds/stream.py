"""What every ADS stream does, whichever protocol: one queue for the client's requests and the cache's news, the
node taken from the first request, and the per-type status that /debug/nodes shows. The protocols (sotw.py,
delta.py) say what a request means and what to send.

Everything a client sends is bounded before it is kept, logged or used as a metric label: at most MAX_OTHER_TYPES
unknown types and MAX_NAMES subscribed names per type on a stream and a node id of MAX_NODE_ID characters (more ends the stream
with INVALID_ARGUMENT; no Envoy comes near); unknown type URLs count under the metric label `other`; node ids,
names, nonces and NACK messages reach logs and /debug/nodes only clipped and escaped (text.clip).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, Protocol, TypeVar

from ..metrics import Metrics
from ..text import clip
from .cache import Snapshot, SnapshotCache
from .identity import NodeAuthorizer
from .ordering import push_order
from .streams import StreamInfo, TypeStatus
from .types import SHORT_NAMES, label, short

log = logging.getLogger(__name__)

MAX_OTHER_TYPES = 16  # types on one stream besides those of types.py (we serve none of them; Envoy asks for none)
MAX_NAMES = 100_000  # names subscribed (or declared) per type on one stream
MAX_NODE_ID = 1024  # characters
NACK_LIMIT = 1000  # characters of Envoy's error message that are logged and kept for /debug/nodes
ACK_TIMEOUT = 10.0  # seconds a response may stay unanswered before the stream stops waiting for it (xds.ack_timeout_s)

_HOLDERS = "(holders)"  # a deadline: until then, a reconnecting client's removals wait for what uses them
_WAKE = object()  # a new snapshot arrived
_END = object()  # the client closed its side


class ProtocolError(Exception):
    """The client broke the protocol; the stream is ended with this message."""


class _Request(Protocol):
    type_url: str

    @property
    def node(self) -> Any: ...


class _HasStatus(Protocol):
    status: TypeStatus


Request = TypeVar("Request", bound=_Request)
Response = TypeVar("Response")
State = TypeVar("State", bound=_HasStatus)


class Stream(ABC, Generic[Request, Response, State]):
    mode: str  # "sotw" or "delta", for logs

    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        info: StreamInfo,
        authorize: NodeAuthorizer | None = None,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        """`authorize` checks the node id the stream asks for (raising NodeNotPermitted) before anything is served;
        `ack_timeout` bounds the wait for the client's answer to a response (see `_expire`)."""
        self._cache = cache
        self._authorize = authorize
        self._metrics = metrics
        self._info = info
        self._ack_timeout = ack_timeout
        self._deadlines: dict[str, float] = {}  # type -> when we stop waiting for the answer to its response
        self._reconnected = False
        self._snapshot: Snapshot | None = None
        self._types: dict[str, State] = {}
        self._nonces = 0
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._wake_queued = False
        self._cancel_watch = lambda: None
        self._timer: asyncio.TimerHandle | None = None  # wakes run() at the earliest deadline (_arm)
        self._children: dict[tuple[Any, str], Any] = {}  # (metric, label value) -> its child (_labelled)
        self._order: list[str] = []  # the stream's types in push order (ordering.py), kept as types arrive
        # The oldest snapshot the client has not caught up with (monotonic time), and whether we sent it anything
        # since: for the push latency histogram.
        self._push_started: float | None = None
        self._push_sent = False

    async def run(self, requests: AsyncIterator[Request]) -> AsyncIterator[Response]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                self._arm()
                item = await self._queue.get()
                if item is _END:
                    break
                if item is _WAKE:
                    self._wake_queued = False
                    responses = self.pending()
                else:
                    responses = self.receive(item)  # type: ignore[arg-type]
                for response in responses:
                    yield response
                self._push_progress(bool(responses))
        finally:
            reader.cancel()
            self._cancel_watch()
            if self._timer is not None:
                self._timer.cancel()

    def receive(self, request: Request) -> list[Response]:
        """Apply one request from the client; returns what may be sent now, in order (at most one per type)."""
        if not self._info.node:
            self._connect(request)
        if not request.type_url:
            raise ProtocolError("an ADS request must carry type_url")
        if request.type_url not in self._types and request.type_url not in SHORT_NAMES:
            if sum(t not in SHORT_NAMES for t in self._types) >= MAX_OTHER_TYPES:
                raise ProtocolError(f"more than {MAX_OTHER_TYPES} unknown resource types on one stream")
        self._count(self._metrics.requests, request.type_url)
        self._on_request(request)
        return self.pending()

    def pending(self) -> list[Response]:
        """What may be sent now, given the latest snapshot and what the client has, in order (at most one per type)."""
        self._expire()
        return list(self._responses()) if self._snapshot is not None else []

    # ---- the bounded wait for answers ----------------------------------------------------------------------------

    def _awaiting(self, type_url: str) -> None:
        """A response of this type went out: its answer is waited for, but not forever."""
        self._deadlines[type_url] = time.monotonic() + self._ack_timeout

    def _answered(self, type_url: str) -> None:
        """The type's response was ACKed or NACKed, or needs no answer any more."""
        self._deadlines.pop(type_url, None)

    def _arm(self) -> None:
        """Have the stream woken when its earliest deadline passes (pending() then gives up on what expired).

        One timer per stream, not one per wait: a deadline is set on every response and mostly met, so the timer
        is left in place when a deadline moves later, and a wake that finds nothing expired only re-arms it."""
        if self._timer is None and self._deadlines:
            delay = max(min(self._deadlines.values()) - time.monotonic(), 0)
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        self._wake()

    def _expire(self) -> None:
        """No type blocks the others for good: a response unanswered for `ack_timeout` seconds is given up on."""
        now = time.monotonic()
        for type_url in [t for t, deadline in self._deadlines.items() if deadline <= now]:
            del self._deadlines[type_url]
            if type_url == _HOLDERS:
                log.debug("node %s: removals no longer wait for the types that would use them", self._node)
                continue
            log.warning(
                "node %s: no answer to %s nonce %s in %gs; not waiting for it any longer",
                self._node,
                short(type_url),
                self._info.types[type_url].nonce,
                self._ack_timeout,
            )
            self._give_up(type_url)

    def _reconnecting(self) -> None:
        """The client declared config it runs. Its removals of one type wait until it has requested the type that
        uses them (listeners for clusters, clusters for endpoints) and said what it has of it: Envoy re-sends all its
        requests at once on a reconnect, but CDS first. They wait `ack_timeout` at most (a client may not use LDS)."""
        if not self._reconnected:
            self._reconnected = True
            self._deadlines[_HOLDERS] = time.monotonic() + self._ack_timeout

    def _awaiting_holders(self) -> bool:
        return _HOLDERS in self._deadlines

    @abstractmethod
    def _give_up(self, type_url: str) -> None:
        """Stop waiting for the answer to the type's response in flight (see `_expire`)."""

    @abstractmethod
    def _on_request(self, request: Request) -> None: ...

    @abstractmethod
    def _responses(self) -> Iterator[Response]: ...

    @abstractmethod
    def _new_state(self) -> State: ...

    def _state(self, type_url: str) -> State:
        state = self._types.get(type_url)
        if state is None:
            state = self._types[type_url] = self._new_state()
            self._info.types[type_url] = state.status
            self._order = push_order(self._types)
        return state

    def _labelled(self, metric: Any, value: str) -> Any:
        """The metric's child for a label value, looked up once per stream (labels() costs more than the count)."""
        key = (metric, value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(value)
        return child

    def _count(self, metric: Any, type_url: str, amount: float = 1) -> None:
        """Count under the type's label (CDS, EDS, ... or `other`)."""
        self._labelled(metric, label(type_url)).inc(amount)

    def _next_nonce(self) -> str:
        self._nonces += 1
        return str(self._nonces)

    @property
    def _node(self) -> str:
        """The node id as logs show it."""
        return clip(self._info.node)

    def _count_nack(self, type_url: str, status: TypeStatus, message: str) -> str:
        """Count a NACK and keep its message (bounded); returns the message as logs show it."""
        status.nacks += 1
        status.last_nack = clip(message, NACK_LIMIT)
        self._count(self._metrics.nacks, type_url)
        return status.last_nack

    def _connect(self, request: Request) -> None:
        """The node is only guaranteed on a stream's first request: take it from there, and watch its snapshots."""
        if not request.node.id:
            raise ProtocolError("the first request of a stream must carry node.id")
        if len(request.node.id) > MAX_NODE_ID:
            raise ProtocolError(f"node.id is longer than {MAX_NODE_ID} characters")
        if self._authorize is not None:
            self._authorize(request.node.id)
        self._info.node = request.node.id
        self._snapshot = self._cache.get(self._info.node)
        self._cancel_watch = self._cache.watch(self._info.node, self._on_snapshot)
        log.info("stream %d: node %s connected (%s, %s)", self._info.id, self._node, self.mode, self._info.peer)

    async def _read(self, requests: AsyncIterator[Request]) -> None:
        try:
            async for request in requests:
                self._queue.put_nowait(request)
        except Exception as e:  # the transport failed: end the stream like a close
            log.debug("stream %d: reading requests failed: %r", self._info.id, e)
        finally:
            self._queue.put_nowait(_END)

    def _push_progress(self, sent: bool) -> None:
        """Observe the push latency once the client has answered everything sent since a new snapshot arrived."""
        if self._push_started is None:
            return
        self._push_sent |= sent
        if sent or self._deadlines:
            return
        if self._push_sent:
            self._labelled(self._metrics.push_seconds, self.mode).observe(time.monotonic() - self._push_started)
        self._push_started, self._push_sent = None, False

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        if self._push_started is None:
            self._push_started = time.monotonic()
        self._snapshot = snapshot
        self._wake()

    def _wake(self) -> None:
        """Have run() call pending() (once, however many wakes arrive before it does)."""
        if not self._wake_queued:
            self._wake_queued = True
            self._queue.put_nowait(_WAKE)
