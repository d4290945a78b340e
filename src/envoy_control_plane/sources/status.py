"""How each source is doing, for /readyz, /debug/sources and the source metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


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
    detail: dict[str, Any] = field(default_factory=dict)  # source-specific facts (resourceVersions, paths)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "synced": self.synced,
            "up": self.up,
            "stale": self.stale,
            "last_error": self.last_error,
            "last_change": self.last_change,
            "problems": self.all_problems(),
            **self.detail,
        }

    def all_problems(self) -> list[str]:
        return [*self.problems, *self.listener_problems]

    def touch(self) -> None:
        self.last_change = time.time()
