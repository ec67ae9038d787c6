"""Observation window (history of T observations) for N parallel streams.

At an episode start the window is padded with the first observation, exactly as the
training windows are built, so train and deploy see the same inputs.
"""

from __future__ import annotations

import numpy as np


class ObservationWindow:
    """Rolling (N, T, obs_dim) buffer; ``push`` returns the current window (a view)."""

    def __init__(self, n: int, horizon: int, obs_dim: int) -> None:
        self._buf = np.zeros((n, horizon, obs_dim), dtype=np.float32)
        self._fresh = np.ones(n, dtype=bool)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget history (all streams, or those where ``mask`` is true)."""
        if mask is None:
            self._fresh[:] = True
        else:
            self._fresh[mask] = True

    def current(self) -> np.ndarray:
        """The window as the last ``push`` returned it."""
        return self._buf

    def push(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(self._buf.shape[0], self._buf.shape[2])
        self._buf[:, :-1] = self._buf[:, 1:]
        self._buf[:, -1] = obs
        if self._fresh.any():
            self._buf[self._fresh] = obs[self._fresh][:, None, :]
            self._fresh[:] = False
        return self._buf
