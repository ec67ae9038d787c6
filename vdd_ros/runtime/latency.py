"""Latency records: a fixed-size window for a real-time loop, and timed repeated calls for benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

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


def interleaved_samples_ms(
    calls: Mapping[str, tuple[Callable[[], object], int]], rounds: int = 10, warmup: int = 20
) -> dict[str, np.ndarray]:
    """Wall times [ms] of each ``name: (fn, repeats)``, taken in ``rounds`` alternating blocks.

    A shared VM's slow spells last seconds; timed one after the other, two policies meet
    different ones, and their ratio swings with them (docs/results.md).
    Interleaved, every policy meets the same machine, so ratios of these figures are like for like.
    """
    for fn, _ in calls.values():
        for _ in range(warmup):
            fn()
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in calls}
    for r in range(rounds):
        for name, (fn, repeats) in calls.items():
            count = repeats * (r + 1) // rounds - repeats * r // rounds
            blocks[name].append(latency_samples_ms(fn, count, warmup=0))
    return {name: np.concatenate(parts) for name, parts in blocks.items()}


def percentiles(samples_ms: np.ndarray) -> dict[str, float]:
    """The figures the benchmarks report: p50 and p99 [ms]."""
    p50, p99 = np.percentile(samples_ms, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


def time_interleaved(calls: Mapping[str, tuple[Callable[[], object], int]]) -> dict[str, dict[str, float]]:
    """``percentiles`` of each call's ``interleaved_samples_ms``."""
    return {name: percentiles(samples) for name, samples in interleaved_samples_ms(calls).items()}


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
        figures = percentiles(data)
        return figures["p50_ms"], figures["p99_ms"], float(data.max())

    def drain_summary_ms(self) -> tuple[float, float, float]:
        """``summary_ms`` of the samples so far, then start a new report window."""
        summary = self.summary_ms()
        self.clear()
        return summary
