"""The ``Task`` extension point: everything rollouts, evaluation, demos and the simulator node need.

A task is a subclass of ``Task`` whose class attributes describe it (names, timing, modes,
action box) and whose methods build its vectorised environment, its scripted expert, its
metrics and its trajectory plot. The registry (``vdd_ros.tasks.registry``) holds one
instance per task; nothing outside ``vdd_ros/tasks/<task>`` knows a task's internals.
An ABC rather than a Protocol: the shared derived properties (``obs_dim``, ``num_modes``,
...) and the optional parts (expert, extra metrics) live here once, and ``validate``
catches an inconsistent description when the task is registered, not mid-evaluation.
See docs/tasks.md.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Any, Protocol

import numpy as np

NO_MODE = -1  # mode label of an episode that took none of the task's modes (yet)
ROLLOUTS_PER_CONTEXT = 16  # episodes per initial state in an evaluation (D3IL: 30 contexts x 16)


@dataclasses.dataclass
class StepResult:
    """State of all n episodes after one step; finished episodes keep their final values.

    Tasks subclass it to add per-episode diagnostics (Avoiding: collided, invalid_code);
    every field must be an array with the episode axis first so results can be concatenated.
    """

    obs: np.ndarray  # (n, obs_dim) float32: the observation the policy sees next
    done: np.ndarray  # (n,) bool
    success: np.ndarray  # (n,) bool
    failed: np.ndarray  # (n,) bool: ended by the task's failure condition (not a time-out)
    mode: np.ndarray  # (n,) int64: mode label, NO_MODE if none
    steps: np.ndarray  # (n,) int64: control steps taken

    @classmethod
    def concat(cls, parts: list[StepResult]) -> StepResult:
        """One result over all episodes of ``parts`` (batches of the same task, in order)."""
        kind = type(parts[0])
        return kind(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(kind)})


class TaskEnv(Protocol):
    """n episodes in lock-step; a finished episode ignores further actions until ``reset``."""

    n: int

    def reset(self) -> np.ndarray:
        """Start all n episodes; returns the first observations (n, obs_dim) float32."""
        ...

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply actions (n, act_dim) to the running episodes."""
        ...


@dataclasses.dataclass
class Demo:
    """One recorded expert episode: observation before each step, the applied action, its mode label."""

    observations: np.ndarray  # (L, obs_dim) float32
    actions: np.ndarray  # (L, act_dim) float32
    mode: int


class Task(abc.ABC):
    """Description and behaviour of one task; subclasses set the class attributes below."""

    name: str  # registry key; also the ``task`` string of datasets, teachers and policies
    obs_names: tuple[str, ...]
    act_names: tuple[str, ...]
    control_period_s: float
    max_steps: int  # an episode that has not ended by then is a time-out
    mode_names: tuple[str, ...]  # label k of StepResult.mode and Demo.mode is mode_names[k]
    action_low: np.ndarray  # (act_dim,) the environment's action box: teacher clip, controller clamp
    action_high: np.ndarray
    expert_config_type: type | None = None  # dataclass of the scripted expert's knobs (YAML section "expert")
    demo_mode_distribution: str = "uniform"  # the ``mode_distributions`` entry ``make demo`` demonstrates

    @property
    def obs_dim(self) -> int:
        return len(self.obs_names)

    @property
    def act_dim(self) -> int:
        return len(self.act_names)

    @property
    def num_modes(self) -> int:
        return len(self.mode_names)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), the form ``TeacherPolicy`` and the controller take."""
        return self.action_low, self.action_high

    def validate(self) -> None:
        """Raise ValueError if the description is inconsistent (run by the registry)."""
        problems = []
        if not self.name or not self.name.isidentifier():
            problems.append(f"name must be a non-empty identifier, got {self.name!r}")
        for what in ("obs_names", "act_names", "mode_names"):
            names = getattr(self, what)
            if not names or len(set(names)) != len(names):
                problems.append(f"{what} must be non-empty and unique")
        if not self.control_period_s > 0 or self.max_steps < 1:
            problems.append("control_period_s must be > 0 and max_steps >= 1")
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        if low.shape != (self.act_dim,) or high.shape != (self.act_dim,) or not np.all(low < high):
            problems.append(f"action_low < action_high must hold per dimension, shape ({self.act_dim},)")
        if problems:
            raise ValueError(f"task {self.name!r}: " + "; ".join(problems))

    @abc.abstractmethod
    def make_env(
        self, n: int, seed: int = 0, tracking_noise: float = 0.0, rollouts_per_context: int = ROLLOUTS_PER_CONTEXT
    ) -> TaskEnv:
        """n parallel episodes; ``seed`` drives all of the environment's randomness.

        ``tracking_noise`` is the std of actuator/tracking noise in the task's units (0 = none).
        ``rollouts_per_context`` consecutive episodes share an initial state; a task with a
        single start state (Avoiding) has one context and ignores it.
        """

    @abc.abstractmethod
    def plot_trajectories(
        self, trajectories: list[np.ndarray], modes: np.ndarray, path: str | os.PathLike[str], title: str
    ) -> None:
        """Save a PNG of per-episode observations (L+1, obs_dim), coloured by mode label (-1: none)."""

    def extra_metrics(self, final: StepResult) -> dict[str, Any]:
        """Task-specific JSON-safe figures from the final results of all episodes (e.g. collisions)."""
        return {}

    def mode_distributions(self) -> dict[str, np.ndarray | None]:
        """Named mode distributions the expert can be asked to demonstrate; "uniform" always exists.

        None names the expert's own state-dependent preferences (Pushing: "preferred"): a mode
        cannot be drawn before the episode's start state exists, so the demo collector then
        passes NO_MODE labels and the expert chooses (see ``generate_demos``).
        """
        return {"uniform": np.full(self.num_modes, 1.0 / self.num_modes)}

    def generate_demos(self, labels: np.ndarray, rng: np.random.Generator, config: Any = None) -> list[Demo]:
        """One validated expert demonstration per mode label in ``labels``, in order.

        A NO_MODE label asks the expert to choose the mode from the episode's start state by
        its own preferences; ``Demo.mode`` is the mode it showed (tasks that offer a None
        distribution in ``mode_distributions`` accept such labels).
        ``config`` is an ``expert_config_type`` instance (its defaults when None). Tasks
        without a scripted expert keep this default, which refuses.
        """
        raise NotImplementedError(f"task {self.name!r} has no scripted expert")
