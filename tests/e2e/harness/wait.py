"""Waiting with a deadline instead of sleeping: tests poll for the state they expect and fail with what they saw."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str | None = None,
) -> T:
    """Call `predicate` (sync or async) until it returns something truthy, and return that.

    The timeout bounds the test; it is not a claim about speed. On timeout the AssertionError names what was awaited
    and the last value seen, so a failure says more than "timed out".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value: Any = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            awaited = what or _describe(predicate)
            raise AssertionError(f"timed out after {timeout}s waiting for {awaited}; last: {value!r}")
        await asyncio.sleep(interval)


async def settle(seconds: float = 1.0) -> None:
    """Give something that must NOT happen a chance to happen (a push, a resend), before checking it did not.

    Used only before negative checks, after the positive state was reached with wait_until.
    """
    await asyncio.sleep(seconds)


def _describe(predicate: Callable[..., Any]) -> str:
    return getattr(predicate, "__qualname__", repr(predicate))
