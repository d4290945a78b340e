"""A fake Kubernetes API server for tests (see server.py)."""

from .server import FakeKube

__all__ = ["FakeKube"]
