"""Validation of custom resources against their CRD's structural schema (`openAPIV3Schema`), as the API server does
on create and update: types, required fields, minimum/maximum, lengths, enums, patterns, item and property counts.
Unknown fields are pruned (dropped) unless the schema preserves them; with `fieldValidation=Strict` (what kubectl
sends) they are an error instead. Failures come as `Cause`s worded like the real server's."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ROOT_FIELDS = ("apiVersion", "kind", "metadata")  # implicit at the root of every custom resource


@dataclass(frozen=True)
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), "null" if value is None else "unknown")


def _is(value: Any, wanted: str, schema: dict) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return _type_of(value) in ("integer", "string")
    actual = _type_of(value)
    return actual == wanted or (wanted == "number" and actual == "integer")


def validate(value: Any, schema: dict, path: str = "") -> list[Cause]:
    """Every violation of `schema` in `value` (the whole object at the root)."""
    causes: list[Cause] = []
    _check(value, schema, path, causes, root=True)
    return causes


def _check(value: Any, schema: dict, path: str, causes: list[Cause], root: bool = False) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            causes.append(Cause(where, f"Invalid value: \"null\": {where} in body must be of type {schema['type']}: "
                                       "\"null\"", "FieldValueTypeInvalid"))
        return
    wanted = schema.get("type")
    if wanted and not _is(value, wanted, schema):
        causes.append(Cause(where, f"Invalid value: {json.dumps(_type_of(value))}: {where} in body must be of type "
                                   f"{wanted}: {json.dumps(_type_of(value))}", "FieldValueTypeInvalid"))
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        causes.append(Cause(where, f"Unsupported value: {_show(value)}: supported values: {supported}",
                            "FieldValueNotSupported"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _bounds(value, schema, where, causes)
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(Cause(where, f"Invalid value: {_show(value)}: {where} in body should be at least "
                                       f"{schema['minLength']} chars long"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(Cause(where, f"Too long: may not be more than {schema['maxLength']} bytes",
                                "FieldValueTooLong"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append(Cause(where, f"Invalid value: {_show(value)}: {where} in body should match "
                                       f"'{schema['pattern']}'"))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(Cause(where, f"Invalid value: {len(value)}: {where} in body should have at least "
                                       f"{schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(Cause(where, f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                                "FieldValueTooMany"))
        for i, item in enumerate(value):
            if isinstance(schema.get("items"), dict):
                _check(item, schema["items"], f"{path}[{i}]", causes)
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                causes.append(Cause(_join(path, name), "Required value", "FieldValueRequired"))
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            causes.append(Cause(where, f"Invalid value: {len(value)}: {where} in body should have at least "
                                       f"{schema['minProperties']} properties"))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            causes.append(Cause(where, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                                "FieldValueTooMany"))
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if root and name in ROOT_FIELDS:
                continue
            if name in properties:
                _check(item, properties[name], _join(path, name), causes)
            elif isinstance(extra, dict):
                _check(item, extra, _join(path, name), causes)


def _bounds(value: float, schema: dict, where: str, causes: list[Cause]) -> None:
    if "minimum" in schema:
        low, exclusive = schema["minimum"], schema.get("exclusiveMinimum", False)
        if value < low or (exclusive and value == low):
            word = "greater than" if exclusive else "greater than or equal to"
            causes.append(Cause(where, f"Invalid value: {_show(value)}: {where} in body should be {word} {low}"))
    if "maximum" in schema:
        high, exclusive = schema["maximum"], schema.get("exclusiveMaximum", False)
        if value > high or (exclusive and value == high):
            word = "less than" if exclusive else "less than or equal to"
            causes.append(Cause(where, f"Invalid value: {_show(value)}: {where} in body should be {word} {high}"))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def unknown_fields(value: Any, schema: dict, path: str = "", root: bool = True) -> list[str]:
    """The paths of fields the schema does not know (and does not preserve)."""
    found: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return found
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if root and name in ROOT_FIELDS:
                continue
            if name in properties:
                found += unknown_fields(item, properties[name], _join(path, name), False)
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, _join(path, name), False)
            elif extra is not True:
                found.append(_join(path, name))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]", False)
    return found


def prune(value: Any, schema: dict, root: bool = True) -> Any:
    """`value` without the fields the schema does not know (a copy)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        kept: dict[str, Any] = {}
        for name, item in value.items():
            if root and name in ROOT_FIELDS:
                kept[name] = item
            elif name in properties:
                kept[name] = prune(item, properties[name], False)
            elif isinstance(extra, dict):
                kept[name] = prune(item, extra, False)
            elif extra is True:
                kept[name] = item
        return kept
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], False) for item in value]
    return value
