"""A resource as the cache holds it: encoded once, versioned by its content."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message


@dataclass(frozen=True, slots=True)
class Resource:
    type_url: str
    name: str
    version: str  # a hash of `body`: the same content has the same version on every replica and after a restart
    body: bytes  # deterministic serialisation, shared by every node and stream that receives this resource
    # What this resource needs to exist, which must not be removed before it: a listener's clusters, an EDS
    # cluster's load assignment.
    refs: frozenset[str] = field(default=frozenset())

    @classmethod
    def of(cls, type_url: str, name: str, message: Message, refs: Iterable[str] = ()) -> Resource:
        body = message.SerializeToString(deterministic=True)
        return cls(type_url, name, content_hash(body), body, frozenset(refs))

    def to_any(self) -> Any:
        return Any(type_url=self.type_url, value=self.body)


def content_hash(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def version_of(resources: Iterable[Resource]) -> str:
    """The version of a set of resources: a hash of their names and versions, independent of order."""
    return content_hash(*sorted(f"{r.name}={r.version}" for r in resources))
