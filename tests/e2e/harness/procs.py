"""Child processes that cannot outlive the test run, and their logs for failure messages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# The kernel kills the child if pytest itself dies (a hard timeout, a crash). Not with preexec_fn: running Python
# between fork and exec in a process with gRPC threads can crash or hang the child. setpriv execs into the command,
# and the parent-death signal survives that exec.
_SETPRIV = shutil.which("setpriv")
_GUARD = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `args` with stdout and stderr in `log`."""
    with log.open("ab") as out:
        return subprocess.Popen([*_GUARD, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaps the process."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap: a crash, as far as anyone talking to the process can tell."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
