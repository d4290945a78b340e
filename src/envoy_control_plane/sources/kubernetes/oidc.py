"""OpenID Connect tokens for the kubeconfig's `auth-provider: oidc`, as client-go's oidc plugin uses them: the ID token
is sent while its `exp` lies ahead; then (or after a 401) the refresh token buys a new one at the issuer's token
endpoint (found through `/.well-known/openid-configuration`). New tokens are kept in memory only: the kubeconfig may
be a read-only mount."""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from dataclasses import dataclass

import aiohttp

from ...text import clip
from .kubeconfig import OidcConfig

TIMEOUT = aiohttp.ClientTimeout(total=30)


class OidcError(Exception):
    pass


@dataclass(frozen=True)
class Tokens:
    id_token: str
    refresh_token: str | None
    expires: float | None  # the ID token's exp


def expiry(id_token: str) -> float | None:
    """The `exp` claim of a JWT (not verified: the API server does that), None when it has none."""
    parts = id_token.split(".")
    if len(parts) != 3:
        raise OidcError("the id-token is not a JWT (three dot-separated parts)")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        raise OidcError("the id-token's claims are not base64url JSON") from None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


async def refresh(config: OidcConfig, refresh_token: str) -> Tokens:
    """New tokens from the issuer, for the refresh token."""
    assert config.issuer is not None and config.client_id is not None  # checked when the kubeconfig was read
    context = ssl.create_default_context(cadata=config.ca.decode()) if config.ca else ssl.create_default_context()
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": config.client_id}
    if config.client_secret:
        form["client_secret"] = config.client_secret
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(ssl=context)) as session:
            discovery = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            async with session.get(discovery) as response:
                endpoint = (await _json(response, "discovery")).get("token_endpoint")
            if not isinstance(endpoint, str):
                raise OidcError(f"{discovery} names no token_endpoint")
            async with session.post(endpoint, data=form) as response:
                answer = await _json(response, "token endpoint")
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise OidcError(f"issuer {config.issuer}: {type(e).__name__}: {clip(str(e))}") from None
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise OidcError(f"issuer {config.issuer}: the token endpoint returned no id_token")
    new_refresh = answer.get("refresh_token")
    return Tokens(id_token, new_refresh if isinstance(new_refresh, str) and new_refresh else refresh_token,
                  expiry(id_token))


async def _json(response: aiohttp.ClientResponse, what: str) -> dict:
    text = await response.text()
    if response.status != 200:
        raise OidcError(f"{what} answered {response.status}: {clip(text)}")
    try:
        body = json.loads(text)
    except ValueError:
        raise OidcError(f"{what} answered something that is not JSON") from None
    if not isinstance(body, dict):
        raise OidcError(f"{what} answered something that is not a JSON object")
    return body
