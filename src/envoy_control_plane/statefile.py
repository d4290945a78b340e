"""The last good objects of every source, kept in `<state_dir>/state.json` across restarts.

A restart must not lose what works: an object whose current version is invalid keeps the version that was in force,
a manifest file that does not parse keeps what it gave, and until a source has loaded (an API server that is down)
the World serves what it last had. The file holds each source's objects as minimal Kubernetes-style documents, read
back through the same `parse_object` as any manifest, so a damaged or hand-edited file can give nothing a manifest
could not. It is written atomically (temporary file, fsync, rename) at most every `interval` seconds after a change;
one that cannot be read, does not parse, has another format or exceeds MAX_BYTES is logged and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .model import (
    API_VERSIONS,
    CLUSTER_NAME_ANNOTATION,
    EgressListener,
    IngressListener,
    KubeObject,
    ObjectError,
    ObjectRef,
    Pod,
    parse_object,
)
from .state import SourceRef, World
from .text import clip, quote

log = logging.getLogger(__name__)

FILE_NAME = "state.json"
FORMAT = 1
MAX_WARNINGS = 5  # objects of a damaged file that are named in the log; the rest are counted
MAX_BYTES = 64 * 1024 * 1024  # about 300,000 pods; a larger world is not written (and an old file is removed)


@dataclass(frozen=True)
class Saved:
    """One object as the state file keeps it: its document, and the manifest file it came from (None for Kubernetes).

    Documents are parsed when used: a manifest source needs only the few whose file is invalid now."""

    name: str  # the object as ObjectRef prints it ("Pod default/web-1"), read without parsing the document
    doc: dict[str, Any]
    origin: str | None = None

    def parse(self) -> KubeObject | None:
        """The object, or None (logged) when this version no longer accepts the document."""
        try:
            obj = parse_object(self.doc)
        except Exception as e:  # parse_object raises ObjectError; anything else must not stop a start either
            log.warning("state file: %s not restored: %s", clip(self.name), clip(str(e), 300))
            return None
        if obj is None or str(obj.ref) != self.name:
            log.warning("state file: %s not restored: not an object this control plane uses", clip(self.name))
            return None
        return obj


SavedState = dict[str, list[Saved]]  # by source name


def encode(obj: KubeObject) -> dict[str, Any] | None:
    """The smallest document `parse_object` turns back into an equal object; None for a kind never written."""
    meta: dict[str, Any] = {"name": obj.ref.name, "namespace": obj.ref.namespace}
    doc: dict[str, Any] = {"apiVersion": API_VERSIONS[obj.ref.kind], "kind": obj.ref.kind, "metadata": meta}
    if isinstance(obj, Pod):
        if obj.cluster_name:
            meta["annotations"] = {CLUSTER_NAME_ANNOTATION: obj.cluster_name}
        if obj.terminating:
            meta["deletionTimestamp"] = "1970-01-01T00:00:00Z"
        status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if obj.ready else "False"}]}
        if obj.ip:
            status["podIP"] = obj.ip
        doc["status"] = status
        return doc
    if isinstance(obj, IngressListener | EgressListener):
        if obj.created:
            meta["creationTimestamp"] = obj.created
        if obj.generation:
            meta["generation"] = obj.generation
        doc["spec"] = _plain(obj.spec.model_dump(exclude_unset=True, by_alias=True))
        return doc
    return None  # a kind this file does not know (or must not hold, like a Secret)


def _plain(value: Any) -> Any:
    """A dumped spec as a manifest writes it: lists for tuples, Go-style durations (`1500ms`) for timedeltas."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, timedelta):
        return f"{round(value.total_seconds() * 1000)}ms"
    return value


def read_state(path: Path) -> SavedState:
    """The saved objects by source; empty (with one log line saying why) when there is no usable file."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ValueError(f"{size} bytes, over the limit of {MAX_BYTES}")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        doc = json.loads(data)
        return _objects(doc)
    except FileNotFoundError:
        log.info("no state file at %s: starting without saved objects", path)
    except Exception as e:  # unreadable, not JSON (a partial or damaged file), nested too deeply, another shape
        log.error("state file %s ignored: %s: %s", path, type(e).__name__, clip(str(e), 300))
    return {}


def _objects(doc: Any) -> SavedState:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"expected a mapping with format {FORMAT}, found {quote(found)}")
    sources = doc.get("sources")
    if not isinstance(sources, dict):
        raise ValueError("'sources' is not a mapping")
    state: SavedState = {}
    skipped = 0
    for name, entries in sources.items():
        if not isinstance(entries, list):
            raise ValueError(f"source {quote(name)}: not a list")
        saved = state[name] = []
        for entry in entries:
            item = _entry(entry)
            if item is None:
                skipped += 1
            else:
                saved.append(item)
    count = sum(len(s) for s in state.values())
    written = clip(str(doc.get("written")), 40)
    if skipped:
        log.warning("state file: %d objects of %d sources, written %s; %d damaged entries skipped", count,
                    len(state), written, skipped)
    else:
        log.info("state file: %d objects of %d sources, written %s", count, len(state), written)
    return state


def _entry(entry: Any) -> Saved | None:
    """An entry's document and origin, when it has the shape this module writes."""
    if not isinstance(entry, dict):
        return None
    doc, origin = entry.get("object"), entry.get("origin")
    if not isinstance(doc, dict) or not (origin is None or isinstance(origin, str)):
        return None
    meta, kind = doc.get("metadata"), doc.get("kind")
    if not isinstance(kind, str) or not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace") or "default"  # as parse_object reads it
    return Saved(str(ObjectRef(kind, str(namespace), meta["name"])), doc, origin)


_serial = itertools.count()  # each write its own temporary file, so two writes never mix


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old file or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{next(_serial)}.tmp")
    try:
        with temporary.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)


class StateKeeper:
    """Writes the World's objects to the state file after they change, at most every `interval` seconds.

    Each object is encoded (and checked to read back equal) once per version; a write costs joining the pieces.
    `origin(source, ref)` names the manifest file an object came from, where there is one.
    """

    def __init__(
        self,
        directory: Path,
        world: World,
        origin: Callable[[str, ObjectRef], str | None],
        interval: float = 1.0,
    ) -> None:
        self.path = directory / FILE_NAME
        self.world = world
        self.origin = origin
        self.interval = interval
        self._written_revision: int | None = None
        self._pieces: dict[SourceRef, tuple[KubeObject, str | None, str | None]] = {}  # obj, origin, its JSON
        self._failing = False
        self._writing: asyncio.Future[None] | None = None

    def prepare(self) -> None:
        """Create the directory and check it takes a file: a state_dir that cannot work fails the start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        probe = self.path.with_name(f".{FILE_NAME}.probe")
        probe.write_bytes(b"")
        probe.unlink()

    def read(self) -> SavedState:
        return read_state(self.path)

    async def run(self) -> None:
        """Write whenever the World changed, until cancelled."""
        while True:
            await self.save()
            await asyncio.sleep(self.interval)

    async def save(self) -> None:
        """Write the World's objects now if they changed since the last write (after any write in flight)."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        revision = self.world.revision
        if revision == self._written_revision:
            return
        data = await self.render()
        try:
            if len(data) > MAX_BYTES:
                raise ValueError(f"{len(data)} bytes, over the limit of {MAX_BYTES}")
            # A cancelled save (the control plane stopping) lets the write finish: the final save waits for it.
            self._writing = asyncio.get_running_loop().run_in_executor(None, write_atomically, self.path, data)
            await asyncio.shield(self._writing)
        except (OSError, ValueError) as e:
            if not self._failing:
                log.error("state file %s not written (the next change tries again): %s", self.path, e)
            self._failing = True
            if isinstance(e, ValueError):  # an old file would bring back objects deleted since: remove it
                with contextlib.suppress(OSError):
                    self.path.unlink()
            return
        if self._failing:
            log.info("state file %s written again", self.path)
        self._failing = False
        self._written_revision = revision

    async def render(self) -> bytes:
        """The state file's content for the World as it is now (encoding new objects in slices, so that the first
        write of a large world does not hold up the event loop)."""
        by_source: dict[str, list[str]] = {}
        pieces: dict[SourceRef, tuple[KubeObject, str | None, str | None]] = {}
        encoded = 0
        for key, obj in self.world.objects().items():
            source, ref = key
            origin = self.origin(source, ref)
            cached = self._pieces.get(key)
            if cached is None or cached[0] is not obj or cached[1] != origin:
                cached = (obj, origin, self._piece(obj, origin))
                encoded += 1
                if encoded % 500 == 0:
                    await asyncio.sleep(0)
            pieces[key] = cached
            if cached[2] is not None:
                by_source.setdefault(source, []).append(cached[2])
        self._pieces = pieces
        sources = ",".join(f"{json.dumps(name)}:[{','.join(items)}]" for name, items in sorted(by_source.items()))
        written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return f'{{"format":{FORMAT},"written":"{written}","sources":{{{sources}}}}}\n'.encode()

    def _piece(self, obj: KubeObject, origin: str | None) -> str | None:
        doc = encode(obj)
        if doc is None:
            return None
        # A listener's spec may grow fields `encode` does not know: better not kept than kept wrong. (A Pod is a
        # plain dataclass whose fields the tests check, and there are many: not checked here.)
        if not isinstance(obj, Pod) and not _reads_back(doc, obj):
            log.warning("state file: %s is not kept (it does not read back the same; a bug)", obj.ref)
            return None
        entry: dict[str, Any] = {"object": doc}
        if origin is not None:
            entry["origin"] = origin
        return json.dumps(entry, separators=(",", ":"))


def _reads_back(doc: dict[str, Any], obj: KubeObject) -> bool:
    try:
        return parse_object(doc) == obj
    except ObjectError:
        return False
