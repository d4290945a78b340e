"""An OpenID Connect issuer for tests (what kubectl's `auth-provider: oidc` talks to): discovery, and a token
endpoint that trades the current refresh token for a new ID token (an unsigned JWT whose `exp` is `lifetime` seconds
ahead) and a new refresh token. Each ID token it issues becomes the only token the fake API server accepts."""

from __future__ import annotations

import base64
import json
import secrets
import time

from aiohttp import web

from .access import Authenticator


def jwt(claims: dict) -> str:
    def part(doc: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


class FakeIssuer:
    def __init__(self, auth: Authenticator, lifetime: float, client_id: str = "kubernetes") -> None:
        self.auth = auth
        self.lifetime = lifetime
        self.client_id = client_id
        self.refresh_token = secrets.token_hex(8)
        self.refreshes = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def id_token(self, lifetime: float | None = None) -> str:
        """A new ID token (accepted by the API server from now on), valid for `lifetime` (default: the issuer's)."""
        expires = time.time() + (self.lifetime if lifetime is None else lifetime)
        token = jwt({"iss": self.url, "sub": "fake-user", "aud": self.client_id, "exp": int(expires)})
        self.auth.accept(token, expires)
        return token

    async def __aenter__(self) -> FakeIssuer:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, _: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "token_endpoint": f"{self.url}/token"})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "refresh_token" or form.get("client_id") != self.client_id:
            return web.json_response({"error": "invalid_request"}, status=400)
        if form.get("refresh_token") != self.refresh_token:
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refreshes += 1
        self.refresh_token = secrets.token_hex(8)  # rotated, as most issuers do
        return web.json_response({"id_token": self.id_token(), "refresh_token": self.refresh_token,
                                  "token_type": "Bearer", "expires_in": self.lifetime})
