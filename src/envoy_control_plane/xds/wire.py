"""Responses written as wire bytes straight from the resources' encoded bodies.

A resource is serialised once, into `Resource.body`, and shared by every node that receives it. Building a
`DiscoveryResponse` message would copy each body into a new `Any`, then into the response, then serialise it all
again, once per response; here a response is its few small fields and, per resource, a header of a few bytes
followed by the body itself, joined once. The bytes are exactly what protobuf's serialisation of the same message
gives (fields in field-number order, empty strings omitted); tests/unit/xds/test_wire.py compares them.

The ADS handlers are registered without a response serializer (server.py): gRPC sends these bytes as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from .resource import Resource

# Tags of length-delimited fields: (field number << 3) | 2.
_F1, _F2, _F3, _F4, _F5, _F6 = (bytes([(n << 3) | 2]) for n in range(1, 7))
_SMALL = [bytes([n]) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, value: bytes) -> bytes:
    """A length-delimited field; nothing for an empty value (proto3 does not write defaults)."""
    return tag + _varint(len(value)) + value if value else b""


@lru_cache(maxsize=64)
def _type_url_field(type_url: str) -> bytes:
    """`Any.type_url` of every resource of a type (a few types only: our own, and what a client may ask for)."""
    return _field(_F1, type_url.encode())


def _any(type_url_field: bytes, body: bytes) -> list[bytes]:
    """An `Any` as [its length prefix and type_url, its value's header, the value]: the body is not copied here."""
    value_header = _F2 + _varint(len(body)) if body else b""
    return [_varint(len(type_url_field) + len(value_header) + len(body)) + type_url_field + value_header, body]


def sotw_response(version: str, type_url: str, nonce: str, resources: Iterable[Resource]) -> bytes:
    """A serialised `DiscoveryResponse`: version_info (1), resources (2, each an Any), type_url (4), nonce (5)."""
    type_url_field = _type_url_field(type_url)
    parts = [_field(_F1, version.encode())]
    for resource in resources:
        header, body = _any(type_url_field, resource.body)
        parts += (_F2, header, body)
    parts += (_field(_F4, type_url.encode()), _field(_F5, nonce.encode()))
    return b"".join(parts)


def delta_response(
    system_version: str, type_url: str, nonce: str, resources: Iterable[Resource], removed: Iterable[str]
) -> bytes:
    """A serialised `DeltaDiscoveryResponse`: system_version_info (1), resources (2), type_url (4), nonce (5),
    removed_resources (6). Each resource is a discovery `Resource`: version (1), resource (2, an Any), name (3)."""
    type_url_field = _type_url_field(type_url)
    parts = [_field(_F1, system_version.encode())]
    for resource in resources:
        header, body = _any(type_url_field, resource.body)
        version = _field(_F1, resource.version.encode())
        name = _field(_F3, resource.name.encode())
        length = len(version) + 1 + len(header) + len(body) + len(name)
        parts += (_F2, _varint(length), version, _F2, header, body, name)
    parts += (_field(_F4, type_url.encode()), _field(_F5, nonce.encode()))
    for name in removed:  # repeated: an empty name is written too
        raw = name.encode()
        parts += (_F6, _varint(len(raw)), raw)
    return b"".join(parts)
