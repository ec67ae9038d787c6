"""Fixed-size latency record for a real-time loop: O(1) insert, percentiles on demand."""

from __future__ import annotations

import numpy as np


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
