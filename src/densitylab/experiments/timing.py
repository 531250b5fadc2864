"""Timings the report can compare: the median of repeated measurements with its standard
error, the first (warm-up: compilation, allocation, caches) dropped, so one measurement slowed
by another process moves neither.

Example:
    >>> median, se = median_seconds([9.0, 1.0, 1.1, 0.9, 1.0, 1.2])  # 9.0: the warm-up
    >>> round(median, 2)
    1.0
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np


def median_seconds(durations: Sequence[float], warm_up: int = 1) -> tuple[float, float]:
    """Median of ``durations`` after the first ``warm_up``, and its standard error
    ``1.2533 * 1.4826 MAD / sqrt(n)`` (the normal-theory factor with a robust spread)."""
    kept = np.asarray(durations, dtype=float)[warm_up:]
    if kept.size < 2:
        raise ValueError(f"need at least two timings after {warm_up} warm-up, got {kept.size}")
    median = float(np.median(kept))
    mad = float(np.median(np.abs(kept - median)))
    return median, 1.2533 * 1.4826 * mad / math.sqrt(kept.size)


def per_epoch(cumulative: Sequence[float]) -> tuple[float, float]:
    """Median seconds per epoch and its standard error from a history's cumulative seconds,
    the first epoch dropped."""
    return median_seconds(np.diff(np.concatenate([[0.0], cumulative])))


def timed(fn: Callable[[], object], repeats: int = 7) -> tuple[float, float]:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call, and its standard
    error."""
    durations = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - start)
    return median_seconds(durations)
