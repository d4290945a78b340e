"""Parse the manifests in a forked child while the control plane imports the rest of itself.

Startup is one CPU-bound thread: importing gRPC, the Envoy protos and aiohttp (about 0.35 s) and parsing 10,000 pods'
manifests (about 0.35 s) take turns on one core. `ForkedParse.start` forks before those imports; the child reads and
parses every file exactly as the source would (`read_file`) and sends the results back pickled. The source then
reads every file itself and takes a child's result only for a file whose content is what the child parsed, so an
edit in between is never missed; anything going wrong in the child (it crashed, was killed, could not pickle) leaves
the source parsing everything itself, as without it. Only where `os.fork` exists and another CPU is idle;
this module imports nothing heavy, so that the fork happens early.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manifests import FileResult

log = logging.getLogger(__name__)

Parsed = dict[Path, tuple[bytes, "FileResult"]]  # file -> (its content's digest, its result): the source's parse cache


class ForkedParse:
    def __init__(self, pid: int, read_fd: int) -> None:
        self._pid = pid
        self._fd = read_fd

    @classmethod
    def start(cls, paths: Iterable[Path], annotation: str) -> ForkedParse | None:
        """Fork the child that parses the manifests under `paths`; None where there is no fork or no idle CPU to
        run it on: with none (fewer than two CPUs, or a 1-minute load average that leaves none free) the child
        would only take turns with the imports, and startup gets slower (measured: docs/performance.md). Call it
        while the process has no other thread."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if not hasattr(os, "fork") or cpus < 2 or os.getloadavg()[0] > cpus - 1:
            return None
        roots = [Path(os.path.abspath(p)) for p in paths]
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _child(write_fd, roots, annotation)
        os.close(write_fd)
        return cls(pid, read_fd)

    def take(self) -> Parsed:
        """The child's results (blocking until it is done), or {} when it failed. Call it once."""
        try:
            with os.fdopen(self._fd, "rb") as results:
                data = results.read()
            status = os.waitstatus_to_exitcode(os.waitpid(self._pid, 0)[1])
            if status != 0 or not data:
                log.warning("manifests: the forked parse failed (exit status %d); parsing here", status)
                return {}
            parsed: Parsed = pickle.loads(data)  # from our own fork: trusted
            return parsed
        except Exception as e:
            log.warning("manifests: the forked parse failed (%s); parsing here", e)
            return {}


def _child(write_fd: int, roots: list[Path], annotation: str) -> None:
    status = 1
    try:
        import gc

        gc.disable()  # a short-lived process: nothing to collect
        from .manifests import manifest_files, read_file

        parsed: Parsed = {}
        for path in manifest_files(roots):
            read_file(path, parsed, annotation=annotation)
        data = pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)
        status = 0
    except BaseException:  # noqa: BLE001 - whatever happens, the child must end here (the parent parses instead)
        pass
    finally:
        os._exit(status)
