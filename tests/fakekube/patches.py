"""PATCH bodies: JSON merge patch (RFC 7386), and strategic merge patch approximated on top of it."""

from __future__ import annotations

import copy
from typing import Any


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) and "name" in item for item in value)


def _merge_named(current: list[dict], patch: list[dict]) -> list[dict]:
    """Strategic merge of a list keyed by `name` (containers, ports, env...): patch items merge into
    the item of the same name, new names are appended, `$patch: delete` removes."""
    merged = {item["name"]: item for item in current}
    for item in patch:
        if item.get("$patch") == "delete":
            merged.pop(item["name"], None)
        else:
            merged[item["name"]] = merge_patch(merged.get(item["name"], {}), item, strategic=True)
    return list(merged.values())


def merge_patch(target: Any, patch: Any, strategic: bool = False) -> Any:
    """Apply `patch` to `target` without changing either. With `strategic`, kubectl's `$` directives
    are dropped and lists of named objects merge by name; any other list is replaced, as in a merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif strategic and value and _named(value) and _named(result.get(key)):
            result[key] = _merge_named(result[key], value)
        else:
            result[key] = merge_patch(result.get(key), value, strategic)
    return result
