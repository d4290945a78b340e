"""Backoff delays: exponential, capped, jittered, and back to the start after a reset."""

from __future__ import annotations

import random

from envoy_control_plane.sources.kubernetes.backoff import Backoff


def test_delays_double_up_to_the_maximum_within_the_jitter_band() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))


def test_jitter_spreads_retries() -> None:
    first = {round(Backoff(1.0, 8.0, random.Random(seed)).next(), 6) for seed in range(20)}
    assert len(first) > 10


def test_reset_starts_over() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, rng=random.Random(2))
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 1.0
