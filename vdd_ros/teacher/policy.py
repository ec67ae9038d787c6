"""A diffusion teacher as a closed-loop Policy in raw units (for rollouts and baselines)."""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from vdd_ros.data.noise import DEFAULT_NOISE_CORRELATION, CorrelatedNormal, check_correlation
from vdd_ros.data.window import ObservationWindow
from vdd_ros.teacher.base import Teacher
from vdd_ros.teacher.checkpoint import TeacherMeta, load_teacher


class TeacherPolicy:
    """Windows and normalises observations, samples a chunk, executes its first ``act_exec`` actions.

    ``act_exec`` (default: half the chunk, as a distilled student's contract) actions of each
    sampled chunk are applied one per step before the next chunk is sampled; all n
    environments step in lockstep, as ``run_rollouts`` drives them.

    ``noise_correlation`` rho in [0, 1) makes the sampler noise of each environment an
    AR(1) process over control steps (``vdd_ros.data.noise``, the stream the exported MoE
    uses too). Every step's action is still an exact sample of pi(a|s) (the noise is N(0, I)
    at each step); only its correlation over time changes: 0 re-draws the noise every step,
    the default 0.98 keeps a branch chosen while the modes are still indistinguishable in
    the state for ~50 steps, so the mixture mean does not drift to one side.

    ``action_bounds`` (low, high) per action dimension clips the denormalised action, as the
    environment would anyway (callers pass ``task.action_bounds``); None leaves it unclipped.
    """

    def __init__(
        self,
        teacher: Teacher,
        meta: TeacherMeta,
        steps: int | None = None,
        device: str = "cpu",
        noise_correlation: float = DEFAULT_NOISE_CORRELATION,
        action_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        act_exec: int | None = None,
    ) -> None:
        self.act_exec = act_exec or teacher.shape.default_act_exec
        if not 1 <= self.act_exec <= teacher.act_chunk:
            raise ValueError(f"act_exec {self.act_exec} must be in [1, the teacher's chunk {teacher.act_chunk}]")
        self.teacher = teacher.to(device).eval()
        self.meta = meta
        self.steps = steps or teacher.default_sample_steps
        self.device = device
        self.noise_correlation = check_correlation(noise_correlation)  # refused before any rollout
        self._obs_norm = meta.obs_norm
        self._act_norm = meta.act_norm
        self._bounds = None if action_bounds is None else tuple(np.asarray(b) for b in action_bounds)
        self.name = f"teacher-{meta.family}-{teacher.sampler}-{self.steps}"
        self._window: ObservationWindow | None = None
        self._noise: CorrelatedNormal | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | pathlib.Path,
        steps: int | None = None,
        sampler: str | None = None,
        device: str = "cpu",
        noise_correlation: float = DEFAULT_NOISE_CORRELATION,
        action_bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> TeacherPolicy:
        """``sampler`` replaces the checkpoint's sampler setting (see ``load_teacher``)."""
        teacher, meta = load_teacher(path, device=device, sampler=sampler)
        return cls(
            teacher,
            meta,
            steps=steps,
            device=device,
            noise_correlation=noise_correlation,
            action_bounds=action_bounds,
        )

    def reset(self, n: int, seed: int) -> None:
        self._window = ObservationWindow(n, self.meta.obs_window, self.meta.obs_dim)
        self._noise = CorrelatedNormal(np.random.default_rng(seed), self.noise_correlation)
        self._plan = np.zeros((n, self.teacher.act_chunk, self.meta.act_dim), np.float32)
        self._step = 0

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._window is None or self._noise is None:
            raise RuntimeError("TeacherPolicy.act called before reset")
        window = self._obs_norm.normalize(self._window.push(obs))
        index = self._step % self.act_exec
        self._step += 1
        if index == 0:
            self._plan = self._sample_chunk(window)
        action = self._plan[:, index]
        if self._bounds is not None:  # in the action's dtype, so float32 actions stay float32
            low, high = (b.astype(action.dtype) for b in self._bounds)
            action = np.clip(action, low, high)
        return action

    def _sample_chunk(self, window: np.ndarray) -> np.ndarray:
        """(n, H, act_dim) raw actions sampled for the normalised windows (n, T, obs_dim)."""
        obs_t = torch.from_numpy(window).to(self.device)
        rows, n, h, a = self.teacher.noise_shape(obs_t.shape[0], self.steps)
        draw = self._noise.draw((n, rows, h, a))  # one stream per environment
        noise = torch.from_numpy(draw).to(self.device, obs_t.dtype).permute(1, 0, 2, 3)
        chunk = self.teacher.sample(obs_t, steps=self.steps, noise=noise)
        return self._act_norm.denormalize(chunk.cpu().numpy())
