"""What the Kubernetes source tests share: a pod as the API server holds it, and waiting for a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


def pod(name: str, ip: str, cluster: str = "backend") -> dict:
    """A running, Ready pod of the Envoy cluster `cluster`."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": {"cluster-name.envoy.uw.io": cluster}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until `check()` holds; fail after a bound (10 s) that only a broken implementation reaches."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never happened: {what}")
