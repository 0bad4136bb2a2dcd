"""Median wall time of a call after warm-up (the one timing rule every table uses)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

# --quick caps every warm-up to this many calls (None: no cap), so the smoke run stays short.
WARMUP_CAP: list[int | None] = [None]


def median_seconds(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Median of `repeat` timed calls of fn() after `warmup` untimed ones."""
    cap = WARMUP_CAP[0]
    for _ in range(max(0, warmup if cap is None else min(cap, warmup))):
        fn()
    samples = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def ratio(slow: float | None, fast: float | None) -> float | None:
    """slow / fast (how many times faster `fast` is), None when either is missing."""
    if slow is None or fast is None or fast <= 0:
        return None
    return slow / fast
