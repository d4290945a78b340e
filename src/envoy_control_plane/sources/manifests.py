"""Objects from Kubernetes-style YAML files on disk, reloaded when the files change.

A file may hold many documents, and `kind: List` documents (what `kubectl get -o yaml` prints). A file that no longer
parses keeps the objects it last gave, and an invalid object keeps its last good version: a typo must not take down
listeners that work. Every problem is reported with the file, the object and the field.
"""

from __future__ import annotations

import asyncio
import codecs
import difflib
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
import yaml

from ..config import MANIFEST_SOURCE
from ..model import (
    CLUSTER_NAME_ANNOTATION,
    KINDS,
    EgressListener,
    IngressListener,
    KubeObject,
    ObjectError,
    ObjectRef,
    Pod,
    Secret,
    UnnamedError,
    parse_object,
)
from ..state import World, used_cluster
from ..statefile import Saved
from ..text import clip
from . import blockyaml, file_changes, yamlbuild
from .file_changes import files_below
from .forked_parse import ForkedParse
from .status import InvalidObject, SourceStatus, listener_ref

log = logging.getLogger(__name__)

@dataclass
class FileResult:
    objects: dict[ObjectRef, KubeObject] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # the objects (as ObjectError names them) that failed to parse
    invalid_listeners: dict[ObjectRef, InvalidObject] = field(default_factory=dict)  # for their status conditions
    skipped: list[str] = field(default_factory=list)  # the kinds of documents that are no object we read
    # Part of the file (or all of it) could not be read as objects: its earlier objects not in `objects` are kept.
    # A file that is not YAML at all (I/O, encoding, syntax) gives no objects.
    unreadable: bool = False


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
_LOADER = yamlbuild.Loader  # the safe loader (libyaml when present), resolving repeated scalars once

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


def read_file(
    path: Path, cache: dict[Path, tuple[bytes, FileResult]] | None = None, *, annotation: str = CLUSTER_NAME_ANNOTATION
) -> FileResult:
    """Read and parse one file. With `cache` (a digest of each file's last content, and its result), a file whose
    content did not change is not parsed again: one pod edited among 10,000 costs reading the files, not parsing
    them all. `annotation` names a pod's Envoy cluster (one cache serves one annotation)."""
    where = shown(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read for ever
            return FileResult(errors=[f"{where}: not a regular file"], unreadable=True)
        data = path.read_bytes()
    except OSError as e:
        return FileResult(errors=[f"{where}: cannot read: {e.strerror or e}"], unreadable=True)
    digest = hashlib.blake2b(data, digest_size=16).digest() if cache is not None else b""
    if cache is not None and (cached := cache.get(path)) is not None and cached[0] == digest:
        return cached[1]
    try:
        text = decode(data)
    except UnicodeDecodeError as e:
        return FileResult(errors=[f"{where}: not text: {e.reason} at byte {e.start} (expected UTF-8, or UTF-16/32 "
                                  "with a byte order mark)"], unreadable=True)
    result = parse_text(path, text, annotation=annotation)
    if cache is not None:
        cache[path] = (digest, result)
    return result


def shown(path: Path) -> str:
    """A file name as messages show it (a name may hold a newline)."""
    return clip(str(path), 500)


def decode(data: bytes) -> str:
    """A file's text: UTF-8, or UTF-16/UTF-32 when it starts with a byte order mark (as YAML allows)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding)
    return data.decode("utf-8")


def parse_text(path: Path, text: str, *, annotation: str = CLUSTER_NAME_ANNOTATION) -> FileResult:
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
                _add_object(result, where, number, item, annotation)
    except yaml.YAMLError as e:
        return FileResult(errors=[f"{where}: not valid YAML: {clip(str(e), 500)}"], unreadable=True)
    except Exception as e:  # a value the YAML constructor chokes on (a timestamp with month 13), or a bug
        log.debug("parsing %s failed", where, exc_info=True)
        return FileResult(errors=[f"{where}: cannot parse: {type(e).__name__}: {clip(str(e), 300)}"], unreadable=True)
    return result


def _add_object(result: FileResult, where: str, number: int, doc: Any, annotation: str) -> None:
    try:
        obj = parse_object(doc, cluster_name_annotation=annotation)
    except UnnamedError as e:
        result.errors.append(f"{where}: document {number}: {e}")
        result.unreadable = True  # which object it is, is unknown: every earlier object of the file stays
        return
    except ObjectError as e:
        result.errors.append(f"{where}: {e}")
        result.invalid.add(e.ref)
        if (ref := listener_ref(doc)) is not None:
            result.invalid_listeners.setdefault(ref, InvalidObject.of(ref, doc, f"{where}: {e}"))
        return
    except Exception as e:  # parse_object raises only ObjectError; anything else is a bug, which must not spread
        log.exception("%s: document %d: unexpected error while parsing", where, number)
        result.errors.append(f"{where}: document {number}: cannot parse: {type(e).__name__}: {clip(str(e))}")
        result.unreadable = True
        return
    if obj is None:
        kind = clip(str(doc.get("kind")), 60)
        result.skipped.append(kind)
        if isinstance(doc.get("kind"), str) and (ours := look_alike(kind)) is not None:
            result.errors.append(f"{where}: document {number}: kind {kind} is not one this control plane reads; "
                                 f"did you mean {ours}?")  # fmt: skip
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
    plain = blockyaml.load(text)  # the common shape, read line by line; None: anything else, for PyYAML
    if plain is not None:
        yield from plain
        return
    anchors = "&" in text  # no anchor, no alias: most files skip the measuring
    loader = _LOADER(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            problem = _alias_problem(node) if anchors else None
            if problem:
                yield DocumentError(problem)
            else:  # aliases must stay shared: only alias-free text takes the fast builder
                yield loader.construct_document(node) if anchors else yamlbuild.build(loader, node)
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


@dataclass
class Validation:
    """What `validate` found: the objects, what `run` would reject or report (problems), what it would accept but is
    likely a mistake (warnings), and the documents it skipped, by kind."""

    count: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def validate(paths: Iterable[Path], annotation: str = CLUSTER_NAME_ANNOTATION) -> Validation:
    """Check manifests without running anything, as `run` would see them together."""
    count, problems = 0, []
    skipped: dict[str, int] = {}
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
    objects: dict[ObjectRef, KubeObject] = {}
    for path in files:
        result = read_file(path, annotation=annotation)
        problems += result.errors
        for kind in result.skipped:
            skipped[kind] = skipped.get(kind, 0) + 1
        for ref, obj in result.objects.items():
            if ref in seen:
                problems.append(f"{shown(path)}: {ref}: also defined in {shown(seen[ref])}; the first definition is used")
            else:
                seen[ref] = path
                objects[ref] = obj
                count += 1
    problems += [f"{seen[ref]}: {problem}" for ref, problem in secret_problems(objects)]
    world = World()
    for obj in objects.values():
        world.upsert(MANIFEST_SOURCE, obj)
    for node in world.nodes():
        problems += [f"{seen[r.key[1]]}: {r.message}" for r in world.listeners(node).rejected]
    return Validation(count, problems, list(_empty_clusters(objects, seen)), skipped)


def look_alike(kind: str) -> str | None:
    """The kind of ours a skipped document's kind looks like a slip of (`Pods`, `ingresslistener`), if any."""
    folded = kind.lower().rstrip("s")
    for ours in KINDS:
        if folded == ours.lower() or difflib.SequenceMatcher(None, folded, ours.lower()).ratio() >= 0.85:
            return ours
    return None


def _empty_clusters(objects: dict[ObjectRef, KubeObject], seen: dict[ObjectRef, Path]) -> Iterator[str]:
    """Listeners whose cluster has no pod among these files: accepted by `run`, but with these files alone an
    ingress admits nobody and an egress has nowhere to send."""
    with_pods = {obj.cluster_name for obj in objects.values() if isinstance(obj, Pod) and obj.is_endpoint}
    for ref, obj in objects.items():
        if isinstance(obj, (IngressListener, EgressListener)):
            cluster = used_cluster(obj)
            if cluster and cluster not in with_pods:
                effect = "admits nobody" if isinstance(obj, IngressListener) else "has no endpoint"
                yield f"{seen[ref]}: {ref}: no pod in these files is in cluster {cluster}: with them alone it {effect}"


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
        annotation: str = CLUSTER_NAME_ANNOTATION,
        forked: ForkedParse | None = None,
    ) -> None:
        """`annotation`: the pod annotation naming a pod's Envoy cluster. `forked`: a child parsing the files
        already, whose results the first `reload()` takes."""
        self.paths = paths
        self.annotation = annotation
        self.world = world
        self.delete_grace = delete_grace
        self.status = SourceStatus(name=name, kind="manifests", detail={"paths": [str(p) for p in paths]})
        self._clock = clock
        self._roots = [Path(os.path.abspath(p)) for p in paths]  # watchfiles reports absolute paths
        self._files: dict[Path, _FileState] = {}
        self._parsed: dict[Path, tuple[bytes, FileResult]] = {}  # each file's last content digest, what it gave
        self._defined: dict[ObjectRef, list[Path]] = {}  # the files defining each object; the first one counts
        self._duplicates: set[ObjectRef] = set()
        self._vanished: dict[Path, float] = {}  # files gone (or emptied) since, not deleted yet
        self._rank: dict[Path, tuple[int, tuple[str, ...]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._forked = forked
        self._loaded = False
        # From the state file, until the first load: the last good versions of objects invalid now, and what each
        # file gave (for a file that does not parse now). Parsed only when used.
        self._seeded: dict[str, Saved] = {}
        self._seeded_files: dict[Path, list[Saved]] = {}

    def seed(self, saved: Iterable[Saved]) -> None:
        """The objects (and the files they came from) this source gave before a restart, for the first `load()`."""
        for item in saved:
            self._seeded[item.name] = item
            if item.origin:
                self._seeded_files.setdefault(Path(item.origin), []).append(item)

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

    async def reload(self) -> None:
        """`load()`, with the files parsed in a thread first: 100,000 pods take seconds to parse, and xDS must keep
        answering meanwhile. The World changes on the event loop, as always."""
        if self._forked is not None:
            forked, self._forked = self._forked, None
            self._parsed.update(await asyncio.to_thread(forked.take))  # used only for files whose content is the same
        await asyncio.to_thread(self._parse_ahead, None)
        self.load()

    def _parse_ahead(self, paths: Iterable[Path] | None) -> None:
        """Fill the parse cache for these files (None: all), so that reading them again on the loop costs no parse."""
        for path in manifest_files(self._roots) if paths is None else paths:
            read_file(path, self._parsed, annotation=self.annotation)

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
        the watcher again, on what is there then. Nothing ends the watch silently: a failure (a bug, the watcher
        breaking) is logged, the source marked down (its objects stay), and the watch starts again after a pause.
        """
        gone = False
        pause = 0.5
        try:
            while stop is None or not stop.is_set():
                try:
                    watched = [p for p in self._roots if p.exists()]
                    if not watched:  # everything named is gone: its files vanish (with the grace); wait for them
                        if not gone:
                            self.load()
                        gone = True
                        await asyncio.sleep(1)
                        continue
                    gone = False
                    await self._watch(watched, stop)
                except Exception as e:
                    if self.status.last_error is None:
                        pause = 0.5  # it recovered since the last failure
                    self.status.up, self.status.last_error = False, f"watch failed: {type(e).__name__}: {clip(str(e))}"
                    self.status.touch()
                    log.exception("manifests: the watch failed; restarting it in %gs", pause)
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, 30.0)
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
                await self.reload()
                self.status.last_error = None
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
                await self.reload()
                return  # a watched path was itself replaced or removed: its watch is gone
            await asyncio.to_thread(self._parse_ahead, sorted(p for p in paths if file_changes.listed(self._roots, p)))
            self.apply_changes(paths)

    # ---- internals -----------------------------------------------------------------------------------------------

    def _check(self, path: Path, now: float) -> set[ObjectRef]:
        return self._read(path) if _present(path) else self._vanish(path, now)

    def _read(self, path: Path) -> set[ObjectRef]:
        """Read one file again; the objects whose version from this file changed."""
        self._vanished.pop(path, None)
        result = read_file(path, self._parsed, annotation=self.annotation)
        before = self._files.get(path)
        previous = before.objects if before else self._seeded_objects(path)
        if result.unreadable:
            objects = {**previous, **result.objects}  # keep what the file gave before it broke
        else:
            # An object that turned invalid keeps its last good version, so its listener keeps working.
            kept = {ref: obj for ref, obj in previous.items() if str(ref) in result.invalid}
            for name in result.invalid & self._seeded.keys():
                seeded = self._seeded[name].parse()  # invalid since before a restart: its saved version
                if seeded is not None and seeded.ref not in kept and seeded.ref not in result.objects:
                    kept[seeded.ref] = seeded
            objects = {**result.objects, **kept}
        self._files[path] = _FileState(objects, result.errors, result.invalid_listeners)
        return self._diff(path, before.objects if before else {}, objects)

    def _seeded_objects(self, path: Path) -> dict[ObjectRef, KubeObject]:
        objects = (item.parse() for item in self._seeded_files.get(path, ()))
        return {obj.ref: obj for obj in objects if obj is not None}

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
        for ref, obj in new.items():
            if old.get(ref) != obj:
                changed.add(ref)
                if ref not in old:
                    self._define(ref, path)
        for ref in old.keys() - new.keys():
            changed.add(ref)
            self._undefine(ref, path)
        return changed

    def _define(self, ref: ObjectRef, path: Path) -> None:
        paths = self._defined.get(ref)
        if paths is None:
            self._defined[ref] = [path]  # the common case: one file defines it
            return
        paths.append(path)
        paths.sort(key=self._order)
        self._duplicates.add(ref)

    def _undefine(self, ref: ObjectRef, path: Path) -> None:
        paths = self._defined[ref]
        paths.remove(path)
        if not paths:
            del self._defined[ref]
        if len(paths) <= 1:
            self._duplicates.discard(ref)

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
