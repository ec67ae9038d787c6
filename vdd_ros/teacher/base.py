"""The teacher interface: what distillation and evaluation call, and what training adds.

All tensors live in the *normalised* spaces (see ``vdd_ros.data.normalizer``): ``obs`` has
shape (B, T, obs_dim) -- the observation window -- and actions have shape (B, H, act_dim)
-- the action chunk.

``Teacher`` is all the pipeline needs: distillation calls ``check_noise_range``,
``sample_noise_levels`` and ``score``; evaluation (``TeacherPolicy``) calls ``sample``.
``TrainableTeacher`` adds the training loss and the settings a checkpoint records; only
``teacher.train`` and ``teacher.checkpoint`` use it.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.data.shape import PolicyShape
from vdd_ros.teacher.config import NetworkConfig
from vdd_ros.teacher.network import build_denoiser


class Teacher(nn.Module, abc.ABC):
    """A conditional generative policy pi(a|s) whose score is available at noise levels."""

    family: ClassVar[str]  # the registry name; "" for teachers that are not checkpointed
    obs_dim: int
    act_dim: int
    obs_window: int  # T
    act_chunk: int  # H

    @property
    def shape(self) -> PolicyShape:
        return PolicyShape(self.obs_dim, self.act_dim, self.obs_window, self.act_chunk)

    @property
    @abc.abstractmethod
    def default_sample_steps(self) -> int:
        """The step count ``sample`` uses when given none."""

    @property
    @abc.abstractmethod
    def sampler(self) -> str:
        """Name of the sampler ``sample`` runs (for reports)."""

    @abc.abstractmethod
    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """grad_a log pi_sigma(a|s) (B, H, act_dim) at one noise level per row, ``noise_level`` (B,).

        The clean ``actions`` are fed as the noisy input (no noise is added), as VDD does.
        The unit of a noise level is the family's (sigma for EDM, the step index t for DDPM).
        """

    def check_noise_range(self, low: float | None, high: float | None) -> tuple[float, float]:
        """[low, high] with the teacher's defaults for None ends; ValueError (saying why) for an invalid range.

        Distillation calls this before any work, and a noise schedule for the numbers it moves.
        """
        return self._noise_range(low, high)

    @abc.abstractmethod
    def _noise_range(self, low: float | None, high: float | None) -> tuple[float, float]:
        """[low, high] with the family's defaults filled in; ValueError for a range it cannot score at."""

    @abc.abstractmethod
    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw n noise levels uniformly in [low, high] (a range ``check_noise_range`` accepts)."""

    @torch.no_grad()
    def sample(
        self,
        obs: torch.Tensor,
        steps: int | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw action chunks (B, H, act_dim) for observation windows (B, T, obs_dim), without gradient.

        ``noise``, if given, replaces every random draw: standard normal of shape
        ``noise_shape(B, steps)`` = (steps + 1, B, H, act_dim), row 0 starting the chain and row
        i + 1 the fresh noise of step i (unused by deterministic samplers). Callers use it to
        correlate the noise over control steps (``TeacherPolicy``). Otherwise the draws come
        from ``generator`` (or torch's global one).
        """
        steps = steps or self.default_sample_steps
        return self._sample(obs, steps, self._sampler_noise(obs, steps, noise, generator))

    @abc.abstractmethod
    def _sample(self, obs: torch.Tensor, steps: int, noise: torch.Tensor) -> torch.Tensor:
        """The family's sampler, every random draw taken from ``noise`` (laid out as ``noise_shape``)."""

    def noise_shape(self, batch: int, steps: int | None = None) -> tuple[int, int, int, int]:
        """The layout of ``sample``'s ``noise`` argument."""
        return (steps or self.default_sample_steps) + 1, batch, self.act_chunk, self.act_dim

    def _sampler_noise(
        self, obs: torch.Tensor, steps: int, noise: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``noise`` checked against ``noise_shape``, or a fresh draw of that shape."""
        shape = self.noise_shape(obs.shape[0], steps)
        if noise is None:
            return torch.randn(shape, generator=generator, device=obs.device, dtype=obs.dtype)
        if tuple(noise.shape) != shape:
            raise ValueError(f"sampler noise must have shape {shape} (steps + 1, B, H, A), got {tuple(noise.shape)}")
        return noise


class TrainableTeacher(Teacher):
    """A teacher that can be trained and checkpointed: a loss, plus the settings that rebuild it."""

    network_config: NetworkConfig
    config: Any  # the family's config dataclass (see ``teacher.registry``)

    @abc.abstractmethod
    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Denoising training loss on a batch (scalar)."""

    def fit_inputs(self, obs: torch.Tensor, obs_norm: Normalizer) -> None:
        """Fit input statistics kept in the weights (none by default) on all normalised training windows."""


class NetworkTeacher(TrainableTeacher):
    """A teacher whose denoiser is built by ``vdd_ros.teacher.network.build_denoiser`` (MLP or temporal U-Net)."""

    config_type: type  # the family's diffusion config dataclass (its defaults when none is given)

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        obs_window: int = 5,
        act_chunk: int = 1,
        network: NetworkConfig | None = None,
        config: Any = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.obs_window, self.act_chunk = obs_dim, act_dim, obs_window, act_chunk
        self.network_config = network or NetworkConfig()
        self.config = config or self.config_type()
        self.net = build_denoiser(obs_dim, act_dim, obs_window, act_chunk, self.network_config)

    def fit_inputs(self, obs: torch.Tensor, obs_norm: Normalizer) -> None:
        self.net.window.fit(obs, torch.from_numpy(obs_norm.mean), torch.from_numpy(obs_norm.std))

    @property
    def default_sample_steps(self) -> int:
        return self.config.sample_steps

    @property
    def sampler(self) -> str:
        return self.config.sampler
