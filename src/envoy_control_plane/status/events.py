"""Kubernetes Events (core/v1, what `kubectl describe` shows) on listener objects, rate-limited per object.

Each object has a token bucket: `burst` Events at once, then one per `every` seconds. A flapping object (a listener
whose port is taken and freed in a loop, an Envoy that NACKs every push) therefore costs the API server a handful of
Events, not one per flap; what is dropped is counted (`status_events_dropped_total`) and the condition in the
object's status still says what holds now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..model import API_VERSIONS
from ..sources.kubernetes.client import Resource
from ..state import SourceRef
from ..text import clip

EVENTS = Resource("Event", "v1", "events")
COMPONENT = "envoy-control-plane"
MESSAGE_LIMIT = 1024


@dataclass
class _Bucket:
    tokens: float
    updated: float


class EventRateLimit:
    """Token buckets per object: `burst` at once, refilled one per `every` seconds."""

    def __init__(self, burst: int, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.every = every
        self._clock = clock
        self._buckets: dict[SourceRef, _Bucket] = {}

    def allow(self, key: SourceRef) -> bool:
        now = self._clock()
        bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) / self.every)
        bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def keep_only(self, keys: Iterable[SourceRef]) -> None:
        """Forget the buckets of objects that are gone (a full bucket is the same as none)."""
        wanted = set(keys)
        for key in [k for k in self._buckets if k not in wanted]:
            del self._buckets[key]


def event_body(key: SourceRef, uid: str | None, reason: str, message: str, identity: str, kind: str = "Warning"
               ) -> dict[str, Any]:
    """A core/v1 Event on the listener object `key` (its uid makes `kubectl describe` find it)."""
    ref = key[1]
    now = datetime.now(UTC)
    involved: dict[str, Any] = {
        "apiVersion": API_VERSIONS[ref.kind], "kind": ref.kind, "namespace": ref.namespace, "name": ref.name,
    }
    if uid:
        involved["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{ref.name[:200]}.{time.time_ns():x}", "namespace": ref.namespace},
        "involvedObject": involved,
        "type": kind,
        "reason": reason,
        "message": clip(message, MESSAGE_LIMIT),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": identity[:128],
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
