"""EDM/BESO teacher: Karras-preconditioned denoiser D(a; sigma) (VDD's avoiding-BESO teacher).

Sampling uses the Karras sigma schedule from sigma_max to sigma_min and then 0, with
Euler, Heun or Euler-ancestral steps (``teacher.samplers``); any step count >= 1 works.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from vdd_ros.teacher import samplers
from vdd_ros.teacher.base import NetworkTeacher
from vdd_ros.util.config import knob

_SAMPLERS = {"euler": samplers.euler, "heun": samplers.heun, "euler_ancestral": samplers.euler_ancestral}


@dataclasses.dataclass(frozen=True)
class EDMConfig:
    """Noise range, training density, sampler and distillation noise levels of an EDM teacher.

    sigma 0.1-1 follows BESO's avoiding teacher: actions are z-scored, so sigma_max = 1
    already hides most structure, and the distillation levels 0.2-0.5 lie well inside the
    trained range. Training draws log-uniform sigma over the same range, so every level
    the sampler visits is trained equally.
    """

    sigma_data: float = knob(0.5, "sigma_data of the preconditioning (std of the normalised actions' scale)")
    sigma_min: float = knob(0.1, "smallest trained and sampled sigma")
    sigma_max: float = knob(1.0, "largest trained sigma, where sampling starts")
    rho: float = knob(7.0, "Karras schedule exponent")
    sampler: Literal["euler", "heun", "euler_ancestral"] = knob(
        "euler_ancestral", "euler | heun (deterministic) | euler_ancestral (stochastic)"
    )
    sample_steps: int = knob(8, "default sampling steps (>= 1)")
    noise_low: float = knob(0.2, "default lowest distillation sigma (0 < low <= high)")
    noise_high: float = knob(0.5, "default highest distillation sigma")

    def __post_init__(self) -> None:
        if self.sampler not in _SAMPLERS:
            raise ValueError(f"unknown EDM sampler {self.sampler!r}; known: {sorted(_SAMPLERS)}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("EDM needs 0 < sigma_min < sigma_max")
        if self.sigma_data <= 0 or self.rho <= 0 or self.sample_steps < 1:
            raise ValueError("EDM needs sigma_data > 0, rho > 0 and sample_steps >= 1")
        _sigma_range(self.noise_low, self.noise_high)


def _sigma_range(low: float, high: float) -> tuple[float, float]:
    if not 0 < low <= high:
        raise ValueError(f"EDM noise levels are sigmas with 0 < low <= high, got {low}..{high}")
    return low, high


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
    config_type = EDMConfig
    config: EDMConfig

    def denoise(self, noisy: torch.Tensor, obs: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Preconditioned D(a; sigma) = c_skip a + c_out F(c_in a, c_noise)."""
        c_skip, c_out, c_in, c_noise = samplers.edm_scalings(sigma.to(noisy.dtype), self.config.sigma_data)
        return c_skip * noisy + c_out * self.net(c_in * noisy, obs, c_noise)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """EDM loss in F-space, equal to the lambda(sigma)-weighted denoising loss."""
        b = actions.shape[0]
        lo, hi = math.log(self.config.sigma_min), math.log(self.config.sigma_max)
        sigma = torch.exp(lo + (hi - lo) * torch.rand(b, device=actions.device))
        c_skip, c_out, c_in, c_noise = samplers.edm_scalings(sigma, self.config.sigma_data)
        noisy = actions + sigma.view(-1, 1, 1) * torch.randn_like(actions)
        target = (actions - c_skip * noisy) / c_out
        return (self.net(c_in * noisy, obs, c_noise) - target).pow(2).mean()

    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        sigma = noise_level.to(actions.device, actions.dtype)
        return (self.denoise(actions, obs, sigma) - actions) / sigma.view(-1, 1, 1) ** 2

    def _noise_range(self, low: float | None, high: float | None) -> tuple[float, float]:
        lo = self.config.noise_low if low is None else low
        hi = self.config.noise_high if high is None else high
        return _sigma_range(lo, hi)

    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        lo, hi = self._noise_range(low, high)
        device = next(self.parameters()).device
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)

    def _sample(self, obs: torch.Tensor, steps: int, noise: torch.Tensor) -> torch.Tensor:
        c = self.config
        sigmas = karras_sigmas(steps, c.sigma_min, c.sigma_max, c.rho).tolist()
        b = obs.shape[0]

        def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
            return self.denoise(x, obs, torch.full((b,), sigma, device=obs.device))

        return _SAMPLERS[c.sampler](denoise, sigmas, noise)
