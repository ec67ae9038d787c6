"""Standardised differences of observation pairs, an input feature shared by teacher and student nets.

A push depends on where the pusher is relative to a block, but observations are absolute
coordinates z-scored over the whole workspace, where a centimetre of relative offset is a few
hundredths of a unit. Nets that take pairs (a, b) get o[a] - o[b] in the data's units,
standardised over the training windows. Inputs arrive normalised, so ``fit`` folds the
observation normaliser's mean/std into one gain per side and a bias per pair (buffers saved
with the weights); the pair indices themselves come from the config.
"""

from __future__ import annotations

import torch
from torch import nn


class PairDifferences(nn.Module):
    """(B, T, obs_dim) normalised windows -> (B, T, P) standardised o[a] - o[b] for the P pairs (a, b)."""

    def __init__(self, obs_dim: int, pairs: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        if not pairs or any(len(p) != 2 or p[0] == p[1] or min(p) < 0 or max(p) >= obs_dim for p in pairs):
            raise ValueError(f"obs_differences: need pairs [a, b] of distinct indices in [0, {obs_dim}), got {pairs}")
        index = torch.tensor(pairs, dtype=torch.long)
        self.register_buffer("a", index[:, 0].clone(), persistent=False)
        self.register_buffer("b", index[:, 1].clone(), persistent=False)
        self.register_buffer("gain", torch.ones(len(pairs), 2))
        self.register_buffer("bias", torch.zeros(len(pairs)))

    def fit(self, obs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fit on normalised training windows (N, T, obs_dim) and the normaliser's per-feature mean/std."""
        mean, std = mean.to(obs), std.to(obs)
        a, b = self.a, self.b
        diff = (obs[..., a] * std[a] + mean[a] - obs[..., b] * std[b] - mean[b]).reshape(-1, len(a))
        spread = diff.std(0).clamp_min(1e-6)
        self.gain.copy_(torch.stack([std[a], std[b]], -1) / spread[:, None])
        self.bias.copy_((mean[a] - mean[b] - diff.mean(0)) / spread)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[..., self.a] * self.gain[:, 0] - obs[..., self.b] * self.gain[:, 1] + self.bias
