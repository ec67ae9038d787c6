"""EDM/BESO teacher: Karras-preconditioned denoiser D(a; sigma) (VDD's avoiding-BESO teacher).

Sampling uses the Karras sigma schedule from sigma_max to sigma_min and then 0, with
Euler, Heun or Euler-ancestral steps; any step count >= 1 works.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Literal

import torch

from vdd_ros.teacher.base import NetworkTeacher
from vdd_ros.teacher.network import NetworkConfig

Sampler = Literal["euler", "heun", "euler_ancestral"]


@dataclasses.dataclass(frozen=True)
class EDMConfig:
    """Noise range, training density, sampler defaults and distillation noise levels.

    sigma 0.1-1 follows BESO's avoiding teacher: actions are z-scored, so sigma_max = 1
    already hides most structure, and the distillation levels 0.2-0.5 lie well inside the
    trained range. Training draws log-uniform sigma over the same range, so every level
    the sampler visits is trained equally.
    """

    sigma_data: float = 0.5
    sigma_min: float = 0.1
    sigma_max: float = 1.0
    rho: float = 7.0
    sampler: Sampler = "euler_ancestral"
    sample_steps: int = 8
    noise_correlation: float = 0.98  # TeacherPolicy default: AR(1) sampler noise over control steps
    noise_low: float = 0.2
    noise_high: float = 0.5


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """n sigmas from sigma_max to sigma_min (Karras et al. 2022, eq. 5) followed by 0."""
    if n < 1:
        raise ValueError(f"EDM sampling steps must be >= 1, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


class EDMTeacher(NetworkTeacher):
    """pi(a|s) as a preconditioned denoiser; the noise level is sigma."""

    family = "edm"

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        obs_window: int = 5,
        act_chunk: int = 1,
        network: NetworkConfig | None = None,
        config: EDMConfig | None = None,
    ) -> None:
        super().__init__(obs_dim, act_dim, obs_window, act_chunk, network)
        self.config = config or EDMConfig()
        if not 0 < self.config.sigma_min < self.config.sigma_max:
            raise ValueError("EDM needs 0 < sigma_min < sigma_max")

    def denoise(self, noisy: torch.Tensor, obs: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Preconditioned D(a; sigma) = c_skip a + c_out F(c_in a, c_noise)."""
        sd = self.config.sigma_data
        s = sigma.to(noisy.dtype).view(-1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        return c_skip * noisy + c_out * self.net(c_in * noisy, obs, sigma.log() / 4)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """EDM loss in F-space, equal to the lambda(sigma)-weighted denoising loss."""
        b = actions.shape[0]
        lo, hi = math.log(self.config.sigma_min), math.log(self.config.sigma_max)
        sigma = torch.exp(lo + (hi - lo) * torch.rand(b, device=actions.device))
        sd = self.config.sigma_data
        s = sigma.view(-1, 1, 1)
        noisy = actions + s * torch.randn_like(actions)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        target = (actions - c_skip * noisy) / c_out
        return (self.net(c_in * noisy, obs, sigma.log() / 4) - target).pow(2).mean()

    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        sigma = noise_level.to(actions.device, actions.dtype)
        return (self.denoise(actions, obs, sigma) - actions) / sigma.view(-1, 1, 1) ** 2

    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        lo = self.config.noise_low if low is None else low
        hi = self.config.noise_high if high is None else high
        device = next(self.parameters()).device
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)

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
        if sampler not in ("euler", "heun", "euler_ancestral"):
            raise ValueError(f"unknown EDM sampler {sampler!r}")
        c = self.config
        sigmas = karras_sigmas(steps or c.sample_steps, c.sigma_min, c.sigma_max, c.rho).tolist()
        b = obs.shape[0]
        shape = (b, self.act_chunk, self.act_dim)

        if noise is None:
            noise = torch.randn((len(sigmas), *shape), generator=generator, device=obs.device, dtype=obs.dtype)

        def slope(x: torch.Tensor, s: float) -> torch.Tensor:
            return (x - self.denoise(x, obs, torch.full((b,), s, device=obs.device))) / s

        x = noise[0] * sigmas[0]
        for i, (s, s_next) in enumerate(itertools.pairwise(sigmas)):
            d = slope(x, s)
            if sampler == "euler_ancestral":
                s_up = min(s_next, math.sqrt(max(s_next**2 * (s**2 - s_next**2) / s**2, 0.0)))
                s_down = math.sqrt(s_next**2 - s_up**2)
                x = x + d * (s_down - s)
                if s_next > 0:
                    x = x + s_up * noise[i + 1]
            elif sampler == "heun" and s_next > 0:
                x_euler = x + d * (s_next - s)
                x = x + 0.5 * (d + slope(x_euler, s_next)) * (s_next - s)
            else:
                x = x + d * (s_next - s)
        return x
