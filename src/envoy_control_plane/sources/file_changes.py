"""Which manifest files a batch of file-system changes touches, and when a vanished file is gone for good.

Hidden names (starting with ".") below a watched directory are not manifests: editors' swap files, `.git`, and the
internals of a Kubernetes ConfigMap or Secret volume. Such a volume holds each key as a symlink `name -> ..data/name`;
the kubelet writes a new version into a fresh `..<timestamp>` directory and then swaps the `..data` symlink to it in
one rename, so a change there changes every file of that directory at once, and a key missing from the new `..data`
was removed from the ConfigMap: no grace needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = (".yaml", ".yml", ".json")
CONFIGMAP_DATA = "..data"


def files_below(directory: Path) -> Iterator[Path]:
    """The YAML/JSON files below a directory, hidden names and symlinked directories skipped, in a stable order."""
    for top, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.endswith(SUFFIXES):
                path = Path(top, name)
                if path.is_file():  # a symlink to a file counts (ConfigMap keys are symlinks); a dangling one not
                    yield path


@dataclass
class Touched:
    """What a batch of changed paths asks to look at again."""

    files: set[Path] = field(default_factory=set)  # manifest files changed, added or removed
    directories: set[Path] = field(default_factory=set)  # scan again: files below may have come or gone
    unknown: bool = False  # a change the roots do not explain: read everything again


def touched(roots: Sequence[Path], changed: Iterable[Path]) -> Touched:
    """Sort absolute changed paths (as the watcher reports them) against the absolute watched roots."""
    result = Touched()
    for path in changed:
        root = next((r for r in roots if path == r or path.is_relative_to(r)), None)
        if root is None or path == root:
            result.unknown = True
            continue
        parts = path.relative_to(root).parts
        hidden = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        if hidden is not None:
            if parts[hidden].startswith(".."):  # a ConfigMap volume's internals changed: all its keys may have
                result.directories.add(root.joinpath(*parts[:hidden]))
            continue
        if path.suffix in SUFFIXES and not path.is_dir():
            result.files.add(path)
        else:
            result.directories.add(path)  # a directory came, went or was renamed (or a file we do not read)
    return result


def listed(roots: Sequence[Path], path: Path) -> bool:
    """Whether a full scan of the roots would list this (changed) file: a named file, or a file below a root that
    is reached without hidden names or symlinked directories."""
    for root in roots:
        if path == root:
            return True
        if not path.is_relative_to(root):
            continue
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts) or path.suffix not in SUFFIXES:
            return False
        parent = root
        for part in parts[:-1]:
            parent = parent / part
            if parent.is_symlink():
                return False
        return True
    return False


def swapped_away(path: Path) -> bool:
    """Whether `path` is a key of a ConfigMap-style volume whose `..data` now points at a version without it."""
    data = path.parent / CONFIGMAP_DATA
    return data.is_symlink() and data.is_dir() and not (data / path.name).exists()
