"""Paged lists as the real API server pages them: `limit` and `continue`, every page from one consistent snapshot
(the state at the first page's resourceVersion, whatever is written meanwhile), and continue tokens that expire once
that version is compacted (410 Expired; the client must list again from the start)."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .status import ApiError, continue_expired

MAX_SNAPSHOTS = 64  # lists being paged at once; the oldest snapshot is forgotten beyond (its token expires)


class Pager:
    def __init__(self) -> None:
        self._snapshots: OrderedDict[str, list[dict]] = OrderedDict()

    def clear(self) -> None:
        """Forget every snapshot (a restarted server): their tokens expire."""
        self._snapshots.clear()

    def page(
        self, current: Callable[[], list[dict]], revision: int, compacted: int, query: Any
    ) -> tuple[list[dict], dict]:
        """This request's page and its list metadata. `current()` gives the current state; it is asked for on a
        first page only (a later page comes from the first one's snapshot, so each paged list reads the store once)."""
        limit = _int(query.get("limit"), "limit")
        token = query.get("continue")
        if token:
            snapshot_id, list_revision, start = _decode(token)
            if list_revision < compacted or snapshot_id not in self._snapshots:
                raise continue_expired()
            items = self._snapshots[snapshot_id]
        else:
            snapshot_id, list_revision, start = secrets.token_hex(8), revision, 0
            items = current()
        meta: dict[str, Any] = {"resourceVersion": str(list_revision)}
        end = len(items) if not limit else start + limit
        if end < len(items):
            self._snapshots[snapshot_id] = items
            self._snapshots.move_to_end(snapshot_id)
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
            meta["continue"] = _encode(snapshot_id, list_revision, end)
            meta["remainingItemCount"] = len(items) - end
        else:
            self._snapshots.pop(snapshot_id, None)
        return items[start:end], meta


def _int(value: str | None, name: str) -> int:
    try:
        return int(value or 0)
    except ValueError:
        raise ApiError(400, f"invalid {name}: {value!r}") from None


def _encode(snapshot_id: str, revision: int, start: int) -> str:
    raw = json.dumps({"v": "fake.k8s.io/v1", "id": snapshot_id, "rv": revision, "start": start})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode(token: str) -> tuple[str, int, int]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(doc["id"]), int(doc["rv"]), int(doc["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "continue key is not valid: incorrect encoded start resourceVersion") from None
