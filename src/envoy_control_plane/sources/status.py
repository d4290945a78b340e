"""How each source is doing, for /readyz, /debug/sources and the source metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..model import LISTENER_KINDS, ObjectRef, generation_of
from ..text import rfc3339


@dataclass(frozen=True)
class InvalidObject:
    """A listener a source could not use, as far as it could be read: who it is, where it asked to be, and why.

    Status conditions report it per object (Accepted=False, InvalidSpec); `node` and `port` are what the spec says
    when it says it plainly, else None."""

    ref: ObjectRef
    message: str
    node: str | None = None
    port: int | None = None
    generation: int = 0

    @classmethod
    def of(cls, ref: ObjectRef, doc: Any, message: str) -> InvalidObject:
        """The record of an invalid document, with what can be read plainly of its node, port and generation."""
        doc = doc if isinstance(doc, dict) else {}
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        node, port = spec.get("nodename"), spec.get("listenport")
        return cls(
            ref,
            message,
            node if isinstance(node, str) and node else None,
            port if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535 else None,
            generation_of(meta),
        )


def listener_ref(doc: Any, default_namespace: str = "default") -> ObjectRef | None:
    """Who a (possibly invalid) listener document is, as parse_object would name it; None for other kinds and for a
    listener without a name to report it under."""
    if not isinstance(doc, dict) or doc.get("kind") not in LISTENER_KINDS:
        return None
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return None
    return ObjectRef(doc["kind"], str(meta.get("namespace") or default_namespace), meta["name"])


@dataclass
class SourceStatus:
    name: str
    kind: str  # "manifests" or "kubernetes"
    synced: bool = False  # loaded (listed) completely at least once: needed for readiness
    up: bool = False  # the last attempt to read or watch succeeded
    stale: bool = False  # down, serving its last known objects
    last_error: str | None = None
    last_change: float | None = None
    problems: list[str] = field(default_factory=list)  # invalid objects, each naming the object and field
    # this source's listeners held back or degraded by their Secrets (set by the control plane after each rebuild)
    listener_problems: list[str] = field(default_factory=list)
    invalid: dict[ObjectRef, InvalidObject] = field(default_factory=dict)  # the invalid listeners, by object
    detail: dict[str, Any] = field(default_factory=dict)  # source-specific facts (resourceVersions, paths)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "synced": self.synced,
            "up": self.up,
            "stale": self.stale,
            "last_error": self.last_error,
            "last_change": rfc3339(self.last_change),
            "problems": self.all_problems(),
            **self.detail,
        }

    def all_problems(self) -> list[str]:
        return [*self.problems, *self.listener_problems]

    def touch(self) -> None:
        self.last_change = time.time()
