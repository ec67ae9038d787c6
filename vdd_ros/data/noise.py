"""Temporally correlated sampling noise: one AR(1) standard-normal stream for every policy.

A stochastic policy that re-draws its noise at every control step may switch behaviour
mode every step; correlating the noise over steps keeps a chosen mode for a while, while
each step's noise is still exactly N(0, I) (so every action is still an exact sample of the
policy). The exported MoE (``runtime.onnx_policy.NoiseSource``) and the teacher wrapper
(``teacher.policy.TeacherPolicy``) both draw from ``CorrelatedNormal``.

The correlation rho is valid in [0, 1): 0 is a fresh draw every step (the paper's rule);
1 would freeze the noise for a whole episode, which is not a sampling rule but a fixed
policy, so it is refused.
"""

from __future__ import annotations

import numpy as np

# The shipped setting (config/controller.yaml): a correlation time of ~50 observations.
DEFAULT_NOISE_CORRELATION = 0.98


def check_correlation(rho: float) -> float:
    """``rho`` itself if it is a valid noise correlation, else ValueError."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"noise_correlation must be in [0, 1), got {rho}")
    return rho


class CorrelatedNormal:
    """Standard-normal draws u_t = rho u_(t-1) + sqrt(1 - rho^2) n_t, one stream per leading row.

    The first draw, a draw of a different shape and the rows ``reset`` re-draws start fresh.
    """

    def __init__(self, rng: np.random.Generator, correlation: float) -> None:
        self.correlation = check_correlation(correlation)
        self._rng = rng
        self._latent: np.ndarray | None = None

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start fresh (uncorrelated) noise for all rows, or those where ``mask`` is true."""
        if mask is None or self._latent is None:
            self._latent = None
        else:
            self._latent[mask] = self._rng.standard_normal(self._latent[mask].shape)

    def draw(self, shape: tuple[int, ...]) -> np.ndarray:
        """The next float64 draw of ``shape``; row i continues the stream of the previous draw's row i."""
        fresh = self._rng.standard_normal(shape)
        rho = self.correlation
        if rho > 0 and self._latent is not None and self._latent.shape == shape:
            fresh = rho * self._latent + np.sqrt(1.0 - rho * rho) * fresh
        self._latent = fresh
        return fresh
