"""Pushing trajectory figure: pusher paths (left) and block-centre paths (right), coloured by mode."""

from __future__ import annotations

import os

import numpy as np

from vdd_ros.tasks.pushing.env import BLOCK_XY, START_X, START_Y
from vdd_ros.tasks.pushing.readout import BLOCK_NAMES, MODE_NAMES, SUCCESS_RADIUS, ZONES

ACTUAL_XY = slice(2, 4)  # observation columns actual_x, actual_y
_FAILED = (0.5, 0.5, 0.5, 0.5)


def plot_trajectories(
    trajectories: list[np.ndarray], modes: np.ndarray, path: str | os.PathLike[str], title: str
) -> None:
    """Save a PNG of pusher and block paths coloured by mode (grey: no mode), over the zones and start area."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 5.8), sharey=True)
    colors = ("tab:blue", "tab:orange", "tab:purple", "tab:brown")  # not red/green: those are the zones
    for obs, m in zip(trajectories, modes, strict=True):
        color = colors[int(m)] if m >= 0 else _FAILED
        axes[0].plot(obs[:, ACTUAL_XY][:, 0], obs[:, ACTUAL_XY][:, 1], color=color, lw=0.7, alpha=0.6)
        for cols in BLOCK_XY:
            axes[1].plot(obs[:, cols][:, 0], obs[:, cols][:, 1], color=color, lw=0.7, alpha=0.6)
            axes[1].plot(*obs[0, cols], "o", color="black", ms=2)
    for ax in axes:
        for centre, name in zip(ZONES, BLOCK_NAMES, strict=True):
            ax.add_patch(plt.Circle(centre, SUCCESS_RADIUS, color=name, alpha=0.25))
        start = plt.Rectangle((START_X[0], START_Y[0]), START_X[1] - START_X[0], START_Y[1] - START_Y[0], fill=False)
        ax.add_patch(start)
        ax.set(xlim=(0.15, 0.85), ylim=(-0.25, 0.45), xlabel="x [m]", aspect="equal")
    axes[0].set(ylabel="y [m]", title="pusher")
    axes[1].set_title("blocks (dots: start)")
    handles = [plt.Line2D([], [], color=colors[k], label=name) for k, name in enumerate(MODE_NAMES)]
    handles.append(plt.Line2D([], [], color=_FAILED, label="no mode"))
    axes[1].legend(handles=handles, fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.96))  # room for the suptitle
    fig.savefig(path, dpi=110)
    plt.close(fig)
