"""Last line of defence between a policy output and the robot: finite, clamped, rate-limited."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class ActionFilter:
    """Clamp to [low, high] and limit the per-tick change to ``max_step`` (0 = no limit).

    ``apply`` returns None for a non-finite action so the caller can fall back to its
    safe behaviour instead of sending garbage; ``clamp`` bounds a safe (hold/zero) command,
    which is never rate-limited: stopping must not be slowed down.
    """

    def __init__(self, dim: int, low: Sequence[float], high: Sequence[float], max_step: float) -> None:
        for name, bound in (("action_min", low), ("action_max", high)):
            if len(bound) and len(bound) != dim:
                raise ValueError(f"{name} has {len(bound)} entries, the policy's action has {dim}")
            if not all(math.isfinite(v) for v in bound):
                raise ValueError(f"{name} must be finite, got {list(bound)}")
        self.low = np.asarray(low, dtype=np.float32) if len(low) else None
        self.high = np.asarray(high, dtype=np.float32) if len(high) else None
        if self.low is not None and self.high is not None and np.any(self.low >= self.high):
            raise ValueError("action_min must be below action_max in every dimension")
        if not (math.isfinite(max_step) and max_step >= 0):
            raise ValueError(f"max_action_step must be finite and >= 0, got {max_step}")
        self.max_step = float(max_step)
        self._last: np.ndarray | None = None

    def contains_zero(self) -> bool:
        """Whether the zero command lies inside the clamp box."""
        return bool(
            (self.low is None or np.all(self.low <= 0.0)) and (self.high is None or np.all(self.high >= 0.0))
        )

    def reset(self) -> None:
        self._last = None

    def clamp(self, action: np.ndarray) -> np.ndarray:
        """The action inside the box; it becomes the reference of the next rate limit."""
        out = action.astype(np.float32, copy=True)
        if self.low is not None or self.high is not None:
            out = np.clip(out, self.low, self.high).astype(np.float32)
        self._last = out
        return out

    def apply(self, action: np.ndarray) -> np.ndarray | None:
        if not np.all(np.isfinite(action)):
            return None
        last = self._last
        out = self.clamp(action)
        if self.max_step > 0 and last is not None:
            out = np.clip(out, last - self.max_step, last + self.max_step)
        self._last = out
        return out
