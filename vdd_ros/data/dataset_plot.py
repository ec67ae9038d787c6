"""A one-page look at a demonstration dataset: each column's histogram and a few episodes over time.

Written next to an imported file so a person sees at a glance a column in the wrong unit, a
constant column or a jump at an episode boundary before training on it.
"""

from __future__ import annotations

import os

import numpy as np

from vdd_ros.data.dataset import DemoDataset


def plot_dataset(ds: DemoDataset, path: str | os.PathLike[str], episodes: int = 3, title: str = "") -> None:
    """Save a PNG: row 1 per-column histograms over all rows, row 2 the first ``episodes`` episodes over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = (("observation", ds.obs_names, ds.observations), ("action", ds.act_names, ds.actions))
    cols = len(ds.obs_names) + len(ds.act_names)
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 5.2), squeeze=False)
    column = 0
    for kind, names, arrays in groups:
        flat = np.concatenate(arrays)
        for d, name in enumerate(names):
            hist, time_ax = axes[0][column], axes[1][column]
            hist.hist(flat[:, d], bins=40, color="tab:blue" if kind == "observation" else "tab:orange")
            hist.set_title(name, fontsize=9)
            for e in range(min(episodes, len(arrays))):
                t = np.arange(len(arrays[e])) * ds.control_period_s
                time_ax.plot(t, arrays[e][:, d], lw=0.9, label=f"episode {e}")
            time_ax.set_xlabel("time [s]", fontsize=8)
            column += 1
    axes[1][0].legend(fontsize=7)
    fig.suptitle(title or f"{ds.num_episodes} episodes, {sum(len(a) for a in ds.actions)} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
