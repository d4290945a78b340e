"""Child processes for the benchmark: spawning (never outliving us), CPU and memory from /proc, the control plane's log.

Times: the benchmark, the simulated fleet and Envoy's pollers use time.monotonic() (CLOCK_MONOTONIC, one clock for
every process on the host). The control plane logs wall-clock times with millisecond resolution
(`2026-01-01 12:00:00,123`); `Clock` maps them to monotonic time with an offset taken once at start.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_SETPRIV = shutil.which("setpriv")
# The kernel kills the child if the benchmark dies; setpriv execs into the command, so the pid is the command's.
GUARD = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def spawn(args: list[str], log: Path, **options: object) -> subprocess.Popen[bytes]:
    """Start args with stdout and stderr in log (stdin from /dev/null unless options say otherwise)."""
    options.setdefault("stdin", subprocess.DEVNULL)
    with log.open("ab") as out:
        command = [*GUARD, *args]
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **options)  # type: ignore[call-overload]


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, SIGKILL after grace seconds; always reaps."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass(frozen=True)
class Usage:
    """A process's CPU seconds (user + system, all threads) and memory, at one moment."""

    t: float
    cpu: float
    rss_mb: float
    hwm_mb: float  # peak RSS so far (VmHWM)


def usage(pid: int) -> Usage:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # utime, stime and the children's cutime, cstime once reaped (fields 14-17 of stat): `run` parses the
    # manifests in a forked child at startup
    cpu = sum(int(v) for v in fields[11:15]) / CLK_TCK
    memory = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024
    return Usage(time.monotonic(), cpu, memory.get("VmRSS", 0.0), memory.get("VmHWM", 0.0))


class Clock:
    """Maps the control plane's wall-clock log timestamps to time.monotonic()."""

    def __init__(self) -> None:
        samples = []
        for _ in range(5):
            a = time.monotonic()
            w = time.time()
            b = time.monotonic()
            samples.append((b - a, w - (a + b) / 2))
        self.offset = min(samples)[1]  # wall - monotonic

    def mono(self, wall: float) -> float:
        return wall - self.offset


_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([\w.]+): (.*)$")


@dataclass(frozen=True)
class LogLine:
    t: float  # monotonic, at the start of the logged millisecond
    level: str
    logger: str
    message: str


class LogTail:
    """Reads the control plane's log as it grows, line by line."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._offset = 0
        self._rest = b""

    def read(self) -> list[LogLine]:
        """The complete lines written since the last call."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._rest + data
        *complete, self._rest = data.split(b"\n")
        lines = []
        for raw in complete:
            match = _LINE.match(raw.decode(errors="replace"))
            if match:
                stamp, millis, level, logger, message = match.groups()
                wall = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
                lines.append(LogLine(self.clock.mono(wall), level, logger, message))
        return lines

    def skip(self) -> None:
        """Forget everything written so far."""
        self.read()
