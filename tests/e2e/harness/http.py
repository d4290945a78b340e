"""Plain HTTP GETs against the admin APIs (Envoy's and the control plane's)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=5)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as response:
        return response.status, await response.text()


async def get_json(url: str) -> Any:
    status, text = await get(url)
    if status != 200:
        raise AssertionError(f"GET {url}: HTTP {status}: {text[:500]}")
    return json.loads(text)


async def reachable(url: str) -> bool:
    try:
        status, _ = await get(url)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False
    return status == 200
