"""Objects from Kubernetes-style YAML files on disk, reloaded when the files change.

A file may hold many documents, and `kind: List` documents (what `kubectl get -o yaml` prints). A file that no longer
parses keeps the objects it last gave, and an invalid object keeps its last good version: a typo must not take down
listeners that work. Every problem is reported with the file, the object and the field.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
import yaml

from ..config import MANIFEST_SOURCE
from ..model import KubeObject, ObjectError, ObjectRef, Secret, parse_object
from ..state import World
from ..text import clip
from . import file_changes
from .file_changes import files_below
from .status import InvalidObject, SourceStatus, listener_ref

log = logging.getLogger(__name__)

@dataclass
class FileResult:
    objects: dict[ObjectRef, KubeObject] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # the objects (as ObjectError names them) that failed to parse
    invalid_listeners: dict[ObjectRef, InvalidObject] = field(default_factory=dict)  # for their status conditions
    unreadable: bool = False  # the whole file failed (I/O or YAML syntax)


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the YAML/JSON files below the directories named (hidden names skipped), in a stable
    order, each once."""
    files: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            files.update(dict.fromkeys(files_below(path)))
        elif path.exists():
            files[path] = None
    return list(files)


# libyaml when PyYAML has it: about 6x faster than the pure-Python loader (10,000 pods: 1.2 s instead of 7 s).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_file(path: Path, cache: dict[Path, tuple[str, FileResult]] | None = None) -> FileResult:
    """Read and parse one file. With `cache` (each file's last text and result), a file whose text did not change
    is not parsed again: one pod edited among 10,000 costs reading the files, not parsing them all."""
    try:
        text = path.read_text()
    except OSError as e:
        return FileResult(errors=[f"{path}: cannot read: {e.strerror}"], unreadable=True)
    if cache is None:
        return parse_text(path, text)
    cached = cache.get(path)
    if cached is None or cached[0] != text:
        cached = cache[path] = (text, parse_text(path, text))
    return cached[1]


def parse_text(path: Path, text: str) -> FileResult:
    """The objects (and problems) of one file's text; `path` only names the file in messages."""
    result = FileResult()
    try:
        documents = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as e:
        result.errors.append(f"{path}: not valid YAML: {e}".replace("\n", " "))
        result.unreadable = True
        return result
    for doc in _expand_lists(documents):
        try:
            obj = parse_object(doc)
        except ObjectError as e:
            result.errors.append(f"{path}: {e}")
            result.invalid.add(e.ref)
            if (ref := listener_ref(doc)) is not None:
                result.invalid_listeners.setdefault(ref, InvalidObject.of(ref, doc, f"{path}: {e}"))
            continue
        if obj is None:
            continue
        if obj.ref in result.objects:
            result.errors.append(f"{path}: {obj.ref}: defined twice; the first definition is used")
            continue
        result.objects[obj.ref] = obj
    return result


def _expand_lists(documents: Iterable[Any]) -> Iterator[Any]:
    for doc in documents:
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            yield from doc["items"]
        else:
            yield doc


def validate(paths: Iterable[Path]) -> tuple[int, list[str]]:
    """Check manifests without running anything: (objects found, problems)."""
    count, problems = 0, []
    files = manifest_files(paths)
    for path in paths:
        if not path.exists():
            problems.append(f"{path}: no such file or directory")
    seen: dict[ObjectRef, Path] = {}
    objects: dict[ObjectRef, KubeObject] = {}
    for path in files:
        result = read_file(path)
        problems += result.errors
        for ref, obj in result.objects.items():
            if ref in seen:
                problems.append(f"{path}: {ref}: also defined in {seen[ref]}; the first definition is used")
            else:
                seen[ref] = path
                objects[ref] = obj
                count += 1
    problems += [f"{seen[ref]}: {problem}" for ref, problem in secret_problems(objects)]
    return count, problems


def secret_problems(objects: dict[ObjectRef, KubeObject]) -> Iterator[tuple[ObjectRef, str]]:
    """What is wrong with the Secrets the listeners among `objects` name, when those Secrets are among them too (a
    Secret that is not may live in a Kubernetes cluster)."""
    from ..translate.secrets import Use, use_problem  # the rule the control plane applies

    for ref, obj in objects.items():
        tls = getattr(getattr(obj, "spec", None), "tls", None)
        if tls is None:
            continue
        for field_name, name, use in (("tls.secret", tls.secret, Use.CERTIFICATE), ("tls.validation", tls.ca_secret, Use.CA)):
            secret = objects.get(ObjectRef("Secret", ref.namespace, name))
            problem = use_problem(secret, use) if isinstance(secret, Secret) else None
            if problem:
                yield ref, f"{ref}: spec.{field_name}: Secret {ref.namespace}/{name}: {problem}"


@dataclass
class _FileState:
    """What one file gives: its objects (invalid ones at their last good version), its problems, its invalid
    listeners."""

    objects: dict[ObjectRef, KubeObject]
    errors: list[str]
    invalid: dict[ObjectRef, InvalidObject]


class ManifestSource:
    """Feeds the World from files, as the source named `name`, and keeps watching them.

    `load()` reads every file (at start, and whenever the watcher may have missed something); a watch batch re-reads
    only the files it touched and hands the World only the objects that changed. A file that vanishes keeps its
    objects for `delete_grace` seconds, so a file replaced by a tool (an editor, `git checkout`, rsync) changes
    nothing; a ConfigMap key removed by a `..data` swap is deleted at once.
    """

    def __init__(
        self,
        paths: list[Path],
        world: World,
        name: str = MANIFEST_SOURCE,
        delete_grace: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = paths
        self.world = world
        self.delete_grace = delete_grace
        self.status = SourceStatus(name=name, kind="manifests", detail={"paths": [str(p) for p in paths]})
        self._clock = clock
        self._roots = [Path(os.path.abspath(p)) for p in paths]  # watchfiles reports absolute paths
        self._files: dict[Path, _FileState] = {}
        self._parsed: dict[Path, tuple[str, FileResult]] = {}  # each file's last text and what it parsed to
        self._defined: dict[ObjectRef, list[Path]] = {}  # the files defining each object; the first one counts
        self._duplicates: set[ObjectRef] = set()
        self._vanished: dict[Path, float] = {}  # files gone (or emptied) since, not deleted yet
        self._rank: dict[Path, tuple[int, tuple[str, ...]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loaded = False
        # From the state file, until the first load: the last good versions of objects invalid now, and what each
        # file gave (for a file that does not parse now).
        self._seeded: dict[str, KubeObject] = {}
        self._seeded_files: dict[Path, dict[ObjectRef, KubeObject]] = {}

    def seed(self, saved: Iterable[tuple[KubeObject, str | None]]) -> None:
        """The objects (and the files they came from) this source gave before a restart, for the first `load()`."""
        for obj, origin in saved:
            self._seeded[str(obj.ref)] = obj
            if origin:
                self._seeded_files.setdefault(Path(origin), {})[obj.ref] = obj

    def origin(self, ref: ObjectRef) -> str | None:
        """The file the World's version of this object comes from."""
        paths = self._defined.get(ref)
        return str(paths[0]) if paths else None

    def load(self) -> None:
        """Read every file and make the source's objects in the World exactly what they give."""
        now = self._clock()
        files = manifest_files(self._roots)
        for path in files:
            self._check(path, now)
        listed = set(files)
        for path in [p for p in self._files if p not in listed]:
            self._vanish(path, now)
        self._loaded = True
        self._seeded.clear()
        self._seeded_files.clear()
        self._finish()
        log.info("manifests: %d objects from %d files", len(self._defined), len(self._files))
        objects = [self._files[paths[0]].objects[ref] for ref, paths in self._defined.items()]
        self.world.replace(self.status.name, objects)

    def apply_changes(self, changed: Iterable[Path]) -> None:
        """Re-read the files these changed paths (absolute, as the watcher reports them) touch, and hand the World
        the objects that changed."""
        touched = file_changes.touched(self._roots, changed)
        if touched.unknown:
            self.load()
            return
        now = self._clock()
        candidates = dict.fromkeys(
            p for p in sorted(touched.files) if p in self._files or file_changes.listed(self._roots, p)
        )
        for directory in sorted(touched.directories):
            candidates.update(dict.fromkeys(p for p in self._files if p.is_relative_to(directory)))
            if directory.is_dir():
                candidates.update(dict.fromkeys(file_changes.files_below(directory)))
        changed_refs: set[ObjectRef] = set()
        for path in candidates:
            changed_refs |= self._check(path, now)
        self._publish(changed_refs)
        self._finish()

    def expire_vanished(self) -> None:
        """Delete the objects of files that stayed away for the grace period (the timer calls this)."""
        self._timer = None
        now = self._clock()
        due = [path for path, since in self._vanished.items() if now - since >= self.delete_grace]
        changed: set[ObjectRef] = set()
        for path in due:
            if _present(path):
                changed |= self._read(path)  # back, and the watcher has not said so yet
            else:
                log.info("%s stayed away for %gs: its objects are deleted", path, self.delete_grace)
                changed |= self._drop(path)
        if due:
            self._publish(changed)
            self._finish()
        self._schedule()

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        """Follow changes under the paths, until `stop` is set (or the task is cancelled).

        The watcher starts after the first `load()`: its first (empty, timed-out) batch says it is in place, and a
        full load then catches any edit made in between. A watched path that is itself replaced or removed starts
        the watcher again, on what is there then.
        """
        gone = False
        try:
            while stop is None or not stop.is_set():
                watched = [p for p in self._roots if p.exists()]
                if not watched:  # everything named is gone: its files vanish (with the grace); wait for them
                    if not gone:
                        self.load()
                    gone = True
                    await asyncio.sleep(1)
                    continue
                gone = False
                await self._watch(watched, stop)
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def _watch(self, watched: list[Path], stop: asyncio.Event | None) -> None:
        in_place = False
        async for changes in watchfiles.awatch(
            *watched, stop_event=stop, debounce=200, step=20, yield_on_timeout=True, rust_timeout=1000
        ):
            if not in_place:
                in_place = True
                self.load()
                continue
            if not changes:
                if len(watched) < len(self._roots) and any(p.exists() for p in self._roots if p not in watched):
                    return  # a named path came back: watch it too
                continue
            paths = {Path(p) for _, p in changes}
            shown = sorted(str(p) for p in paths)
            more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
            log.info("manifests changed: %s%s", clip(", ".join(shown[:5]), 1000), more)
            if any(p in paths for p in watched):
                self.load()
                return  # a watched path was itself replaced or removed: its watch is gone
            self.apply_changes(paths)

    # ---- internals -----------------------------------------------------------------------------------------------

    def _check(self, path: Path, now: float) -> set[ObjectRef]:
        return self._read(path) if _present(path) else self._vanish(path, now)

    def _read(self, path: Path) -> set[ObjectRef]:
        """Read one file again; the objects whose version from this file changed."""
        self._vanished.pop(path, None)
        result = read_file(path, self._parsed)
        before = self._files.get(path)
        previous = before.objects if before else self._seeded_files.get(path, {})
        if result.unreadable:
            objects = {**previous, **result.objects}  # keep what the file gave before it broke
        else:
            # An object that turned invalid keeps its last good version, so its listener keeps working.
            kept = {ref: obj for ref, obj in previous.items() if str(ref) in result.invalid}
            for name in result.invalid:
                seeded = self._seeded.get(name)
                if seeded is not None and seeded.ref not in kept and seeded.ref not in result.objects:
                    kept[seeded.ref] = seeded  # invalid since before a restart: its version from the state file
            objects = {**result.objects, **kept}
        self._files[path] = _FileState(objects, result.errors, result.invalid_listeners)
        return self._diff(path, before.objects if before else {}, objects)

    def _vanish(self, path: Path, now: float) -> set[ObjectRef]:
        """A file is gone or empty: drop its objects now (a ConfigMap swap, no grace, the first load) or later."""
        if path not in self._files:
            self._parsed.pop(path, None)
            return set()
        if not self._loaded or self.delete_grace <= 0 or file_changes.swapped_away(path):
            return self._drop(path)
        if path not in self._vanished:
            log.info("%s is gone or empty; its objects stay %gs in case it comes back", path, self.delete_grace)
            self._vanished[path] = now
            self._schedule()
        return set()

    def _drop(self, path: Path) -> set[ObjectRef]:
        self._vanished.pop(path, None)
        self._parsed.pop(path, None)
        state = self._files.pop(path, None)
        return self._diff(path, state.objects, {}) if state else set()

    def _diff(self, path: Path, old: dict[ObjectRef, KubeObject], new: dict[ObjectRef, KubeObject]) -> set[ObjectRef]:
        """Record which objects `path` now defines; the objects whose version from it changed."""
        changed = set()
        for ref in old.keys() | new.keys():
            if old.get(ref) == new.get(ref):
                continue
            changed.add(ref)
            paths = self._defined.setdefault(ref, [])
            if ref not in new:
                paths.remove(path)
            elif ref not in old:
                paths.append(path)
                paths.sort(key=self._order)
            if not paths:
                del self._defined[ref]
            if len(paths) > 1:
                self._duplicates.add(ref)
            else:
                self._duplicates.discard(ref)
        return changed

    def _order(self, path: Path) -> tuple[int, tuple[str, ...]]:
        """Files count in the order of the paths named, then by name: of two defining one object, the first wins."""
        rank = self._rank.get(path)
        if rank is None:
            roots = self._roots
            index = next((i for i, r in enumerate(roots) if path == r or path.is_relative_to(r)), len(roots))
            rank = self._rank[path] = (index, path.parts)
        return rank

    def _publish(self, refs: Iterable[ObjectRef]) -> None:
        for ref in refs:
            paths = self._defined.get(ref)
            if paths:
                self.world.upsert(self.status.name, self._files[paths[0]].objects[ref])
            else:
                self.world.delete(self.status.name, ref)

    def _finish(self) -> None:
        """Fold the files' problems into the status."""
        files = sorted(self._files, key=self._order)
        problems = [error for path in files for error in self._files[path].errors]
        for ref in sorted(self._duplicates):
            first, *others = self._defined[ref]
            problems += [f"{path}: {ref}: also defined in {first}; the first is used" for path in others]
        invalid: dict[ObjectRef, InvalidObject] = {}
        for path in files:
            for ref, record in self._files[path].invalid.items():
                invalid.setdefault(ref, record)
        for problem in problems:
            if problem not in self.status.problems:
                log.error("manifest problem: %s", problem)
        self.status.problems = problems
        self.status.invalid = invalid
        self.status.detail["vanishing"] = [str(p) for p in sorted(self._vanished)[:20]]
        self.status.synced = self.status.up = True
        self.status.touch()

    def _schedule(self) -> None:
        """Have `expire_vanished` run when the first vanished file's grace ends (when an event loop runs)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._vanished:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called without a loop (tests drive expire_vanished themselves)
            return
        delay = min(self._vanished.values()) + self.delete_grace - self._clock()
        self._timer = loop.call_later(max(delay, 0.0), self._expire_safely)

    def _expire_safely(self) -> None:
        try:
            self.expire_vanished()
        except Exception:  # from a timer nothing else would see it: say so, and keep the files for the next load
            log.exception("manifests: deleting vanished files failed")


def _present(path: Path) -> bool:
    """A file to read: there, and not empty (a file truncated before it is written again counts as vanished)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
