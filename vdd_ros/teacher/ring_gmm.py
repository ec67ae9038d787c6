"""An analytic stand-in teacher: the 8-mode ring GMM of the VDD toy check (vdd_method.md §7).

Its score is exact, so a distillation failure on it is the distiller's fault, never the
teacher's. At noise level sigma the score is that of the GMM convolved with N(0, sigma^2 I),
i.e. every component's variance becomes std^2 + sigma^2 -- what a perfect denoiser gives.
It has nothing to train, so it is a ``Teacher`` but not a registered (trainable) family.
"""

from __future__ import annotations

import math

import torch

from vdd_ros.teacher.base import Teacher


class RingGMMTeacher(Teacher):
    """State-independent 2-D mixture of ``num_modes`` equal isotropic Gaussians on a circle."""

    family = "ring_gmm"

    def __init__(
        self, num_modes: int = 8, radius: float = 2.0, std: float = 0.5, obs_dim: int = 1, obs_window: int = 1
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.obs_window, self.act_chunk = obs_dim, 2, obs_window, 1
        self.std = std
        angles = 2 * math.pi * torch.arange(num_modes, dtype=torch.float32) / num_modes
        self.register_buffer("modes", radius * torch.stack([angles.cos(), angles.sin()], dim=-1))

    @property
    def default_sample_steps(self) -> int:
        return 1

    @property
    def sampler(self) -> str:
        return "exact"

    def _log_components(self, a: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """log N(a; m_k, var I) for a (B, 2), var (B,) -> (B, K)."""
        sq = (a.unsqueeze(1) - self.modes).square().sum(-1)
        return -0.5 * sq / var.unsqueeze(1) - torch.log(2 * math.pi * var).unsqueeze(1)

    def log_prob(self, actions: torch.Tensor, noise_level: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Exact log density (B,) of actions (B, 1, 2) at a noise level."""
        a = actions.reshape(-1, 2)
        var = self.std**2 + torch.as_tensor(noise_level, dtype=a.dtype, device=a.device).square().expand(a.shape[0])
        return torch.logsumexp(self._log_components(a, var), dim=-1) - math.log(self.modes.shape[0])

    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """sum_k w_k(a) (m_k - a) / (std^2 + sigma^2), with w the component responsibilities."""
        a = actions.reshape(-1, 2)
        var = self.std**2 + noise_level.to(a).square()
        w = torch.softmax(self._log_components(a, var), dim=-1)
        return ((w @ self.modes - a) / var.unsqueeze(1)).view_as(actions)

    def _sample(self, obs: torch.Tensor, steps: int, noise: torch.Tensor) -> torch.Tensor:
        """Exact draws: row 0 of ``noise`` is the Gaussian offset; row 1's first coordinate,
        through the normal CDF, picks the mode (further rows are unused)."""
        u = torch.special.ndtr(noise[1, :, 0, 0]).clamp(max=1 - 1e-7)
        k = (u * self.modes.shape[0]).long()
        return (self.modes[k] + self.std * noise[0, :, 0]).view(obs.shape[0], 1, 2)

    def _noise_range(self, low: float | None, high: float | None) -> tuple[float, float]:
        """Default 0 (the exact clean score needs no smoothing); ``high`` defaults to ``low``."""
        lo = 0.0 if low is None else low
        hi = lo if high is None else high
        if not 0 <= lo <= hi:
            raise ValueError(f"ring GMM noise levels are sigmas with 0 <= low <= high, got {lo}..{hi}")
        return lo, hi

    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        lo, hi = self._noise_range(low, high)
        u = torch.rand(n, generator=generator, device=self.modes.device)
        return lo + (hi - lo) * u
