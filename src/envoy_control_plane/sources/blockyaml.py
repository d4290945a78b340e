"""A line reader for plain block YAML: the shape manifests are written in, about 5x faster than libyaml.

`load(text)` gives the documents of a stream exactly as PyYAML's SafeLoader gives them, or None when the text uses
anything this reader leaves to PyYAML. It reads printable-ASCII text made of block mappings and block sequences
whose scalars are plain or quoted on one line (single quotes, or double quotes without escapes), comments, blank
lines and `---` between documents. It says None for everything else: anchors, aliases, tags, flow collections
(`[a]`, `{a: 1}`), block scalars (`|`, `>`), multi-line scalars, complex keys, directives, `...`, merge keys, tabs,
carriage returns, non-ASCII text, scalars the constructor refuses (a date with month 13) and any structure it does
not expect (a bad indentation, `a: b: c`). So invalid YAML always goes to PyYAML, which says what is wrong.

Plain scalars resolve (to int, float, bool, null, timestamp or str) with PyYAML's own resolver and constructor.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("int", "bool", "null", "float", "timestamp"))

# Anything but printable ASCII and newlines: tabs, carriage returns, control characters, non-ASCII text.
_UNUSUAL = re.compile(r"[^\n\x20-\x7e]")
# A line that starts or ends a document (`---`, `...`), and what follows the marker on it.
_MARKER = re.compile(r"^(---|\.\.\.)(.*)$", re.MULTILINE)
# A line that is neither blank nor a comment: its indentation (spaces) and content (without trailing spaces).
# Indentations stay strings: for strings of spaces, comparing them compares their lengths.
_ROW = re.compile(r"^( *)([^ \n#](?:[^\n]*[^ \n])?)", re.MULTILINE)
# A plain scalar may not start with these (`-` only when followed by a space or alone: `-1` is plain).
_INDICATORS = frozenset("?:,[]{}#&*!|>'\"%@`")
# PyYAML refuses a key that ends more than 1024 characters after it starts; keys this long go to PyYAML.
_MAX_KEY = 1000


class _Refused(Exception):
    """The text uses something this reader leaves to PyYAML."""


class _Scalars(yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """PyYAML's resolver and safe constructor, for the plain scalars that are not strings."""


_scalars = _Scalars()
# The implicit resolvers by a plain scalar's first character ("" for the empty scalar). PyYAML has no wildcard
# (None) resolver and the safe loader no path resolver: a plain scalar's tag depends on its text alone.
_IMPLICIT: dict[str, list[tuple[str, re.Pattern[str]]]] = dict(_Scalars.yaml_implicit_resolvers)
assert None not in _IMPLICIT and not _Scalars.yaml_path_resolvers
_MISSING = object()
_OPEN = object()  # the value of `key:`, which the lines below give
# Bounded memories (emptied when full) of what a line, and a plain scalar a resolver looks at, gave. Both hold only
# immutable values (scalars), so sharing them between documents is safe.
_MAX_REMEMBERED = 8192
_entries: dict[str, Any] = {}
_resolved: dict[str, Any] = {}


def load(text: str) -> list[Any] | None:
    """The documents of `text` as `list(yaml.safe_load_all(text))` gives them, or None: read it with PyYAML."""
    if _UNUSUAL.search(text):
        return None
    try:
        return _documents(text)
    except (_Refused, RecursionError):  # nested deeper than Python recurses: libyaml says how deep it may be
        return None


def _documents(text: str) -> list[Any]:
    docs: list[Any] = []
    start, explicit = 0, False  # where the current document starts; whether `---` began it
    for marker in _MARKER.finditer(text):
        rest = marker[2]
        if marker[1] == "..." or rest and (rest[0] != " " or rest.strip(" ")[:1] not in ("", "#")):
            raise _Refused  # `...`, `--- value`, `---x`
        rows = _ROW.findall(text, start, marker.start())
        if explicit or rows:
            docs.append(_document(rows))
        start, explicit = marker.end(), True
    rows = _ROW.findall(text, start)
    if explicit or rows:
        docs.append(_document(rows))
    return docs


def _document(rows: list[tuple[str, str]]) -> Any:
    if not rows:
        return None
    value, end = _node(rows, 0, None)
    if end != len(rows):
        raise _Refused
    return value


def _node(rows: list[tuple[str, str]], i: int, parent: str | None) -> tuple[Any, int]:
    """The block node starting at row i (indented more than `parent`, or a sequence at its indentation; None for
    a document's root)."""
    indent, content = rows[i]
    if content[0] == "-" and (len(content) == 1 or content[1] == " "):
        return _sequence(rows, i, indent)
    if _entry(content) is not None:
        return _mapping(rows, i, indent)
    value = _inline(content)
    i += 1
    if i < len(rows) and (parent is None or rows[i][0] > parent):
        raise _Refused  # the scalar goes on over more lines
    return value, i


def _mapping(rows: list[tuple[str, str]], i: int, indent: str) -> tuple[dict[Any, Any], int]:
    out: dict[Any, Any] = {}
    end = len(rows)
    while i < end:
        row_indent, content = rows[i]
        if row_indent != indent:
            if row_indent < indent:
                break
            raise _Refused
        entry = _entries.get(content) or _entry(content)
        if entry is None:
            raise _Refused
        key, value = entry
        i += 1
        if value is not _OPEN:
            out[key] = value
        elif i < end and (
            rows[i][0] > indent or rows[i][0] == indent and rows[i][1][0] == "-" and rows[i][1][1:2] in ("", " ")
        ):
            out[key], i = _node(rows, i, indent)  # a nested block, or a sequence at the key's indentation
        else:
            out[key] = None
    return out, i


def _sequence(rows: list[tuple[str, str]], i: int, indent: str) -> tuple[list[Any], int]:
    out: list[Any] = []
    end = len(rows)
    while i < end:
        row_indent, content = rows[i]
        if row_indent < indent:
            break
        if row_indent > indent:
            raise _Refused
        if content[0] != "-" or len(content) > 1 and content[1] != " ":
            break  # the mapping holding this sequence goes on (or, for any other parent, a refusal there)
        item = content[1:].lstrip(" ")
        if not item or item[0] == "#":
            i += 1
            if i < end and rows[i][0] > indent:
                value, i = _node(rows, i, indent)
            else:
                value = None
        else:
            rows[i] = (" " * (len(row_indent) + len(content) - len(item)), item)  # the item as a line of its own
            value, i = _node(rows, i, indent)
        out.append(value)
    return out, i


def _entry(content: str) -> tuple[Any, Any] | None:
    """(key, value) when the line is a mapping entry (value _OPEN: on the lines below); None when it is a scalar.

    Remembered by the line's text: manifests repeat most of their lines (`kind: Pod`, `namespace: default`)."""
    entry = _entries.get(content, _MISSING)
    if entry is _MISSING:
        split = _split_key(content)
        entry = None if split is None else (split[0], _inline(split[1]) if split[1] else _OPEN)
        if len(_entries) >= _MAX_REMEMBERED:
            _entries.clear()
        _entries[content] = entry
    return entry


def _split_key(content: str) -> tuple[Any, str] | None:
    """(key, what follows `: `) when the line is a mapping entry; None when it has no `: ` (a scalar)."""
    first = content[0]
    if first == "'" or first == '"':
        text, after = _quoted(content)
        if len(content) - len(after) > _MAX_KEY or after[:1] not in ("", " ", ":"):
            raise _Refused
        after = after.lstrip(" ")
        if after[:1] != ":" or after[1:2] not in ("", " "):
            return None if not after or after[0] == "#" else _refuse()
        rest = after[1:].lstrip(" ")
        return text, ("" if rest[:1] == "#" else rest)
    colon = content.find(": ")
    if colon < 0:
        if content[-1] != ":":
            return None
        colon = len(content) - 1
    key = content[:colon]
    if first in _INDICATORS or first == "-" or " #" in key or colon > _MAX_KEY:
        raise _Refused
    rest = content[colon + 1:].lstrip(" ")
    return _plain(key.rstrip(" ")), ("" if rest[:1] == "#" else rest)


def _inline(text: str) -> Any:
    """A scalar written on the rest of a line (not empty, not a comment)."""
    first = text[0]
    if first == "'" or first == '"':
        value, after = _quoted(text)
        if after and after.lstrip(" ")[:1] != "#" or after[:1] not in ("", " "):
            raise _Refused
        return value
    if first in _INDICATORS or first == "-" and (len(text) == 1 or text[1] == " "):
        raise _Refused
    comment = text.find(" #")
    if comment >= 0:
        text = text[:comment].rstrip(" ")
    if ": " in text or text[-1] == ":":
        raise _Refused  # a mapping where a scalar was expected
    return _plain(text)


def _quoted(text: str) -> tuple[str, str]:
    """A quoted scalar at the start of `text` and what follows it on the line."""
    if text[0] == '"':
        close = text.find('"', 1)
        if close < 0 or "\\" in text[1:close]:
            raise _Refused  # escapes, or it goes on over more lines
        return text[1:close], text[close + 1:]
    close = 1
    while True:
        close = text.find("'", close)
        if close < 0:
            raise _Refused
        if text[close + 1:close + 2] != "'":
            return text[1:close].replace("''", "'"), text[close + 1:]
        close += 2


def _plain(text: str) -> Any:
    """A plain scalar's value, resolved and constructed as PyYAML's SafeLoader does."""
    resolvers = _IMPLICIT.get(text[:1])
    if resolvers is None:
        return text  # no implicit resolver looks at a text starting with this: a string
    value = _resolved.get(text, _MISSING)
    if value is _MISSING:
        tag = next((tag for tag, regexp in resolvers if regexp.match(text)), _STR)  # as Resolver.resolve does
        if tag == _STR:
            value = text
        elif tag in _SCALAR_TAGS:
            try:
                value = _scalars.yaml_constructors[tag](_scalars, yaml.ScalarNode(tag, text))
            except Exception:
                raise _Refused from None  # let PyYAML say what is wrong with it
        else:
            raise _Refused  # a merge key (`<<`), `=`
        if len(_resolved) >= _MAX_REMEMBERED:
            _resolved.clear()
        _resolved[text] = value
    return value


def _refuse() -> Any:
    raise _Refused
