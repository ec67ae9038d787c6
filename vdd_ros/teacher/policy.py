"""A diffusion teacher as a closed-loop Policy in raw units (for rollouts and baselines)."""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from vdd_ros.runtime.window import ObservationWindow
from vdd_ros.tasks.avoiding import MAX_ACTION, TASK_NAME
from vdd_ros.teacher.base import DiffusionTeacher
from vdd_ros.teacher.checkpoint import TeacherMeta, load_teacher

# Per-task action bounds applied after denormalising, as the environment would clip anyway.
_ACTION_CLIP = {TASK_NAME: MAX_ACTION}


class TeacherPolicy:
    """Windows and normalises observations, samples a chunk, executes its first action."""

    def __init__(
        self,
        teacher: DiffusionTeacher,
        meta: TeacherMeta,
        steps: int | None = None,
        sampler: str | None = None,
        device: str = "cpu",
    ) -> None:
        self.teacher = teacher.to(device).eval()
        self.meta = meta
        self.steps = steps
        self.sampler = sampler
        self.device = device
        self._obs_norm = meta.obs_norm
        self._act_norm = meta.act_norm
        self._clip = _ACTION_CLIP.get(meta.task)
        self.name = f"teacher-{meta.family}-{sampler or teacher.config.sampler}-{steps or teacher.config.sample_steps}"
        self._window: ObservationWindow | None = None
        self._generator: torch.Generator | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | pathlib.Path, steps: int | None = None, sampler: str | None = None, device: str = "cpu"
    ) -> TeacherPolicy:
        teacher, meta = load_teacher(path, device=device)
        return cls(teacher, meta, steps=steps, sampler=sampler, device=device)

    def reset(self, n: int, seed: int) -> None:
        self._window = ObservationWindow(n, self.meta.obs_window, self.meta.obs_dim)
        self._generator = torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._window is None:
            raise RuntimeError("TeacherPolicy.act called before reset")
        window = self._obs_norm.normalize(self._window.push(obs))
        obs_t = torch.from_numpy(window).to(self.device)
        chunk = self.teacher.sample(obs_t, steps=self.steps, generator=self._generator, sampler=self.sampler)
        action = self._act_norm.denormalize(chunk[:, 0].cpu().numpy())
        if self._clip is not None:
            action = np.clip(action, -self._clip, self._clip)
        return action
