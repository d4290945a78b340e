"""The fake cluster's objects, its resourceVersion counter, its event history and the open watches."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from . import status
from .patches import merge_patch
from .resources import POD, ResourceType
from .selectors import ObjectPredicate
from .status import ApiError

Key = tuple[ResourceType, str, str]
DEFAULT_GRACE_SECONDS = 30


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_of(obj: dict) -> dict:
    """What counts for `metadata.generation`: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED or DELETED
    rtype: ResourceType
    object: dict
    revision: int
    previous: dict | None = None  # the object before this write

    def line(self) -> bytes:
        return json.dumps({"type": self.type, "object": self.object}).encode() + b"\n"


class Watch:
    """One open watch: the events it wants, queued as they are written."""

    def __init__(self, rtype: ResourceType, namespace: str | None, matches: ObjectPredicate) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self.matches = matches
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def _selects(self, obj: dict | None) -> bool:
        return obj is not None and self.namespace in (None, obj["metadata"]["namespace"]) and self.matches(obj)

    def _convert(self, event: Event) -> Event | None:
        """The event as this watch sees it. As the real server does: an object that starts matching the
        selectors is ADDED, one that stops matching is DELETED (with its previous content)."""
        if event.rtype != self.rtype:
            return None
        matches_now = event.type != "DELETED" and self._selects(event.object)
        matched_before = self._selects(event.previous)
        if matches_now:
            return event if matched_before else dataclasses.replace(event, type="ADDED")
        if matched_before:
            assert event.previous is not None
            gone = merge_patch(event.previous, {"metadata": {"resourceVersion": str(event.revision)}})
            return dataclasses.replace(event, type="DELETED", object=gone)
        return None

    def offer(self, event: Event) -> None:
        converted = self._convert(event)
        if converted is not None:
            self.queue.put_nowait(converted)


class Store:
    def __init__(self) -> None:
        self.revision = 0
        self.hold_terminating = False
        self._objects: dict[Key, dict] = {}
        self._by_type: dict[ResourceType, dict[tuple[str, str], dict]] = {}  # _objects by type: lists read one type
        self._history: list[Event] = []
        self._compacted = 0  # watches from an older revision than this get 410 Expired
        self._watches: set[Watch] = set()

    # reads

    def list(self, rtype: ResourceType, namespace: str | None, matches: ObjectPredicate) -> list[dict]:
        return [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._by_type.get(rtype, {}).items(), key=lambda item: item[0])
            if namespace in (None, ns) and matches(obj)
        ]

    def stored(self, rtype: ResourceType) -> list[dict]:
        """The objects of a type as stored, not copied: for reading only (the fake's own lookups, e.g. a CRD's schema
        on every write of a custom resource, which copying every CRD made the most costly part of the write)."""
        return list(self._by_type.get(rtype, {}).values())

    def exists(self, rtype: ResourceType, namespace: str, name: str) -> bool:
        return (rtype, namespace, name) in self._objects

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict:
        return copy.deepcopy(self._current(rtype, namespace, name))

    def _current(self, rtype: ResourceType, namespace: str, name: str) -> dict:
        try:
            return self._objects[(rtype, namespace, name)]
        except KeyError:
            raise status.not_found(rtype, name) from None

    # writes

    def create(self, rtype: ResourceType, namespace: str, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, f'{rtype.kind} "" is invalid: metadata.name: Required value: name is required')
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        if (rtype, namespace, name) in self._objects:
            raise status.already_exists(rtype, name)
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        obj.update(kind=rtype.kind, apiVersion=rtype.api_version)
        if rtype == POD:
            obj.setdefault("status", {"phase": "Pending"})
        return self._write("ADDED", rtype, obj)

    def replace(self, rtype: ResourceType, namespace: str, name: str, obj: dict) -> dict:
        """PUT: a `metadata.resourceVersion` in the body must be the current one (optimistic concurrency)."""
        current = self._current(rtype, namespace, name)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        if meta.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
            raise status.conflict(rtype, name)
        kept = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
        meta.update({k: current["metadata"][k] for k in kept if k in current["metadata"]})
        meta.update(name=name, namespace=namespace)
        obj.update(kind=rtype.kind, apiVersion=rtype.api_version)
        if _spec_of(obj) != _spec_of(current):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        return self._write("MODIFIED", rtype, obj)

    def patch(self, rtype: ResourceType, namespace: str, name: str, patch: dict, strategic: bool) -> dict:
        current = self._current(rtype, namespace, name)
        return self.replace(rtype, namespace, name, merge_patch(current, patch, strategic))

    def apply(self, rtype: ResourceType, namespace: str, name: str, obj: dict) -> dict:
        """Server-side apply, approximated: create, or merge the applied fields into what is there."""
        if (rtype, namespace, name) not in self._objects:
            return self.create(rtype, namespace, merge_patch({"metadata": {"name": name}}, obj))
        return self.patch(rtype, namespace, name, obj, strategic=True)

    def upsert(self, rtype: ResourceType, obj: dict) -> dict:
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace", "default"), meta.get("name", "")
        if (rtype, namespace, name) not in self._objects:
            return self.create(rtype, namespace, obj)
        return self.replace(rtype, namespace, name, merge_patch(obj, {"metadata": {"resourceVersion": None}}))

    def delete(self, rtype: ResourceType, namespace: str, name: str, grace: int | None = None) -> dict:
        """Remove at once, or, for a pod while terminating pods are held, mark it Terminating."""
        current = self._current(rtype, namespace, name)
        if rtype != POD or not self.hold_terminating or grace == 0:
            return self._write("DELETED", rtype, copy.deepcopy(current))
        if "deletionTimestamp" in current["metadata"]:
            return copy.deepcopy(current)
        obj = copy.deepcopy(current)
        grace = DEFAULT_GRACE_SECONDS if grace is None else grace
        obj["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
        return self._write("MODIFIED", rtype, obj)

    def finish_termination(self) -> None:
        for (rtype, _, _), obj in list(self._objects.items()):
            if "deletionTimestamp" in obj["metadata"]:
                self._write("DELETED", rtype, copy.deepcopy(obj))

    def _write(self, event_type: str, rtype: ResourceType, obj: dict) -> dict:
        self.revision += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.revision)
        key = (rtype, meta["namespace"], meta["name"])
        previous = self._objects.pop(key, None)
        of_type = self._by_type.setdefault(rtype, {})
        of_type.pop(key[1:], None)
        if event_type != "DELETED":
            self._objects[key] = obj
            of_type[key[1:]] = obj
        event = Event(event_type, rtype, copy.deepcopy(obj), self.revision, previous)
        self._history.append(event)
        for watch in self._watches:
            watch.offer(event)
        return copy.deepcopy(obj)

    # watches

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older versions can no longer be watched from (nor
        can lists be continued from them)."""
        self._compacted = self.revision
        self._history.clear()

    @property
    def compacted(self) -> int:
        return self._compacted

    def snapshot(self) -> Store:
        """A copy of the data and history, without watches: `restore()` it later, as etcd restored from a backup."""
        copied = Store()
        copied.revision, copied._compacted = self.revision, self._compacted
        copied._objects, copied._history = copy.deepcopy(self._objects), list(self._history)
        copied._reindex()
        return copied

    def restore(self, backup: Store) -> None:
        """Go back to `backup`'s data and revision; open watches are the caller's to cut."""
        self.revision, self._compacted = backup.revision, backup._compacted
        self._objects, self._history = copy.deepcopy(backup._objects), list(backup._history)
        self._reindex()

    def _reindex(self) -> None:
        self._by_type = {}
        for (rtype, ns, name), obj in self._objects.items():
            self._by_type.setdefault(rtype, {})[(ns, name)] = obj

    def open_watch(
        self, rtype: ResourceType, namespace: str | None, matches: ObjectPredicate, since: str | None
    ) -> Watch:
        """Without `since` (or "0") the watch starts with an ADDED event per current object, as the
        real server does; from a version, it replays the retained events after it (410 if compacted)."""
        watch = Watch(rtype, namespace, matches)
        if since in (None, "", "0"):
            for obj in self.list(rtype, namespace, matches):
                watch.queue.put_nowait(Event("ADDED", rtype, obj, self.revision))
        else:
            try:
                revision = int(since)
            except ValueError:
                raise ApiError(400, f"invalid resource version: {since!r}") from None
            if revision < self._compacted:
                raise status.expired(since, self._compacted + 1)
            if revision > self.revision:
                raise status.too_large(revision, self.revision)
            for event in self._history:
                if event.revision > revision:
                    watch.offer(event)
        self._watches.add(watch)
        return watch

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def close_watch(self, watch: Watch) -> None:
        self._watches.discard(watch)
