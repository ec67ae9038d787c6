"""Pushing as a registered ``Task``: its description plus the glue to env, expert, metrics and plot."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vdd_ros.tasks.base import NO_MODE, ROLLOUTS_PER_CONTEXT, Demo, Task
from vdd_ros.tasks.metrics import (
    context_entropy,
    context_mode_counts,
    context_preference_gap,
    context_preference_gap_floor,
)
from vdd_ros.tasks.pushing import plot
from vdd_ros.tasks.pushing.env import (
    CONTROL_PERIOD_S,
    MAX_ACTION,
    MAX_STEPS,
    OBS_NAMES,
    PUSHER_START,
    PushingEnv,
    PushingStep,
)
from vdd_ros.tasks.pushing.expert import (
    PushingExpertConfig,
    generate_demos,
    mode_probabilities,
    mode_probabilities_from_obs,
    preferences_followed,
)
from vdd_ros.tasks.pushing.readout import MODE_NAMES, NUM_MODES

PREFERRED = "preferred"  # mode distribution name: the expert's own state-dependent preferences


class PushingTask(Task):
    """D3IL Pushing: push the red and the green block into the two target zones, in either order and assignment."""

    name = "pushing"
    obs_names = OBS_NAMES
    act_names = ("delta_x", "delta_y")
    control_period_s = CONTROL_PERIOD_S
    max_steps = MAX_STEPS
    mode_names = MODE_NAMES
    action_low = np.full(2, -MAX_ACTION)
    action_high = np.full(2, MAX_ACTION)
    expert_config_type = PushingExpertConfig
    demo_mode_distribution = PREFERRED

    def make_env(
        self, n: int, seed: int = 0, tracking_noise: float = 0.0, rollouts_per_context: int = ROLLOUTS_PER_CONTEXT
    ) -> PushingEnv:
        return PushingEnv(n, seed=seed, tracking_noise=tracking_noise, rollouts_per_context=rollouts_per_context)

    def plot_trajectories(
        self, trajectories: list[np.ndarray], modes: np.ndarray, path: str | os.PathLike[str], title: str
    ) -> None:
        plot.plot_trajectories(trajectories, modes, path, title)

    def extra_metrics(self, final: PushingStep) -> dict[str, Any]:
        """D3IL's per-context entropy, per-context mode proportions against the expert's preferences, IBC's p1.

        Contexts are the distinct initial block poses (16 rollouts each by default). The
        preference gap comes with the floor sampling alone gives at the same success counts, and
        with the shares of successes that followed each of the expert's two preferences.
        """
        labels = np.where(final.success, final.mode, NO_MODE)
        contexts, counts = context_mode_counts(final.context, labels, NUM_MODES)
        blocks_xy = contexts.reshape(-1, 2, 3)[:, :, :2]
        expected = mode_probabilities(np.tile(PUSHER_START, (len(contexts), 1)), blocks_xy)
        totals = counts.sum(axis=1, keepdims=True)
        gap, floor = context_preference_gap(counts, expected), context_preference_gap_floor(counts, expected)
        episode_xy = final.context.reshape(-1, 2, 3)[:, :, :2]
        nearer_first, shorter = preferences_followed(labels, np.tile(PUSHER_START, (len(episode_xy), 1)), episode_xy)
        return {
            "contexts": len(contexts),
            "context_entropy": context_entropy(counts),
            "preference_gap": None if np.isnan(gap) else gap,
            "preference_gap_floor": None if np.isnan(floor) else floor,
            "nearer_first_share": None if np.isnan(nearer_first) else nearer_first,
            "shorter_assignment_share": None if np.isnan(shorter) else shorter,
            "one_block_rate": float(np.mean(final.blocks_in_zone >= 1)),
            "context_mode_proportions": np.divide(counts, np.maximum(totals, 1)).round(4).tolist(),
            "expert_mode_probabilities": expected.round(4).tolist(),
        }

    def mode_distributions(self) -> dict[str, np.ndarray | None]:
        return {**super().mode_distributions(), PREFERRED: None}

    def expert_mode_probabilities(self, initial_obs: np.ndarray) -> np.ndarray:
        """(n, 4) how likely the expert shows each mode in episodes starting from ``initial_obs`` (n, obs_dim)."""
        return mode_probabilities_from_obs(initial_obs)

    def generate_demos(self, labels: np.ndarray, rng: np.random.Generator, config: Any = None) -> list[Demo]:
        return generate_demos(labels, rng, PushingExpertConfig() if config is None else config)
