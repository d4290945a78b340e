"""Bounded, escaped text for messages and logs.

Anything a client or an input file supplies (node ids, resource names, NACK messages, bad field values) reaches a log
line or an error message only through these functions: they never build more than `limit` characters, whatever the
value's size or nesting (a YAML alias bomb has a repr of hundreds of megabytes), and they escape control characters
and newlines, so nobody can forge log lines.
"""

from __future__ import annotations

import reprlib
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit, urlunsplit

DEFAULT_LIMIT = 200

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 8
_repr.maxstring = _repr.maxother = _repr.maxlong = DEFAULT_LIMIT


def quote(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """A value as an error message shows it (like repr), bounded in size and depth, at most `limit` characters."""
    return clip(_repr.repr(value), limit)


def clip(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """Text from outside, made safe for one log line: control characters escaped, at most `limit` characters."""
    if len(text) > 4 * limit:
        text = text[: 4 * limit]  # escaping at most quadruples a character: never escape more than is shown
        cut = True
    else:
        cut = False
    escaped = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    if len(escaped) > limit or cut:
        return escaped[: max(limit - 3, 0)] + "..."
    return escaped


def redact_url(url: str) -> str:
    """A URL fit to show: credentials in it (`user:pass@`, query values such as `?token=...`) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"  # not a URL we can take apart: show none of it
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{key}=***" if value else key for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return clip(urlunsplit((parts.scheme, netloc, parts.path, query, "")), 500)


def rfc3339(timestamp: float | None) -> str | None:
    """A Unix time as the admin endpoints show times: RFC 3339 in UTC, to the millisecond."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
