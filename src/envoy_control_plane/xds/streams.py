"""What every open xDS stream knows, kept where the admin endpoints can read it."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from ..text import clip, rfc3339
from .types import short

_changes = 0  # assignments to any TypeStatus or StreamInfo field, streams opened and closed


def changes() -> int:
    """A count that moves whenever any stream's knowledge changes (the status writer's cue to look again). Fields
    are replaced, never changed in place (a stream's `types` gets each TypeStatus once, made, and so counted, just
    before), so counting assignments counts every change."""
    return _changes


class _Counted:
    def __setattr__(self, name: str, value: Any) -> None:
        global _changes
        _changes += 1
        object.__setattr__(self, name, value)


@dataclass
class TypeStatus(_Counted):
    """One stream's view of one type: what was sent, what the client has, and its last NACK."""

    nonce: str = ""
    sent_version: str = ""
    acked_version: str = ""
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    nacks: int = 0
    last_nack: str | None = None
    # Per resource, for status conditions: name -> version the client has (ACKed, or declared on a reconnect), and
    # name -> version the last NACK (`last_nack`) rejected; for SotW, every resource the rejected push changed.
    acked_resources: dict[str, str] = field(default_factory=dict)
    rejected_resources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "wildcard": self.wildcard,
            "subscribed": [clip(name) for name in sorted(self.names)],
            "sent_version": self.sent_version,
            "acked_version": self.acked_version,
            "nonce": self.nonce,
            "nacks": self.nacks,
            "last_nack": self.last_nack,
        }


@dataclass
class StreamInfo(_Counted):
    id: int
    mode: str  # "sotw" or "delta"
    peer: str
    node: str = ""
    opened: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.id,
            "mode": self.mode,
            "peer": self.peer,
            "opened": rfc3339(self.opened),
            "types": {short(t): s.to_json() for t, s in sorted(self.types.items())},
        }


class StreamRegistry:
    def __init__(self) -> None:
        self._streams: dict[int, StreamInfo] = {}
        self._ids = itertools.count(1)

    def open(self, mode: str, peer: str) -> StreamInfo:
        info = StreamInfo(next(self._ids), mode, peer)
        self._streams[info.id] = info
        return info

    def close(self, info: StreamInfo) -> None:
        global _changes
        _changes += 1
        self._streams.pop(info.id, None)

    def by_node(self) -> dict[str, list[StreamInfo]]:
        nodes: dict[str, list[StreamInfo]] = {}
        for info in self._streams.values():
            nodes.setdefault(info.node, []).append(info)
        return nodes
