"""Go-style durations (`500ms`, `5s`, `1m30s`, `1.5s`), as Kubernetes users write them in specs.

The grammar is Go's `time.ParseDuration`: an optional sign, then one or more decimal numbers each followed by a unit
(`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`); a bare `0` is zero. The result is exact: integer nanoseconds, no floats.
`format_duration` writes one back (so a parsed spec serialises to what parses to it again).
"""

from __future__ import annotations

import re
from fractions import Fraction

from .text import quote

NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
MAX_LENGTH = 64  # longer text is no duration anyone writes by hand (and bounds the work on hostile input)
UNITS = "ns, us, ms, s, m, h"

_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_duration(text: object) -> int:
    """The duration `text` in nanoseconds (negative if it says so).

    Raises ValueError saying what is wrong; the message does not repeat the whole text (callers show it).
    """
    if not isinstance(text, str):
        raise ValueError("must be a duration string like '5s' or '500ms'")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"is too long for a duration (over {MAX_LENGTH} characters)")
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if body == "0":
        return 0
    if not body:
        raise ValueError("is not a duration (write it like '5s' or '500ms')")
    total = Fraction(0)
    position = 0
    while position < len(body):
        match = _PART.match(body, position)
        assert match is not None  # the pattern matches the empty string
        number, unit = match.groups()
        if number in ("", "."):
            raise ValueError("is not a duration (write it like '5s' or '500ms')")
        if unit not in NANOS:
            problem = "a number without a unit" if not unit else f"unknown unit {quote(unit, 20)}"
            raise ValueError(f"is not a duration: {problem} (units: {UNITS})")
        total += Fraction(number.removesuffix(".") or "0") * NANOS[unit]
        position = match.end()
    return sign * int(total)  # like Go, a fraction of a nanosecond is dropped


def format_duration(nanos: int) -> str:
    """Nanoseconds as Go-style text that parses back to the same value: `1h30m`, `1m30s`, `1s500ms`, `0s`."""
    if nanos < 0:
        return "-" + format_duration(-nanos)
    parts = []
    for unit in ("h", "m", "s", "ms", "us", "ns"):
        count, nanos = divmod(nanos, NANOS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
