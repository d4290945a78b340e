"""Objects from Kubernetes-style YAML files on disk, reloaded when the files change.

A file may hold many documents, and `kind: List` documents (what `kubectl get -o yaml` prints). A file that no longer
parses keeps the objects it last gave, and an invalid object keeps its last good version: a typo must not take down
listeners that work. Every problem is reported with the file, the object and the field.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
import yaml

from ..config import MANIFEST_SOURCE
from ..model import KubeObject, ObjectError, ObjectRef, UnnamedError, parse_object
from ..state import World
from ..text import clip
from .status import SourceStatus

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class FileResult:
    objects: dict[ObjectRef, KubeObject] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # the objects (as ObjectError names them) that failed to parse
    # Part of the file (or all of it) could not be read as objects: its earlier objects not in `objects` are kept.
    # A file that is not YAML at all (I/O, encoding, syntax) gives no objects.
    unreadable: bool = False


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

# A document may not grow by more than this many nodes through aliases: a few hundred bytes of nested aliases
# ("billion laughs") expand to billions, and whatever walks the result (validation, messages) never ends.
MAX_ALIAS_EXPANSION = 100_000

# Byte order marks, longest first (UTF-32 LE starts like UTF-16 LE). PowerShell's `>` writes UTF-16 LE with a BOM.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def read_file(path: Path, cache: dict[Path, tuple[str, FileResult]] | None = None) -> FileResult:
    """Read and parse one file. With `cache` (each file's last text and result), a file whose text did not change
    is not parsed again: one pod edited among 10,000 costs reading the files, not parsing them all."""
    where = shown(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        return FileResult(errors=[f"{where}: cannot read: {e.strerror or e}"], unreadable=True)
    try:
        text = decode(data)
    except UnicodeDecodeError as e:
        return FileResult(errors=[f"{where}: not text: {e.reason} at byte {e.start} (expected UTF-8, or UTF-16/32 "
                                  "with a byte order mark)"], unreadable=True)
    if cache is None:
        return parse_text(path, text)
    cached = cache.get(path)
    if cached is None or cached[0] != text:
        cached = cache[path] = (text, parse_text(path, text))
    return cached[1]


def shown(path: Path) -> str:
    """A file name as messages show it (a name may hold a newline)."""
    return clip(str(path), 500)


def decode(data: bytes) -> str:
    """A file's text: UTF-8, or UTF-16/UTF-32 when it starts with a byte order mark (as YAML allows)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding)
    return data.decode("utf-8")


def parse_text(path: Path, text: str) -> FileResult:
    """The objects (and problems) of one file's text; `path` only names the file in messages.

    Nothing raises out of here: a document that breaks in an unforeseen way is a problem naming the file and the
    document, like any other.
    """
    result, where = FileResult(), shown(path)
    try:
        documents = load_documents(text)
        for number, doc in enumerate(documents, 1):
            if isinstance(doc, DocumentError):
                result.errors.append(f"{where}: document {number}: {doc}")
                result.unreadable = True  # which objects it held is unknown: they keep their last good versions
                continue
            for item in _expand_lists(doc):
                _add_object(result, where, number, item)
    except yaml.YAMLError as e:
        return FileResult(errors=[f"{where}: not valid YAML: {clip(str(e), 500)}"], unreadable=True)
    except Exception as e:  # a value the YAML constructor chokes on (a timestamp with month 13), or a bug
        log.debug("parsing %s failed", where, exc_info=True)
        return FileResult(errors=[f"{where}: cannot parse: {type(e).__name__}: {clip(str(e), 300)}"], unreadable=True)
    return result


def _add_object(result: FileResult, where: str, number: int, doc: Any) -> None:
    try:
        obj = parse_object(doc)
    except UnnamedError as e:
        result.errors.append(f"{where}: document {number}: {e}")
        result.unreadable = True  # which object it is, is unknown: every earlier object of the file stays
        return
    except ObjectError as e:
        result.errors.append(f"{where}: {e}")
        result.invalid.add(e.ref)
        return
    except Exception as e:  # parse_object raises only ObjectError; anything else is a bug, which must not spread
        log.exception("%s: document %d: unexpected error while parsing", where, number)
        result.errors.append(f"{where}: document {number}: cannot parse: {type(e).__name__}: {clip(str(e))}")
        result.unreadable = True
        return
    if obj is None:
        return
    if obj.ref in result.objects:
        result.errors.append(f"{where}: {obj.ref}: defined twice; the first definition is used")
        return
    result.objects[obj.ref] = obj


class DocumentError(str):
    """Stands for a document that was refused before it was built (`load_documents` says why)."""


def load_documents(text: str) -> Iterator[Any]:
    """The documents of a YAML stream, each one composed, measured, then built.

    A document whose aliases expand to more than MAX_ALIAS_EXPANSION nodes, or refer to themselves, comes out as a
    DocumentError instead: building it is cheap (aliases share objects), but anything that walks it never ends.
    Raises yaml.YAMLError for a stream that is not YAML.
    """
    anchors = "&" in text  # no anchor, no alias: most files skip the measuring
    loader = _LOADER(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            problem = _alias_problem(node) if anchors else None
            yield DocumentError(problem) if problem else loader.construct_document(node)
    finally:
        loader.dispose()


def _alias_problem(root: yaml.Node) -> str | None:
    """Why a composed document must not be built: self-referring aliases, or an expansion over the limit."""
    size: dict[int, int] = {}  # node id -> nodes it expands to, itself included
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in _children(node))
            continue
        if key in size:
            continue
        if key in open_nodes:
            return "an alias refers to a node that contains it (a recursive document)"
        distinct += 1
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)
    if size[id(root)] - distinct > MAX_ALIAS_EXPANSION:
        return f"aliases expand it by more than {MAX_ALIAS_EXPANSION} nodes; refused"
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expand_lists(doc: Any) -> list[Any]:
    """The objects of one document: none, itself, or the items of a `kind: List`."""
    if doc is None:
        return []
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return doc["items"]
    return [doc]


def validate(paths: Iterable[Path]) -> tuple[int, list[str]]:
    """Check manifests without running anything: (objects found, problems)."""
    count, problems = 0, []
    files: list[Path] = []
    for path in paths:
        try:
            if path.exists():
                files += manifest_files([path])
            else:
                problems.append(f"{shown(path)}: no such file or directory")
        except (OSError, ValueError) as e:  # a name with a NUL byte, a directory we may not list
            problems.append(f"{shown(path)}: cannot read: {e}")
    seen: dict[ObjectRef, Path] = {}
    for path in files:
        result = read_file(path)
        problems += result.errors
        for ref in result.objects:
            if ref in seen:
                problems.append(f"{shown(path)}: {ref}: also defined in {shown(seen[ref])}; the first definition is used")
            else:
                seen[ref] = path
                count += 1
    return count, problems


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
        self._apply(self._read())

    async def reload(self) -> None:
        """`load()`, reading and parsing in a thread (100,000 pods take seconds: xDS keeps answering meanwhile);
        the World changes on the event loop, as always."""
        self._apply(await asyncio.to_thread(self._read))

    def _read(self) -> dict[Path, FileResult]:
        files = manifest_files(self.paths)
        self._parsed = {path: self._parsed[path] for path in files if path in self._parsed}  # forget deleted files
        return {path: read_file(path, self._parsed) for path in files}

    def _apply(self, results: dict[Path, FileResult]) -> None:
        problems: list[str] = []
        current: dict[Path, dict[ObjectRef, KubeObject]] = {}
        for path, result in results.items():
            previous = self._last_good.get(path, {})
            if result.unreadable:
                current[path] = {**previous, **result.objects}  # keep what the file gave before it broke
            else:
                # An object that turned invalid keeps its last good version, so its listener keeps working.
                kept = {ref: obj for ref, obj in previous.items() if str(ref) in result.invalid}
                current[path] = {**result.objects, **kept}
            problems += result.errors
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
        self.status.synced = self.status.up = True
        self.status.touch()
        log.info("manifests: %d objects from %d files", len(merged), len(current))
        self.world.replace(self.status.name, merged.values())

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        """Reload on every change under the paths, until `stop` is set (or the task is cancelled).

        Nothing ends the watch silently: a failure (a bug, the watcher breaking) is logged, the source is marked
        down (its objects stay), and the watch starts again after a pause, reloading everything once in place.
        """
        pause = 0.5
        while not (stop and stop.is_set()):
            try:
                await self._watch(stop)
            except Exception as e:
                if self.status.last_error is None:
                    pause = 0.5  # it recovered since the last failure
                self.status.up, self.status.last_error = False, f"watch failed: {type(e).__name__}: {clip(str(e))}"
                self.status.touch()
                log.exception("manifests: the watch failed; restarting it in %gs", pause)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 30.0)
            else:
                return

    async def _watch(self, stop: asyncio.Event | None) -> None:
        """The watcher starts after the first load: its first (empty, timed-out) batch says it is in place, and one
        more load then catches any edit made in between."""
        watched = [p for p in self.paths if p.exists()]
        in_place = False
        async for changes in watchfiles.awatch(
            *watched, stop_event=stop, debounce=200, step=20, yield_on_timeout=True, rust_timeout=1000
        ):
            if changes:
                log.info("manifests changed: %s", ", ".join(sorted({clip(c[1]) for c in changes})))
            elif in_place:
                continue
            in_place = True
            await self.reload()
            self.status.last_error = None
