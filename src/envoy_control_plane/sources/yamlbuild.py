"""Building a composed YAML document into Python values, faster than PyYAML's SafeConstructor for plain documents.

SafeConstructor builds every mapping and sequence through generators (so that recursive structures can be built)
and checks every key twice; for the flat, alias-free manifests a fleet's pods are written in, that is most of the
parse time. `build` walks the node tree directly for the common tags (str, map, seq) and asks the loader's own
constructor for every other scalar (int, bool, null, float, timestamp, binary), so values are exactly what
`construct_document` gives. A document with anything else (merge keys, !!set, !!omap, an unknown tag) is built by
`construct_document` itself.
"""

from __future__ import annotations

from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCALARS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("int", "bool", "null", "float", "timestamp", "binary")
)


class _Unusual(Exception):
    """A node `build` leaves to the loader's constructor."""


def build(loader: yaml.constructor.SafeConstructor, node: yaml.Node) -> Any:
    """The document `loader.construct_document(node)` builds. The node must hold no alias (call it only on text
    without anchors: an aliased node would be built once per use instead of shared)."""
    try:
        value = _build(loader, node)
    except _Unusual:
        return loader.construct_document(node)
    return value


def _build(loader: yaml.constructor.SafeConstructor, node: yaml.Node) -> Any:
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _MAP:
        out = {}
        for key_node, value_node in node.value:
            key = _build(loader, key_node)
            try:
                hash(key)
            except TypeError:
                raise _Unusual from None  # the constructor says which key is unhashable
            out[key] = _build(loader, value_node)
        return out
    if tag == _SEQ:
        return [_build(loader, item) for item in node.value]
    if tag in _SCALARS:
        return loader.yaml_constructors[tag](loader, node)
    raise _Unusual


_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(_BASE):  # type: ignore[misc,valid-type]
    """The safe loader (libyaml's when present), with the implicit tag of a plain scalar remembered by its text.

    Resolution runs a regular expression per scalar; a manifest repeats the same keys and values thousands of times.
    Without path resolvers (the safe loader has none) a scalar's tag depends only on its text and implicitness."""

    _tags: dict[tuple[str, tuple[bool, bool]], str] = {}
    _MAX_TAGS = 4096

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self._tags) >= self._MAX_TAGS:
                self._tags.clear()  # bounded: distinct values (names, IPs) would grow it without end
            self._tags[key] = tag
        return tag
