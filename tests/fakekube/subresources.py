"""The status subresource, as the real API server serves it for a custom resource with `subresources: {status: {}}`.

- A write to the object itself (create, PUT, PATCH) leaves `status` as it was: what the body says of it is dropped.
- A write to `.../<name>/status` (PUT, PATCH) changes `status` only: spec, labels and annotations in the body are
  dropped. `metadata.generation` moves only with the spec, so a status write never bumps it; `resourceVersion` moves
  with every write, and a stale one in the body is a 409 Conflict, as on the object.
"""

from __future__ import annotations

import copy

from .resources import ResourceType

STATUS = "status"


def on_create(rtype: ResourceType, obj: dict) -> dict:
    """What a create stores: without a status, when the type has a status subresource."""
    if not rtype.status_subresource:
        return obj
    return {k: v for k, v in obj.items() if k != STATUS}


def scoped(rtype: ResourceType, subresource: str | None, current: dict, new: dict) -> dict:
    """The object a write stores, from the current one and the body (a PUT's, or a merged PATCH's)."""
    if subresource == STATUS:
        kept = copy.deepcopy(current)
        if STATUS in new:
            kept[STATUS] = copy.deepcopy(new[STATUS])
        else:
            kept.pop(STATUS, None)
        # the body's resourceVersion still guards the write (optimistic concurrency)
        version = (new.get("metadata") or {}).get("resourceVersion")
        kept["metadata"]["resourceVersion"] = version
        return kept
    if not rtype.status_subresource:
        return new
    kept = {k: v for k, v in new.items() if k != STATUS}
    if STATUS in current:
        kept[STATUS] = copy.deepcopy(current[STATUS])
    return kept
