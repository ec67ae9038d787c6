"""The denoisers shared by the DDPM and EDM teachers, and ``build_denoiser``, which picks one.

Avoiding has tiny inputs (a 5x4 observation window, a 1x2 action chunk), so a flat
residual MLP (the default) suffices there and is much cheaper on a CPU than a temporal
U-Net or a transformer over the chunk. Longer chunks can use the temporal U-Net of
Diffusion Policy (``vdd_ros.teacher.unet``, ``network.kind: unet1d``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vdd_ros.teacher.config import NetworkConfig
from vdd_ros.util.pair_differences import PairDifferences
from vdd_ros.util.window_deltas import step_scale


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of a scalar noise condition (t/N or log(sigma)/4).

    Frequencies are geometric in [1, 100] so both coarse and fine changes of the level
    are visible to the network; the condition is O(1) for both teacher families.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(100.0), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        angles = cond.float()[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ResidualBlock(nn.Module):
    """Pre-norm two-layer MLP with a skip connection (Mish, as in VDD and BESO)."""

    def __init__(self, width: int, layer_norm: bool) -> None:
        super().__init__()
        norm = nn.LayerNorm if layer_norm else nn.Identity
        self.body = nn.Sequential(
            norm(width), nn.Mish(), nn.Linear(width, width), norm(width), nn.Mish(), nn.Linear(width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class WindowFeatures(nn.Module):
    """The flattened observation window, plus (each optional) its scaled successive differences
    (``deltas``) and the standardised differences of observation pairs (``pairs``) at every step."""

    def __init__(self, obs_dim: int, obs_window: int, deltas: bool, pairs: tuple[tuple[int, int], ...] = ()) -> None:
        super().__init__()
        self.deltas = deltas and obs_window > 1
        self.size = (2 * obs_window - 1 if self.deltas else obs_window) * obs_dim + obs_window * len(pairs)
        # modules and buffers exist only when used: checkpoints of nets without them keep their state dict
        if self.deltas:
            self.register_buffer("delta_scale", torch.ones(obs_dim))
        self.pairs = PairDifferences(obs_dim, pairs) if pairs else None

    def fit(self, obs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fit the input scales on normalised training windows (N, T, obs_dim) and the normaliser's mean/std."""
        if self.deltas:
            self.delta_scale.copy_(step_scale(obs))
        if self.pairs is not None:
            self.pairs.fit(obs, mean, std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b = obs.shape[0]
        parts = [obs.reshape(b, -1)]
        if self.deltas:
            parts.append(((obs[:, 1:] - obs[:, :-1]) * self.delta_scale).reshape(b, -1))
        if self.pairs is not None:
            parts.append(self.pairs(obs).reshape(b, -1))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]


class DenoiserMLP(nn.Module):
    """f(noisy actions (B,H,A), obs window (B,T,O), condition (B,)) -> (B,H,A)."""

    def __init__(self, obs_dim: int, act_dim: int, obs_window: int, act_chunk: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.act_shape = (act_chunk, act_dim)
        self.embed = NoiseEmbedding(cfg.emb_dim)
        self.cond_mlp = nn.Sequential(nn.Linear(cfg.emb_dim, cfg.width), nn.Mish(), nn.Linear(cfg.width, cfg.width))
        self.window = WindowFeatures(obs_dim, obs_window, cfg.obs_deltas, cfg.obs_differences)
        self.inp = nn.Linear(self.window.size + act_chunk * act_dim, cfg.width)
        self.blocks = nn.ModuleList(ResidualBlock(cfg.width, cfg.layer_norm) for _ in range(cfg.blocks))
        self.out = nn.Sequential(nn.LayerNorm(cfg.width) if cfg.layer_norm else nn.Identity(), nn.Mish())
        self.head = nn.Linear(cfg.width, act_chunk * act_dim)

    def forward(self, noisy: torch.Tensor, obs: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = noisy.shape[0]
        x = self.inp(torch.cat([self.window(obs), noisy.reshape(b, -1)], dim=-1))
        c = self.cond_mlp(self.embed(cond))
        for block in self.blocks:
            x = block(x + c)
        return self.head(self.out(x)).reshape(b, *self.act_shape)


def build_denoiser(obs_dim: int, act_dim: int, obs_window: int, act_chunk: int, cfg: NetworkConfig) -> nn.Module:
    """The denoiser ``cfg.kind`` names, f(noisy (B,H,A), obs (B,T,O), condition (B,)) -> (B,H,A)."""
    if cfg.kind == "mlp":
        return DenoiserMLP(obs_dim, act_dim, obs_window, act_chunk, cfg)
    from vdd_ros.teacher.unet import TemporalUNet  # deferred: unet imports NoiseEmbedding from here

    return TemporalUNet(
        obs_dim,
        act_dim,
        obs_window,
        act_chunk,
        channels=cfg.unet_channels,
        kernel_size=cfg.unet_kernel,
        groups=cfg.unet_groups,
        emb_dim=cfg.emb_dim,
        cond_width=cfg.width,
        obs_deltas=cfg.obs_deltas,
        obs_differences=cfg.obs_differences,
    )
