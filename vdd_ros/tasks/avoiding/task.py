"""Avoiding as a registered ``Task``: its description plus the glue to env, expert, metrics and plot."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vdd_ros.tasks.avoiding import plot
from vdd_ros.tasks.avoiding.env import CONTROL_PERIOD_S, MAX_ACTION, MAX_STEPS, AvoidingEnv, AvoidingStep
from vdd_ros.tasks.avoiding.expert import ExpertConfig, generate_demos, skewed_path_distribution
from vdd_ros.tasks.avoiding.readout import NUM_PATHS, path_name
from vdd_ros.tasks.base import ROLLOUTS_PER_CONTEXT, Demo, Task


class AvoidingTask(Task):
    """D3IL Avoiding: reach the finish line through three obstacle rows by one of 24 paths."""

    name = "avoiding"
    obs_names = ("desired_x", "desired_y", "actual_x", "actual_y")
    act_names = ("delta_x", "delta_y")
    control_period_s = CONTROL_PERIOD_S
    max_steps = MAX_STEPS
    mode_names = tuple(path_name(k) for k in range(NUM_PATHS))
    action_low = np.full(2, -MAX_ACTION)
    action_high = np.full(2, MAX_ACTION)
    expert_config_type = ExpertConfig

    def make_env(
        self, n: int, seed: int = 0, tracking_noise: float = 0.0, rollouts_per_context: int = ROLLOUTS_PER_CONTEXT
    ) -> AvoidingEnv:
        return AvoidingEnv(n, tracking_noise=tracking_noise, seed=seed)

    def plot_trajectories(
        self, trajectories: list[np.ndarray], modes: np.ndarray, path: str | os.PathLike[str], title: str
    ) -> None:
        plot.plot_trajectories(trajectories, modes, path, title)

    def extra_metrics(self, final: AvoidingStep) -> dict[str, Any]:
        """Collisions, and successes whose 9-bit code is none of the 24 paths (kept out of the entropy)."""
        return {
            "invalid_codes": int(np.sum(final.success & final.invalid_code)),
            "collisions": int(final.collided.sum()),
        }

    def mode_distributions(self) -> dict[str, np.ndarray]:
        return {**super().mode_distributions(), "skewed": skewed_path_distribution()}

    def generate_demos(self, labels: np.ndarray, rng: np.random.Generator, config: Any = None) -> list[Demo]:
        return generate_demos(labels, rng, ExpertConfig() if config is None else config)
