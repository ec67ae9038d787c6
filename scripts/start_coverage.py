"""How well a student's experts cover the teacher's modes at demonstration starts, over training snapshots.

For the first ``--states`` start windows (step 0 of each demonstration) it draws 16 teacher
chunks per window and reports, for each MoE snapshot, the share of teacher chunks within
``--radius`` (normalised action units) of some expert mean, and the mean largest gating
weight; with ``--plot`` it draws coverage against iteration, one line per run. Snapshots are
the trainer's ``checkpoint/model-<iteration>.safetensors`` files (the trainer keeps the
newest two, so copy them aside while a run goes). Diagnostic for docs/results.md ("Pushing").
Example: start_coverage.py runs/demo_pushing/teacher_ddpm runs/demo_pushing/demos.safetensors
  runs/demo_pushing/distill_vdd/best/moe_config.json run_a=snaps_a/ run_b=snaps_b/ --plot out.png
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

import numpy as np
import torch
from safetensors.torch import load_file

from vdd_ros.data.dataset import episode_steps, load_dataset, make_windows
from vdd_ros.moe.policy import GaussianMoE, split_description
from vdd_ros.teacher.checkpoint import load_teacher


def coverage(moe: GaussianMoE, obs: torch.Tensor, teacher_chunks: torch.Tensor, radius: float) -> tuple[float, float]:
    """(share of teacher chunks near an expert mean, mean largest gating weight) at these states."""
    with torch.no_grad():
        out = moe(obs)
    nearest = torch.cdist(teacher_chunks, out.mean).min(-1).values
    return float((nearest < radius).float().mean()), float(out.log_gating.exp().max(-1).values.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("dataset")
    parser.add_argument("moe_config", help="moe_config.json of the runs (same architecture for all)")
    parser.add_argument("runs", nargs="+", help="name=folder of model-<iteration>.safetensors snapshots")
    parser.add_argument("--states", type=int, default=60)
    parser.add_argument("--radius", type=float, default=1.5)
    parser.add_argument("--plot", default="")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher, meta = load_teacher(args.teacher)
    ds = load_dataset(args.dataset)
    obs, _ = make_windows(ds, meta.obs_window, meta.act_chunk)
    starts = np.nonzero(episode_steps(ds) == 0)[0][: args.states]
    obs_t = torch.from_numpy(meta.obs_norm.normalize(obs[starts]))
    chunks = torch.stack([teacher.sample(obs_t).flatten(1) for _ in range(16)], 1)
    shape, config = split_description(json.loads(pathlib.Path(args.moe_config).read_text()), args.moe_config)
    curves: dict[str, list[tuple[int, float]]] = {}
    for spec in args.runs:
        name, folder = spec.split("=", 1)
        for path in sorted(pathlib.Path(folder).glob("model-*.safetensors")):
            moe = GaussianMoE(shape, config)
            moe.load_state_dict(load_file(path))
            moe.eval()
            iteration = int(re.findall(r"\d+", path.name)[-1])
            share, peak = coverage(moe, obs_t, chunks, args.radius)
            curves.setdefault(name, []).append((iteration, share))
            print(f"{name} {iteration}: covered {share:.2f}, largest gating weight {peak:.2f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, points in curves.items():
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"teacher chunks within {args.radius:g} of an expert")
        ax.set_title("start-state mode coverage")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
