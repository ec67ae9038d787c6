"""Avoiding trajectory figure: the rod's actual path per episode, coloured by path, over the obstacles."""

from __future__ import annotations

import os

import numpy as np

from vdd_ros.tasks.avoiding.env import COLLISION_DIST, FINISH_Y, OBSTACLE_RADII, OBSTACLES
from vdd_ros.tasks.avoiding.readout import NUM_PATHS

ACTUAL_XY = slice(2, 4)  # observation columns actual_x, actual_y


def plot_trajectories(
    trajectories: list[np.ndarray], modes: np.ndarray, path: str | os.PathLike[str], title: str
) -> None:
    """Save a PNG of the actual trajectories coloured by path (grey: failed or invalid), with obstacles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 6))
    cmap = plt.get_cmap("hsv", NUM_PATHS + 1)
    for obs, p in zip(trajectories, modes, strict=True):
        color = cmap(int(p)) if p >= 0 else (0.5, 0.5, 0.5, 0.6)
        xy = obs[:, ACTUAL_XY]
        ax.plot(xy[:, 0], xy[:, 1], color=color, lw=0.8, alpha=0.7)
    for (cx, cy), r, cd in zip(OBSTACLES, OBSTACLE_RADII, COLLISION_DIST, strict=True):
        ax.add_patch(plt.Circle((cx, cy), r, color="black"))
        ax.add_patch(plt.Circle((cx, cy), cd, fill=False, ls="--", color="black", lw=0.6))
    ax.axhline(FINISH_Y, color="green", ls="--", lw=1.0)
    ax.set(xlim=(0.15, 0.85), ylim=(-0.32, 0.42), xlabel="x [m]", ylabel="y [m]", aspect="equal")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
