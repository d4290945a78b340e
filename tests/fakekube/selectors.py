"""Label and field selectors, parsed into predicates as the real API server reads them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from .status import ApiError

LabelPredicate = Callable[[Mapping[str, str]], bool]
ObjectPredicate = Callable[[dict], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_EXISTS = re.compile(rf"(?P<neg>!?)\s*(?P<key>{_KEY})")
_EQUALITY = re.compile(rf"(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE})")
_SET = re.compile(rf"(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)")


def _split(text: str) -> list[str]:
    """Split on the commas that are outside `( )`: `a in (x,y),b` is two requirements."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def _requirement(text: str) -> LabelPredicate:
    if m := _SET.fullmatch(text):
        key, values = m["key"], {v.strip() for v in m["values"].split(",")}
        if m["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQUALITY.fullmatch(text):
        key, value = m["key"], m["value"]
        if m["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS.fullmatch(text):
        key, negated = m["key"], bool(m["neg"])
        return lambda labels: (key in labels) != negated
    raise ApiError(400, f"unable to parse requirement: {text!r}")


def label_selector(text: str | None) -> ObjectPredicate:
    requirements = [_requirement(part) for part in _split(text or "")]

    def matches(obj: dict) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def _field(obj: dict, path: str) -> str:
    value: object = obj
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector(text: str | None, supported: tuple[str, ...]) -> ObjectPredicate:
    requirements: list[tuple[str, bool, str]] = []
    for part in _split(text or ""):
        m = re.fullmatch(r"(?P<field>[^=!]+?)\s*(?P<op>==|!=|=)\s*(?P<value>.*)", part)
        if m is None:
            raise ApiError(400, f"invalid field selector: {part!r}")
        if m["field"] not in supported:
            raise ApiError(400, f'field label not supported: {m["field"]}')
        requirements.append((m["field"], m["op"] == "!=", m["value"]))

    def matches(obj: dict) -> bool:
        return all((_field(obj, path) == value) != negated for path, negated, value in requirements)

    return matches
