"""Objects from Kubernetes-style YAML files on disk, reloaded when the files change.

A file may hold many documents, and `kind: List` documents (what `kubectl get -o yaml` prints). A file that no longer
parses keeps the objects it last gave, and an invalid object keeps its last good version: a typo must not take down
listeners that work. Every problem is reported with the file, the object and the field.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
import yaml

from ..config import MANIFEST_SOURCE
from ..model import KubeObject, ObjectError, ObjectRef, Secret, parse_object
from ..state import World
from .status import InvalidObject, SourceStatus, listener_ref

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class FileResult:
    objects: dict[ObjectRef, KubeObject] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # the objects (as ObjectError names them) that failed to parse
    invalid_listeners: dict[ObjectRef, InvalidObject] = field(default_factory=dict)  # for their status conditions
    unreadable: bool = False  # the whole file failed (I/O or YAML syntax)


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the YAML/JSON files below the directories named, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.exists():
            files.append(path)
    return files


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


class ManifestSource:
    """Feeds the World from files, as the source named `name`, and keeps watching them."""

    def __init__(self, paths: list[Path], world: World, name: str = MANIFEST_SOURCE) -> None:
        self.paths = paths
        self.world = world
        self.status = SourceStatus(name=name, kind="manifests", detail={"paths": [str(p) for p in paths]})
        self._last_good: dict[Path, dict[ObjectRef, KubeObject]] = {}
        self._parsed: dict[Path, tuple[str, FileResult]] = {}  # each file's last text and what it parsed to

    def load(self) -> None:
        """Read every file and hand the result to the World as one replacement."""
        problems: list[str] = []
        invalid: dict[ObjectRef, InvalidObject] = {}
        current: dict[Path, dict[ObjectRef, KubeObject]] = {}
        files = manifest_files(self.paths)
        self._parsed = {path: self._parsed[path] for path in files if path in self._parsed}  # forget deleted files
        for path in files:
            result = read_file(path, self._parsed)
            previous = self._last_good.get(path, {})
            if result.unreadable:
                current[path] = previous  # keep what the file gave before it broke
            else:
                # An object that turned invalid keeps its last good version, so its listener keeps working.
                kept = {ref: obj for ref, obj in previous.items() if str(ref) in result.invalid}
                current[path] = {**result.objects, **kept}
            problems += result.errors
            invalid = {**result.invalid_listeners, **invalid}
        merged: dict[ObjectRef, KubeObject] = {}
        for path, objects in current.items():
            for ref, obj in objects.items():
                if ref in merged:
                    problems.append(f"{path}: {ref}: also defined in another file; the first is used")
                    continue
                merged[ref] = obj
        self._last_good = current
        for problem in problems:
            if problem not in self.status.problems:
                log.error("manifest problem: %s", problem)
        self.status.problems = problems
        self.status.invalid = invalid
        self.status.synced = self.status.up = True
        self.status.touch()
        log.info("manifests: %d objects from %d files", len(merged), len(current))
        self.world.replace(self.status.name, merged.values())

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        """Reload on every change under the paths, until `stop` is set (or the task is cancelled).

        The watcher starts after the first `load()`: its first (empty, timed-out) batch says it is in place, and one
        more load then catches any edit made in between.
        """
        watched = [p for p in self.paths if p.exists()]
        in_place = False
        async for changes in watchfiles.awatch(
            *watched, stop_event=stop, debounce=200, step=20, yield_on_timeout=True, rust_timeout=1000
        ):
            if changes:
                log.info("manifests changed: %s", ", ".join(sorted({c[1] for c in changes})))
            elif in_place:
                continue
            in_place = True
            self.load()

