"""Evaluate any Policy on any Task: vectorised closed-loop rollouts, mode metrics, the task's plot."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np

from vdd_ros.tasks.base import ROLLOUTS_PER_CONTEXT, StepResult, Task
from vdd_ros.tasks.metrics import behaviour_entropy, mode_histogram, mode_kl, selection_score
from vdd_ros.tasks.policy import Policy
from vdd_ros.tasks.registry import get_task
from vdd_ros.util.progress import OnProgress, RolloutProgress

PROGRESS_INTERVAL_S = 10.0  # wall time between RolloutProgress events (one more at the end)


@dataclasses.dataclass
class RolloutResult:
    """Aggregate metrics over ``episodes`` rollouts; entropy/KL/mode_counts use successes with a mode label."""

    task: Task = dataclasses.field(repr=False)
    episodes: int
    success_rate: float
    entropy: float  # normalised to [0, 1] by log(task.num_modes)
    kl_to_uniform: float  # nats; NaN when nothing succeeded
    mode_counts: list[int]  # task.num_modes bins over successful rollouts
    timeouts: int  # neither success nor the task's failure condition
    mean_steps: float
    extras: dict[str, Any]  # task-specific figures (Avoiding: collisions, invalid_codes)
    trajectories: list[np.ndarray] = dataclasses.field(repr=False)  # observations (L+1, obs_dim) per episode
    modes: np.ndarray = dataclasses.field(repr=False)  # (episodes,) mode label of a success, else -1

    @property
    def score(self) -> float:
        return selection_score(self.success_rate, self.entropy)

    @property
    def mode_proportions(self) -> list[float]:
        """Share of each mode among successful labelled rollouts (all zero when there are none)."""
        total = sum(self.mode_counts)
        return [c / total if total else 0.0 for c in self.mode_counts]

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-safe summary (no trajectories; NaN becomes null)."""
        return {
            "task": self.task.name,
            "episodes": self.episodes,
            "success_rate": self.success_rate,
            "entropy": self.entropy,
            "kl_to_uniform": None if math.isnan(self.kl_to_uniform) else self.kl_to_uniform,
            "score": self.score,
            "mode_counts": list(self.mode_counts),
            "timeouts": self.timeouts,
            "mean_steps": self.mean_steps,
            **self.extras,
        }

    def plot(self, path: str | os.PathLike[str], title: str = "") -> None:
        """The task's trajectory plot of these rollouts, as a PNG (default title: the scores)."""
        title = title or f"success {self.success_rate:.2f}, entropy {self.entropy:.2f}"
        self.task.plot_trajectories(self.trajectories, self.modes, path, title)


def _batch_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed per batch (no overlap between neighbouring base seeds)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_rollouts(
    policy: Policy,
    task: Task | str,
    episodes: int = 480,
    seed: int = 0,
    batch: int | None = None,
    tracking_noise: float = 0.0,
    on_progress: OnProgress | None = None,
    rollouts_per_context: int = ROLLOUTS_PER_CONTEXT,
) -> RolloutResult:
    """Run ``episodes`` closed-loop rollouts of ``policy``, ``batch`` parallel streams at a time (all if None).

    ``task`` is a Task or a registered name. ``on_progress`` receives a RolloutProgress at
    least every PROGRESS_INTERVAL_S of wall time and once at the end.
    """
    task = get_task(task)
    if episodes < 1:
        raise ValueError("run_rollouts: episodes must be >= 1")
    batch = episodes if batch is None else max(1, min(batch, episodes))
    finals: list[StepResult] = []
    trajectories: list[np.ndarray] = []
    last_report = time.monotonic()
    for b, start in enumerate(range(0, episodes, batch)):
        n = min(batch, episodes - start)
        env = task.make_env(n, _batch_seed(seed, b), tracking_noise, rollouts_per_context=rollouts_per_context)
        policy.reset(n, _batch_seed(seed, b))
        obs = env.reset()
        log = [obs]
        for _ in range(task.max_steps):
            res = env.step(policy.act(obs))
            obs = res.obs
            log.append(obs)
            if on_progress is not None and time.monotonic() - last_report >= PROGRESS_INTERVAL_S:
                last_report = time.monotonic()
                on_progress(RolloutProgress(start + int(res.done.sum()), episodes, _successes(finals, res)))
            if res.done.all():
                break
        obs_log = np.stack(log, axis=1)
        trajectories.extend(obs_log[i, : res.steps[i] + 1] for i in range(n))
        finals.append(res)
    final = StepResult.concat(finals)
    if on_progress is not None:
        on_progress(RolloutProgress(episodes, episodes, int(final.success.sum())))
    return summarize(task, final, trajectories)


def _successes(finals: list[StepResult], current: StepResult) -> int:
    return int(sum(f.success.sum() for f in finals) + current.success.sum())


def summarize(task: Task, final: StepResult, trajectories: list[np.ndarray]) -> RolloutResult:
    """Metrics of finished episodes (``final`` concatenated over batches)."""
    ok = final.success
    modes = np.where(ok, final.mode, -1)
    counts = mode_histogram(modes, task.num_modes)
    return RolloutResult(
        task=task,
        episodes=len(ok),
        success_rate=float(ok.mean()),
        entropy=behaviour_entropy(counts),
        kl_to_uniform=mode_kl(counts),
        mode_counts=[int(c) for c in counts],
        timeouts=int(np.sum(~ok & ~final.failed)),
        mean_steps=float(final.steps.mean()),
        extras=task.extra_metrics(final),
        trajectories=trajectories,
        modes=modes,
    )
