"""Diffusion samplers as small functions, and the EDM preconditioning, shared by the teacher families.

Every sampler takes the model as a callable and all its randomness as ``noise``
(steps + 1, B, H, A) -- row 0 starts the chain, row i + 1 is step i's fresh noise -- so a
caller can correlate the noise over control steps and a test can replay it exactly.

Variance-preserving (DDPM) samplers walk timesteps t of a cumulative-alpha schedule with an
epsilon model ``eps(x, t)``; variance-exploding (EDM) samplers walk a decreasing sigma
schedule ending at 0 with a denoiser ``denoise(x, sigma)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

EpsModel = Callable[[torch.Tensor, int], torch.Tensor]  # (x_t, t) -> predicted noise
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]  # (x, sigma) -> D(x; sigma)


def edm_scalings(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Karras et al. (2022) preconditioning for sigma (B,): c_skip, c_out, c_in as (B, 1, 1), c_noise (B,).

    D(x; sigma) = c_skip x + c_out F(c_in x, c_noise). c_noise = log(sigma) / 4 keeps the
    network's noise condition O(1).
    """
    s = sigma.view(-1, 1, 1)
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
    c_in = 1 / (s**2 + sigma_data**2).sqrt()
    return c_skip, c_out, c_in, sigma.log() / 4


def _vp_walk(
    eps_model: EpsModel,
    alpha_bar: torch.Tensor,
    timesteps: Sequence[int],
    noise: torch.Tensor,
    eta: float,
    clip_x0: float,
) -> torch.Tensor:
    """The DDIM update family (Song et al. 2021): eta = 1 is DDPM's posterior, eta = 0 deterministic.

    ``clip_x0`` > 0 bounds the predicted clean sample and re-derives epsilon from it.
    """
    x = noise[0]
    for i, t in enumerate(timesteps):
        ab = alpha_bar[t]
        ab_prev = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones_like(ab)
        eps = eps_model(x, t)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if clip_x0 > 0:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        var = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - var).clamp_min(0).sqrt() * eps
        if i + 1 < len(timesteps) and eta > 0:
            x = x + var.sqrt() * noise[i + 1]
    return x


def ddpm_ancestral(
    eps_model: EpsModel, alpha_bar: torch.Tensor, timesteps: Sequence[int], noise: torch.Tensor, clip_x0: float
) -> torch.Tensor:
    """DDPM ancestral sampling over ``timesteps`` (descending; the exact DDPM posterior on all N steps)."""
    return _vp_walk(eps_model, alpha_bar, timesteps, noise, 1.0, clip_x0)


def ddim(
    eps_model: EpsModel, alpha_bar: torch.Tensor, timesteps: Sequence[int], noise: torch.Tensor, clip_x0: float
) -> torch.Tensor:
    """Deterministic DDIM over ``timesteps``: only ``noise[0]`` is used."""
    return _vp_walk(eps_model, alpha_bar, timesteps, noise, 0.0, clip_x0)


def _slope(denoise: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE."""
    return (x - denoise(x, sigma)) / sigma


def euler(denoise: Denoiser, sigmas: Sequence[float], noise: torch.Tensor) -> torch.Tensor:
    """Euler steps of the probability-flow ODE (deterministic: only ``noise[0]`` is used)."""
    x = noise[0] * sigmas[0]
    for s, s_next in itertools.pairwise(sigmas):
        x = x + _slope(denoise, x, s) * (s_next - s)
    return x


def heun(denoise: Denoiser, sigmas: Sequence[float], noise: torch.Tensor) -> torch.Tensor:
    """Heun's second-order steps (Karras et al. 2022, Alg. 1); an Euler step onto sigma = 0."""
    x = noise[0] * sigmas[0]
    for s, s_next in itertools.pairwise(sigmas):
        d = _slope(denoise, x, s)
        if s_next > 0:
            x_euler = x + d * (s_next - s)
            x = x + 0.5 * (d + _slope(denoise, x_euler, s_next)) * (s_next - s)
        else:
            x = x + d * (s_next - s)
    return x


def euler_ancestral(denoise: Denoiser, sigmas: Sequence[float], noise: torch.Tensor) -> torch.Tensor:
    """Euler steps down to sigma_down, then fresh noise back up to sigma_next (k-diffusion's rule)."""
    x = noise[0] * sigmas[0]
    for i, (s, s_next) in enumerate(itertools.pairwise(sigmas)):
        s_up = min(s_next, math.sqrt(max(s_next**2 * (s**2 - s_next**2) / s**2, 0.0)))
        s_down = math.sqrt(s_next**2 - s_up**2)
        x = x + _slope(denoise, x, s) * (s_down - s)
        if s_next > 0:
            x = x + s_up * noise[i + 1]
    return x
