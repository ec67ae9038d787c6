"""Evaluate any Policy on the Avoiding task: vectorised rollouts, D3IL metrics and a trajectory plot."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from vdd_ros.tasks.policy import Policy
from vdd_ros.tasks.avoiding import (
    COLLISION_DIST,
    FINISH_Y,
    MAX_STEPS,
    NUM_PATHS,
    OBSTACLE_RADII,
    OBSTACLES,
    AvoidingEnv,
)
from vdd_ros.tasks.metrics import behaviour_entropy, path_histogram, path_kl, selection_score


@dataclasses.dataclass
class RolloutResult:
    """Aggregate D3IL metrics over ``episodes`` rollouts; entropy/KL/mode_counts use successes with a valid path."""

    episodes: int
    success_rate: float
    entropy: float
    kl_to_uniform: float  # nats; NaN when nothing succeeded
    mode_counts: list[int]  # 24 bins over successful rollouts
    invalid_codes: int  # successful rollouts whose 9-bit code is not one of the 24 paths
    collisions: int
    timeouts: int
    mean_steps: float
    trajectories: list[np.ndarray] = dataclasses.field(repr=False)  # actual xy (L+1, 2) per episode
    paths: np.ndarray = dataclasses.field(repr=False)  # (episodes,) path id or -1

    @property
    def score(self) -> float:
        return selection_score(self.success_rate, self.entropy)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-safe summary (no trajectories; NaN becomes null)."""
        return {
            "episodes": self.episodes,
            "success_rate": self.success_rate,
            "entropy": self.entropy,
            "kl_to_uniform": None if math.isnan(self.kl_to_uniform) else self.kl_to_uniform,
            "score": self.score,
            "mode_counts": list(self.mode_counts),
            "invalid_codes": self.invalid_codes,
            "collisions": self.collisions,
            "timeouts": self.timeouts,
            "mean_steps": self.mean_steps,
        }


def _batch_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed per batch (no overlap between neighbouring base seeds)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_rollouts(
    policy: Policy,
    episodes: int = 480,
    seed: int = 0,
    batch: int | None = None,
    tracking_noise: float = 0.0,
    progress: bool = False,
) -> RolloutResult:
    """Run ``episodes`` closed-loop rollouts of ``policy``, ``batch`` parallel streams at a time (all if None)."""
    if episodes < 1:
        raise ValueError("run_rollouts: episodes must be >= 1")
    batch = episodes if batch is None else max(1, min(batch, episodes))
    success, collided, steps, paths, invalid, trajectories = [], [], [], [], [], []
    for b, start in enumerate(range(0, episodes, batch)):
        n = min(batch, episodes - start)
        env = AvoidingEnv(n, tracking_noise=tracking_noise, seed=_batch_seed(seed, b))
        policy.reset(n, _batch_seed(seed, b))
        obs = env.reset()
        xy = [env.actual.copy()]
        for _ in range(MAX_STEPS):
            res = env.step(policy.act(obs))
            obs = res.obs
            xy.append(env.actual.copy())
            if res.done.all():
                break
        xy_arr = np.stack(xy, axis=1)
        trajectories.extend(xy_arr[i, : res.steps[i] + 1] for i in range(n))
        success.append(res.success)
        collided.append(res.collided)
        steps.append(res.steps)
        paths.append(res.path)
        invalid.append(res.invalid_code)
        if progress:
            print(f"rollouts {start + n}/{episodes}: success so far {np.concatenate(success).mean():.3f}", flush=True)
    ok, hit = np.concatenate(success), np.concatenate(collided)
    path_all, bad = np.concatenate(paths), np.concatenate(invalid)
    counts = path_histogram(np.where(ok, path_all, -1), NUM_PATHS)
    return RolloutResult(
        episodes=episodes,
        success_rate=float(ok.mean()),
        entropy=behaviour_entropy(counts),
        kl_to_uniform=path_kl(counts),
        mode_counts=[int(c) for c in counts],
        invalid_codes=int(np.sum(ok & bad)),
        collisions=int(hit.sum()),
        timeouts=int(np.sum(~ok & ~hit)),
        mean_steps=float(np.concatenate(steps).mean()),
        trajectories=trajectories,
        paths=np.where(ok, path_all, -1),
    )


def plot_trajectories(result: RolloutResult, path: str | os.PathLike[str], title: str = "") -> None:
    """Save a PNG of the actual trajectories coloured by path (grey: failed or invalid), with obstacles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 6))
    cmap = plt.get_cmap("hsv", NUM_PATHS + 1)
    for xy, p in zip(result.trajectories, result.paths, strict=True):
        color = cmap(int(p)) if p >= 0 else (0.5, 0.5, 0.5, 0.6)
        ax.plot(xy[:, 0], xy[:, 1], color=color, lw=0.8, alpha=0.7)
    for (cx, cy), r, cd in zip(OBSTACLES, OBSTACLE_RADII, COLLISION_DIST, strict=True):
        ax.add_patch(plt.Circle((cx, cy), r, color="black"))
        ax.add_patch(plt.Circle((cx, cy), cd, fill=False, ls="--", color="black", lw=0.6))
    ax.axhline(FINISH_Y, color="green", ls="--", lw=1.0)
    ax.set(xlim=(0.15, 0.85), ylim=(-0.32, 0.42), xlabel="x [m]", ylabel="y [m]", aspect="equal")
    ax.set_title(title or f"success {result.success_rate:.2f}, entropy {result.entropy:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
