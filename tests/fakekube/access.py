"""Who may call the fake API server, and how fast: bearer tokens (401/403) and throttling (429 with Retry-After).

Off by default: every request is admitted. `FakeKube.auth.require()` turns the token check on; then a request passes
only with an accepted, unexpired token (401 Unauthorized otherwise), and a forbidden one gets 403 Forbidden.
`issue(lifetime)` makes a new token and, with `current_only` (the default), revokes every older one: the server
accepts only the current token, as with short-lived cloud credentials. Over HTTPS a client certificate of the
server's CA authenticates too: any, until `accept_certificate()` names the only one (by CN) accepted from then on.
The fake serves `GET /fakekube/token` and `GET /fakekube/client-certificate` to the test credential plugin
(credential_plugin.py), unauthenticated, to issue them.
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
        self._certificates: dict[str, float | None] | None = None  # CN -> expiry; None: any of the CA's
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
        expires = None if lifetime is None else time.time() + lifetime
        self.accept(token, expires)
        return token, expires

    def accept(self, token: str, expires: float | None) -> None:
        """Accept `token` until `expires` (time.time(); None: for good), and, with `current_only`, no other."""
        if self.current_only:
            self._tokens.clear()
        self._tokens[token] = expires

    def revoke_all(self) -> None:
        self._tokens.clear()
        if self._certificates is not None:
            self._certificates.clear()

    def accept_certificate(self, common_name: str, lifetime: float | None = None) -> None:
        """From now on accept only this client certificate (of the CA), for `lifetime` seconds."""
        self._certificates = {common_name: None if lifetime is None else time.time() + lifetime}

    def forbid(self, token: str) -> None:
        """Authenticated, but allowed nothing: 403."""
        self._forbidden.add(token)

    def allow(self, token: str) -> None:
        self._forbidden.discard(token)

    def accepts_any_certificate(self) -> bool:
        """Whether some client certificate is accepted now."""
        certificates = self._certificates
        return certificates is None or any(not _expired(expires) for expires in certificates.values())

    def accepts_any(self) -> bool:
        """Whether some token is accepted now (not all expired or revoked)."""
        return any(not _expired(expires) for expires in self._tokens.values())

    def check(self, authorization: str | None, certificate: str | None = None) -> None:
        """Admit a request with this Authorization header, and the CN of its (verified) client certificate."""
        if not self.required:
            return
        if certificate is not None and (
            self._certificates is None
            or (certificate in self._certificates and not _expired(self._certificates[certificate]))
        ):
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
