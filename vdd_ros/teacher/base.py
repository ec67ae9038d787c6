"""The interface every diffusion teacher offers: sampling, and its score for distillation.

All tensors live in the *normalised* spaces (see ``vdd_ros.data.normalizer``):
``obs`` has shape (B, T, obs_dim) -- the observation window -- and actions have shape
(B, H, act_dim) -- the action chunk.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from vdd_ros.teacher.network import DenoiserMLP, NetworkConfig


class DiffusionTeacher(nn.Module, abc.ABC):
    """A conditional generative policy pi(a|s) whose score is available at noise levels."""

    obs_dim: int
    act_dim: int
    obs_window: int  # T
    act_chunk: int  # H

    @abc.abstractmethod
    def sample(
        self, obs: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw actions (B, H, act_dim) for observation windows (B, T, obs_dim)."""

    @abc.abstractmethod
    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """grad_a log pi_sigma(a|s) at the given noise level, one level per row, shape (B,).

        The clean ``actions`` are fed as the noisy input (no noise is added), as VDD does.
        ``noise_level`` means sigma for EDM-style teachers and the integer step index t
        for DDPM teachers (see ``sample_noise_levels``).
        """

    @abc.abstractmethod
    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw n noise levels for distillation, uniformly in [low, high].

        EDM: sigma ~ U[low, high] (default 0.2-0.5). DDPM: integer t uniform in
        {low..high} (default 1-4 of 8 steps). None means the teacher's default.
        """

    @abc.abstractmethod
    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Denoising training loss on a batch (scalar)."""


class NetworkTeacher(DiffusionTeacher):
    """A teacher whose denoiser is the residual MLP of ``vdd_ros.teacher.network``."""

    def __init__(
        self, obs_dim: int, act_dim: int, obs_window: int, act_chunk: int, network: NetworkConfig | None
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.obs_window, self.act_chunk = obs_dim, act_dim, obs_window, act_chunk
        self.network_config = network or NetworkConfig()
        self.net = DenoiserMLP(obs_dim, act_dim, obs_window, act_chunk, self.network_config)
