"""Who may call the fake API server, and how fast: bearer tokens (401/403) and throttling (429 with Retry-After).

Off by default: every request is admitted. `FakeKube.auth.require()` turns the token check on; then a request passes
only with an accepted, unexpired token (401 Unauthorized otherwise), and a forbidden one gets 403 Forbidden.
`issue(lifetime)` makes a new token and, with `current_only` (the default), revokes every older one: the server
accepts only the current token, as with short-lived cloud credentials. The fake serves `GET /fakekube/token` to the
test credential plugin (credential_plugin.py), unauthenticated, to issue one.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

from .status import ApiError


class Authenticator:
    def __init__(self) -> None:
        self.required = False
        self.current_only = True
        self._tokens: dict[str, float | None] = {}  # token -> expiry (time.time()), None: never
        self._forbidden: set[str] = set()
        self.issued = 0
        self.refused = 0  # requests answered 401 or 403

    def require(self, *tokens: str) -> None:
        """Check tokens from now on, accepting these (without expiry) besides the ones issued later."""
        self.required = True
        for token in tokens:
            self._tokens[token] = None

    def issue(self, lifetime: float | None = None) -> tuple[str, float | None]:
        self.issued += 1
        token = f"fake-{self.issued}-{secrets.token_hex(4)}"
        if self.current_only:
            self._tokens.clear()
        expires = None if lifetime is None else time.time() + lifetime
        self._tokens[token] = expires
        return token, expires

    def revoke_all(self) -> None:
        self._tokens.clear()

    def forbid(self, token: str) -> None:
        """Authenticated, but allowed nothing: 403."""
        self._forbidden.add(token)

    def allow(self, token: str) -> None:
        self._forbidden.discard(token)

    def accepts_any(self) -> bool:
        """Whether some token is accepted now (not all expired or revoked)."""
        return any(not _expired(expires) for expires in self._tokens.values())

    def check(self, authorization: str | None) -> None:
        if not self.required:
            return
        token = authorization[7:] if authorization and authorization.startswith("Bearer ") else None
        if token is None or token not in self._tokens or _expired(self._tokens[token]):
            self.refused += 1
            raise ApiError(401, "Unauthorized")
        if token in self._forbidden:
            self.refused += 1
            raise ApiError(403, "forbidden: User \"fake\" cannot do this", "Forbidden")


def _expired(expires: float | None) -> bool:
    return expires is not None and time.time() >= expires


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Throttle:
    """The next `count` requests get 429 TooManyRequests with `Retry-After: retry_after`."""

    def __init__(self) -> None:
        self.count = 0
        self.retry_after = 1

    def check(self) -> None:
        if self.count > 0:
            self.count -= 1
            raise ApiError(429, "Too many requests, please try again later.", retry_after=self.retry_after)
