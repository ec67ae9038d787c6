"""Latency records: a fixed-size window for a real-time loop, and timed repeated calls for benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def latency_samples_ms(fn: Callable[[], object], repeats: int, warmup: int = 20) -> np.ndarray:
    """Wall time of ``repeats`` calls after ``warmup`` untimed ones, in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    return samples * 1e3


def time_calls(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """p50 and p99 of ``latency_samples_ms``: the figures the benchmarks report."""
    p50, p99 = np.percentile(latency_samples_ms(fn, repeats), [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


class LatencyWindow:
    """Keeps the most recent ``capacity`` samples (seconds) in a preallocated ring."""

    def __init__(self, capacity: int = 4096) -> None:
        self._buf = np.zeros(capacity, dtype=np.float64)
        self._n = 0

    def add(self, seconds: float) -> None:
        self._buf[self._n % self._buf.size] = seconds
        self._n += 1

    def clear(self) -> None:
        self._n = 0

    def __len__(self) -> int:
        return min(self._n, self._buf.size)

    def summary_ms(self) -> tuple[float, float, float]:
        """(p50, p99, max) in milliseconds; NaN when empty."""
        n = len(self)
        if n == 0:
            return float("nan"), float("nan"), float("nan")
        data = self._buf[:n] * 1e3
        p50, p99 = np.percentile(data, [50, 99])
        return float(p50), float(p99), float(data.max())

    def drain_summary_ms(self) -> tuple[float, float, float]:
        """``summary_ms`` of the samples so far, then start a new report window."""
        summary = self.summary_ms()
        self.clear()
        return summary
