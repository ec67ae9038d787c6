"""The graph's noise inputs (Gumbel and eps) for each sampling mode, without onnxruntime or torch.

Both serving backends (onnxruntime and torch) and the vetting draw from here, so the same
seed feeds the same noise to either.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from vdd_ros.data.noise import CorrelatedNormal

SamplingMode = Literal["mean", "sample", "greedy"]
SAMPLING_MODES: tuple[str, ...] = ("mean", "sample", "greedy")


class NoiseSource:
    """Seeded noise for the graph's noise inputs; the mode decides which noise is live.

    mean: Gumbel noise draws the expert, eps = 0 (the paper's default);
    sample: both live (expert mean + Cholesky factor times eps);
    greedy: both zero (most likely expert, its mean).

    ``correlation`` rho (``vdd_ros.data.noise``) makes the noise of one stream an AR(1)
    process over calls: its standard-normal latent is mapped to Gumbel(0, 1) (through the
    normal CDF) and used as eps. Each call's noise keeps its exact marginal law (Gumbel-max
    still draws z with probability q(z|s) for that noise), but consecutive steps tend to keep
    their expert instead of re-drawing it every 35 ms. rho = 0 is the paper's rule.
    """

    def __init__(self, mode: str, seed: int, num_experts: int, noise_dim: int, correlation: float = 0.0) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"sampling_mode must be one of {SAMPLING_MODES}, got {mode!r}")
        from scipy.special import ndtr  # deferred: a slow import that the nodes' --help must not pay

        self._ndtr = ndtr
        self.mode = mode
        self._stream = CorrelatedNormal(np.random.default_rng(seed), correlation)
        self._z = num_experts
        self._d = noise_dim

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start fresh (uncorrelated) noise for all streams, or those where ``mask`` is true."""
        self._stream.reset(mask)

    def draw(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        gumbel = np.zeros((batch, self._z), dtype=np.float32)
        eps = np.zeros((batch, self._d), dtype=np.float32)
        if self.mode == "greedy":
            return gumbel, eps
        normal = self._stream.draw((batch, self._z + self._d))
        u = np.clip(self._ndtr(normal[:, : self._z]), 1e-12, 1.0 - 1e-12)
        gumbel[:] = -np.log(-np.log(u))
        if self.mode == "sample":
            eps[:] = normal[:, self._z :]
        return gumbel, eps
