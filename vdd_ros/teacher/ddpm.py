"""DDPM teacher: epsilon prediction on a short cosine schedule (VDD's avoiding-DDPM teacher).

Sampling walks a strided sub-sequence of the N training steps, so any step count k <= N
works. ``eta`` = 1 gives DDPM ancestral sampling (exact DDPM posterior when k = N),
``eta`` = 0 gives deterministic DDIM.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F

from vdd_ros.teacher.base import NetworkTeacher
from vdd_ros.teacher.network import NetworkConfig

Sampler = Literal["ddpm", "ddim"]


@dataclasses.dataclass(frozen=True)
class DDPMConfig:
    """Schedule, sampler defaults and distillation noise levels.

    ``clip_x0`` bounds the predicted clean action (normalised units) in each sampler
    step: at the last cosine step sqrt(alpha_bar) is 0.006, so an unclipped x0 estimate
    amplifies epsilon errors ~160x. 3 is just outside the z-scored avoiding actions
    (|z| <= 2.8); 0 disables clipping. ``sampler`` "ddpm" is ancestral (eta = 1), "ddim"
    deterministic (eta = 0); on the avoiding task ancestral sampling is the more reliable.
    """

    steps: int = 8
    sampler: Sampler = "ddpm"
    sample_steps: int = 8
    clip_x0: float = 3.0
    noise_correlation: float = 0.98  # TeacherPolicy default: AR(1) sampler noise over control steps
    noise_low: int = 1
    noise_high: int = 4


def cosine_alpha_bar(steps: int, s: float = 0.008) -> torch.Tensor:
    """Cumulative alpha of the Nichol & Dhariwal cosine schedule, betas capped at 0.999."""

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def strided_timesteps(total: int, k: int) -> list[int]:
    """k distinct indices from total-1 down to 0, evenly spread (always ends at 0)."""
    if not 1 <= k <= total:
        raise ValueError(f"DDPM sampling steps must be in 1..{total}, got {k}")
    return sorted({round(i * (total - 1) / max(k - 1, 1)) for i in range(k)} if k > 1 else {total - 1}, reverse=True)


class DDPMTeacher(NetworkTeacher):
    """pi(a|s) as an epsilon-predicting DDPM; the noise level is the 0-based step index t."""

    family = "ddpm"

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        obs_window: int = 5,
        act_chunk: int = 1,
        network: NetworkConfig | None = None,
        config: DDPMConfig | None = None,
    ) -> None:
        super().__init__(obs_dim, act_dim, obs_window, act_chunk, network)
        self.config = config or DDPMConfig()
        if not 0 <= self.config.noise_low <= self.config.noise_high < self.config.steps:
            raise ValueError("DDPM noise_low/noise_high must satisfy 0 <= low <= high < steps")
        self.register_buffer("alpha_bar", cosine_alpha_bar(self.config.steps).float(), persistent=False)

    def eps(self, noisy: torch.Tensor, obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise; the condition t/N keeps the embedding input in [0, 1)."""
        return self.net(noisy, obs, t.float() / self.config.steps)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        t = torch.randint(0, self.config.steps, (actions.shape[0],), device=actions.device)
        ab = self.alpha_bar[t].view(-1, 1, 1)
        noise = torch.randn_like(actions)
        noisy = ab.sqrt() * actions + (1 - ab).sqrt() * noise
        return F.mse_loss(self.eps(noisy, obs, t), noise)

    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        t = noise_level.long().to(actions.device)
        return -self.eps(actions, obs, t) / (1 - self.alpha_bar[t]).sqrt().view(-1, 1, 1)

    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        lo = int(self.config.noise_low if low is None else low)
        hi = int(self.config.noise_high if high is None else high)
        return torch.randint(lo, hi + 1, (n,), generator=generator, device=self.alpha_bar.device)

    @torch.no_grad()
    def sample(
        self,
        obs: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        sampler: Sampler | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``noise`` (steps + 1, B, H, A), if given, replaces the random draws: row 0 starts
        the chain, row i + 1 is step i's ancestral noise (lets callers correlate it over time)."""
        sampler = sampler or self.config.sampler
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"unknown DDPM sampler {sampler!r}")
        eta = 1.0 if sampler == "ddpm" else 0.0
        b = obs.shape[0]
        shape = (b, self.act_chunk, self.act_dim)
        ts = strided_timesteps(self.config.steps, steps or self.config.sample_steps)
        if noise is None:
            noise = torch.randn((len(ts) + 1, *shape), generator=generator, device=obs.device, dtype=obs.dtype)
        x = noise[0]
        for i, t in enumerate(ts):
            ab = self.alpha_bar[t]
            ab_prev = self.alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)
            eps = self.eps(x, obs, torch.full((b,), t, device=obs.device))
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            if self.config.clip_x0 > 0:
                x0 = x0.clamp(-self.config.clip_x0, self.config.clip_x0)
                eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            var = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - var).clamp_min(0).sqrt() * eps
            if i + 1 < len(ts) and eta > 0:
                x = x + var.sqrt() * noise[i + 1]
        return x
