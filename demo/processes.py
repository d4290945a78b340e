"""The processes the demo starts (the control plane, two Envoys): waiting on them, failing fast, stopping them.

Every wait fails as soon as one of them exits; a failure carries a one-line reason and the process to blame, and
`report` prints the tail of its log and of the control plane's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from envoy_control_plane.text import clip

CONTROL_PLANE = "control plane"
TAIL_LINES = 30


@dataclass
class Child:
    """A process the demo started, with the file its output goes to."""

    name: str
    process: asyncio.subprocess.Process
    log: Path


class Failed(Exception):
    """A step failed: the message is the one line shown; the log of `culprit` (and the control plane's) follows."""

    def __init__(self, reason: str, culprit: Child | None = None) -> None:
        super().__init__(reason)
        self.culprit = culprit


class Processes:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.children: list[Child] = []

    async def spawn(self, name: str, log: Path, *argv: str) -> Child:
        """Start argv in its own session (Ctrl-C reaches the demo only, which stops it), output to `log`."""
        with log.open("wb") as out:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True, cwd=self.cwd
                )
            except OSError as e:
                raise Failed(f"cannot start the {name} ({argv[0]}): {e.strerror}") from None
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        """Fail if a process has exited: on an error status with the last line of its log (where the control plane
        and Envoy say why they cannot start)."""
        for child in self.children:
            if (status := child.process.returncode) is None:
                continue
            if status < 0:
                raise Failed(f"the {child.name} was killed by {signal.Signals(-status).name}", child)
            last = next((line for line in reversed(_tail(child.log)) if line.strip()), "") if status else ""
            raise Failed(f"the {child.name} exited (status {status})" + (f": {_clip(last)}" if last else ""), child)

    async def poll(self, check: Callable[[], bool], what: str, culprit: Child, timeout: float = 30) -> None:
        """Call `check()` (in a thread; an OSError is a "not yet") until it is true. Fail as soon as a process
        exits, or with `what` on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                if await asyncio.to_thread(check):
                    return
            await asyncio.sleep(0.1)
        raise Failed(f"{what} after {timeout:.0f}s", culprit)

    async def wait_http(self, url: str, child: Child, expect: bytes = b"") -> None:
        await self.poll(lambda: expect in _get(url), f"the {child.name} is not ready at {url}", child)

    async def wait_listeners(self, admin_port: int, listeners: dict[int, str], envoy: Child) -> None:
        """Wait until an Envoy listens on every port of `listeners` ({port: name}); fail at once when it rejected a
        listener (its port taken, most likely: Envoy's error says)."""

        def bound() -> bool:
            dump = json.loads(_get(f"http://127.0.0.1:{admin_port}/config_dump?resource=dynamic_listeners"))
            for listener in dump.get("configs", []):
                if error := listener.get("error_state"):
                    details = _clip(str(error.get("details", "no details")))
                    raise Failed(f"the {envoy.name} rejected listener {listener.get('name')!r}: {details}", envoy)
            status = json.loads(_get(f"http://127.0.0.1:{admin_port}/listeners?format=json"))
            active = {s["local_address"]["socket_address"].get("port_value") for s in status["listener_statuses"]}
            return listeners.keys() <= active

        names = ", ".join(f"{name} on {port}" for port, name in listeners.items())
        await self.poll(bound, f"the {envoy.name} does not listen ({names})", envoy)

    async def wait_while_alive(self) -> None:
        """Wait until cancelled (Ctrl-C); fail if a process exits meanwhile."""
        while True:
            self.check_alive()
            await asyncio.sleep(0.5)

    def report(self, failure: Failed, workdir: Path) -> None:
        """The reason, then the tails of the failed process's log and the control plane's, to stderr."""
        print(f"demo: FAILED: {failure}", file=sys.stderr)
        logs = [c for c in self.children if c is failure.culprit or c.name == CONTROL_PLANE]
        for child in sorted(logs, key=lambda c: c.name == CONTROL_PLANE):
            lines = _tail(child.log)
            print(f"--- {child.name}: last {len(lines)} lines of {child.log} ---", file=sys.stderr)
            print("\n".join(lines) if lines else "(empty)", file=sys.stderr)
        print(f"demo: all logs in {workdir}", file=sys.stderr, flush=True)

    async def stop_all(self) -> None:
        """SIGTERM each (the last started first), SIGKILL what has not exited 5 s later."""
        for child in reversed(self.children):
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.terminate()
                try:
                    await asyncio.wait_for(child.process.wait(), 5)
                except TimeoutError:
                    child.process.kill()
                    await child.process.wait()


def _clip(line: str) -> str:
    """A log line or an Envoy error for the one-line reason: whitespace runs made one space, bounded, escaped."""
    return clip(" ".join(line.split()), 300)


def _tail(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines()[-TAIL_LINES:]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.read()
