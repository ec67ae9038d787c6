"""The 8-mode ring GMM of the VDD toy check (vdd_method.md §7): an exact-score teacher.

A state-independent, equally weighted ``GaussianMixtureTeacher`` (see there for the score
at a noise level) with its modes on a circle.
"""

from __future__ import annotations

import math

import torch

from vdd_ros.teacher.gmm import GaussianMixtureTeacher


class RingGMMTeacher(GaussianMixtureTeacher):
    """State-independent 2-D mixture of ``num_modes`` equal isotropic Gaussians on a circle."""

    family = "ring_gmm"

    def __init__(
        self, num_modes: int = 8, radius: float = 2.0, std: float = 0.5, obs_dim: int = 1, obs_window: int = 1
    ) -> None:
        angles = 2 * math.pi * torch.arange(num_modes, dtype=torch.float32) / num_modes
        modes = radius * torch.stack([angles.cos(), angles.sin()], dim=-1)
        super().__init__(modes, std=std, obs_dim=obs_dim, obs_window=obs_window)

    @property
    def modes(self) -> torch.Tensor:
        """The (num_modes, 2) component means."""
        return self.centres
