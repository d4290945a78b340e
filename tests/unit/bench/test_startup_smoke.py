"""`python -m bench.startup` at a tiny size: both modes run and print what docs/performance.md quotes (no timing is
asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ["spawn to /readyz: best", "RSS at ready median"]),
        (["--breakdown"], ["interpreter and imports: best", "read and parse manifests", "World first load",
                           "every node's snapshot", "start, all of it"]),
    ],
)
def test_startup_smoke(flags: list[str], expected: list[str]) -> None:
    command = [sys.executable, "-m", "bench.startup", "-N", "5", "-P", "20", "--runs", "1", *flags]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    for text in expected:
        assert text in done.stdout, done.stdout
