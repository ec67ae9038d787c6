"""A diffusion teacher as a closed-loop Policy in raw units (for rollouts and baselines)."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import torch

from vdd_ros.data.window import ObservationWindow
from vdd_ros.tasks.avoiding import MAX_ACTION, TASK_NAME
from vdd_ros.teacher.base import DiffusionTeacher
from vdd_ros.teacher.checkpoint import TeacherMeta, load_teacher

# Per-task action bounds applied after denormalising, as the environment would clip anyway.
_ACTION_CLIP = {TASK_NAME: MAX_ACTION}


class TeacherPolicy:
    """Windows and normalises observations, samples a chunk, executes its first action.

    ``noise_correlation`` rho makes the sampler noise an AR(1) process over control steps,
    eps_t = rho eps_(t-1) + sqrt(1 - rho^2) xi_t. Every step's action is still an exact
    sample of pi(a|s) (the noise is N(0, I) at each step); only its correlation over time
    changes. 0 re-draws the noise every step, 1 keeps it for the whole episode; None takes
    the teacher's default (0.9: a branch chosen while the modes are still indistinguishable
    in the state is kept for ~10 steps, so the mixture mean does not drift to one side).
    """

    def __init__(
        self,
        teacher: DiffusionTeacher,
        meta: TeacherMeta,
        steps: int | None = None,
        sampler: str | None = None,
        device: str = "cpu",
        noise_correlation: float | None = None,
    ) -> None:
        if noise_correlation is None:
            noise_correlation = teacher.config.noise_correlation
        if not 0.0 <= noise_correlation <= 1.0:
            raise ValueError(f"noise_correlation must be in [0, 1], got {noise_correlation}")
        self.teacher = teacher.to(device).eval()
        self.meta = meta
        self.steps = steps or teacher.config.sample_steps
        self.sampler = sampler
        self.device = device
        self.rho = noise_correlation
        self._obs_norm = meta.obs_norm
        self._act_norm = meta.act_norm
        self._clip = _ACTION_CLIP.get(meta.task)
        self.name = f"teacher-{meta.family}-{sampler or teacher.config.sampler}-{self.steps}"
        self._window: ObservationWindow | None = None
        self._generator = torch.Generator(device=device)
        self._noise: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | pathlib.Path,
        steps: int | None = None,
        sampler: str | None = None,
        device: str = "cpu",
        noise_correlation: float | None = None,
    ) -> TeacherPolicy:
        teacher, meta = load_teacher(path, device=device)
        return cls(teacher, meta, steps=steps, sampler=sampler, device=device, noise_correlation=noise_correlation)

    def reset(self, n: int, seed: int) -> None:
        self._window = ObservationWindow(n, self.meta.obs_window, self.meta.obs_dim)
        self._generator.manual_seed(seed)
        self._noise = self._draw(n)

    def _draw(self, n: int) -> torch.Tensor:
        shape = (self.steps + 1, n, self.meta.act_chunk, self.meta.act_dim)
        return torch.randn(shape, generator=self._generator, device=self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._window is None or self._noise is None:
            raise RuntimeError("TeacherPolicy.act called before reset")
        window = self._obs_norm.normalize(self._window.push(obs))
        obs_t = torch.from_numpy(window).to(self.device)
        if self.rho < 1.0:
            fresh = self._draw(obs_t.shape[0])
            self._noise = fresh if self.rho == 0.0 else self.rho * self._noise + math.sqrt(1 - self.rho**2) * fresh
        chunk = self.teacher.sample(obs_t, steps=self.steps, sampler=self.sampler, noise=self._noise)
        action = self._act_norm.denormalize(chunk[:, 0].cpu().numpy())
        if self._clip is not None:
            action = np.clip(action, -self._clip, self._clip)
        return action
