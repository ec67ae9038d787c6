"""Last line of defence between a policy output and the robot: finite, clamped, rate-limited."""

from __future__ import annotations

import numpy as np


class ActionFilter:
    """Clamp to [low, high] and limit the per-tick change to ``max_step`` (0 = no limit).

    ``apply`` returns None for a non-finite action so the caller can fall back to its
    safe behaviour instead of sending garbage.
    """

    def __init__(self, dim: int, low: list[float], high: list[float], max_step: float) -> None:
        for name, bound in (("action_min", low), ("action_max", high)):
            if bound and len(bound) != dim:
                raise ValueError(f"{name} has {len(bound)} entries, the policy's action has {dim}")
        self.low = np.asarray(low, dtype=np.float32) if low else None
        self.high = np.asarray(high, dtype=np.float32) if high else None
        if self.low is not None and self.high is not None and np.any(self.low > self.high):
            raise ValueError("action_min must not exceed action_max")
        self.max_step = float(max_step)
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        self._last = None

    def apply(self, action: np.ndarray) -> np.ndarray | None:
        if not np.all(np.isfinite(action)):
            return None
        out = action.astype(np.float32, copy=True)
        if self.low is not None or self.high is not None:
            out = np.clip(out, self.low, self.high)
        if self.max_step > 0 and self._last is not None:
            out = np.clip(out, self._last - self.max_step, self._last + self.max_step)
        self._last = out
        return out
