"""Exponential backoff with jitter, so that many watchers retrying one API server do not retry in step."""

from __future__ import annotations

import random


class Backoff:
    """The n-th delay since the last `reset()` lies in [d/2, d], where d = min(maximum, initial * 2**n)."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._attempts = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2.0**self._attempts)
        self._attempts += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._attempts = 0
