"""How well a student's experts cover the teacher's modes at demonstration starts, over training snapshots.

For the first ``--states`` start windows (step 0 of each demonstration) it draws 16 teacher
chunks per window and reports, for each MoE snapshot, the share of teacher chunks within
``--radius`` (normalised action units) of some expert mean, and the mean largest gating
weight, and how often the gating picks an expert whose first chunk heads for the block nearer
to the pusher (teacher and demonstrations for comparison: the demonstrator prefers it with
probability 0.75); ``--refit-gating STEPS`` also fits a fresh gating to each snapshot's frozen
experts, which tells a gating that lost the preference from experts that no longer allow it.
With ``--plot`` it draws coverage and preference against iteration, one line per run. Snapshots are
the trainer's ``checkpoint/model-<iteration>.safetensors`` files (the trainer keeps the
newest two, so copy them aside while a run goes). Diagnostic for docs/results.md ("Pushing").
Example: start_coverage.py runs/demo_pushing/teacher_ddpm runs/demo_pushing/demos.safetensors
  runs/demo_pushing/distill_vdd/best/moe_config.json run_a=snaps_a/ run_b=snaps_b/ --plot out.png
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import re
from collections.abc import Callable

import numpy as np
import torch
from safetensors.torch import load_file

from vdd_ros.data.dataset import episode_steps, load_dataset, make_windows
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.distill.vdd import responsibility_cross_entropy
from vdd_ros.moe.policy import GaussianMoE, split_description
from vdd_ros.tasks.pushing.env import BLOCK_XY
from vdd_ros.teacher.checkpoint import load_teacher


def coverage(
    moe: GaussianMoE, obs: torch.Tensor, teacher_chunks: torch.Tensor, radius: float, nearer: Callable
) -> tuple[float, float, float]:
    """(share of teacher chunks near an expert mean, mean largest gating weight, gating mass on
    experts heading for the nearer block) at these states."""
    with torch.no_grad():
        out = moe(obs)
    nearest = torch.cdist(teacher_chunks, out.mean).min(-1).values
    gating = out.log_gating.exp()
    to_nearer = float((gating.numpy() * nearer(out.mean)).sum(-1).mean())
    return float((nearest < radius).float().mean()), float(gating.max(-1).values.mean()), to_nearer


def heads_for_nearer(obs: np.ndarray, chunks: torch.Tensor, act_norm: Normalizer) -> np.ndarray:
    """(N, S): does each of S normalised chunks per raw start window (N, T, obs_dim) approach the
    block nearer to the pusher more than the other block? Pushing's actions are position deltas."""
    last = obs[:, -1]
    steps = act_norm.denormalize(chunks.reshape(*chunks.shape[:2], -1, 2).numpy())
    desired = last[:, None, 0:2]
    end = desired + steps.sum(2)
    approach = np.stack(
        [
            np.linalg.norm(desired - last[:, None, c], axis=-1) - np.linalg.norm(end - last[:, None, c], axis=-1)
            for c in BLOCK_XY
        ],
        -1,
    )  # (N, S, 2): how much nearer each block the chunk ends
    red_nearer = np.linalg.norm(last[:, 2:4] - last[:, BLOCK_XY[0]], axis=-1) < np.linalg.norm(
        last[:, 2:4] - last[:, BLOCK_XY[1]], axis=-1
    )
    to_red = approach[..., 0] > approach[..., 1]
    return to_red == red_nearer[:, None]


def refit_gating(
    moe: GaussianMoE, obs: torch.Tensor, actions: torch.Tensor, starts: torch.Tensor, steps: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fresh gating on the raw (normalised) window, fitted by the trainer's EM step to dataset
    actions under these frozen experts: the preference the experts allow a gating to express.

    Batches of 1024 windows, a quarter from ``starts`` (as ``train.start_fraction`` 0.25).
    """
    inputs = obs.shape[1] * obs.shape[2]
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(inputs, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
        torch.nn.SiLU(), torch.nn.Linear(128, moe.config.num_experts),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = torch.cat([starts[torch.randint(len(starts), (256,))], torch.randint(len(obs), (768,))])
        with torch.no_grad():
            out = moe(obs[batch])
        loss = responsibility_cross_entropy(torch.log_softmax(net(obs[batch]), -1), out.mean, out.scale, actions[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda windows: torch.softmax(net(windows), -1).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("dataset")
    parser.add_argument("moe_config", help="moe_config.json of the runs (same architecture for all)")
    parser.add_argument("runs", nargs="+", help="name=folder of model-<iteration>.safetensors snapshots")
    parser.add_argument("--states", type=int, default=60)
    parser.add_argument("--radius", type=float, default=1.5)
    parser.add_argument("--plot", default="")
    parser.add_argument(
        "--refit-gating", type=int, default=0, metavar="STEPS",
        help="> 0: also fit a fresh gating on each snapshot's frozen experts and report its preference",
    )  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher, meta = load_teacher(args.teacher)
    ds = load_dataset(args.dataset)
    obs, act = make_windows(ds, meta.obs_window, meta.act_chunk)
    starts = np.nonzero(episode_steps(ds) == 0)[0][: args.states]
    obs_t = torch.from_numpy(meta.obs_norm.normalize(obs[starts]))
    chunks = torch.stack([teacher.sample(obs_t).flatten(1) for _ in range(16)], 1)
    nearer = functools.partial(heads_for_nearer, obs[starts], act_norm=meta.act_norm)
    demo_chunks = torch.from_numpy(meta.act_norm.normalize(act[starts])).flatten(1)[:, None]
    references = {"demonstrations": float(nearer(demo_chunks).mean()), "teacher": float(nearer(chunks).mean())}
    print("first chunk heads for the nearer block: " + ", ".join(f"{k} {v:.2f}" for k, v in references.items()))
    all_obs = torch.from_numpy(meta.obs_norm.normalize(obs)).float()
    all_act = torch.from_numpy(meta.act_norm.normalize(act)).flatten(1).float()
    start_pool = torch.from_numpy(np.nonzero(episode_steps(ds) < 4)[0])
    shape, config = split_description(json.loads(pathlib.Path(args.moe_config).read_text()), args.moe_config)
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for spec in args.runs:
        name, folder = spec.split("=", 1)
        for path in sorted(pathlib.Path(folder).glob("model*.safetensors")):
            moe = GaussianMoE(shape, config)
            moe.load_state_dict(load_file(path))
            moe.eval()
            iteration = int((re.findall(r"\d+", path.name) or [-1])[-1])  # -1: a final model.safetensors
            share, peak, to_nearer = coverage(moe, obs_t, chunks, args.radius, nearer)
            curves.setdefault(name, []).append((iteration, share, to_nearer))
            line = (
                f"{name} {iteration}: covered {share:.2f}, largest gating weight {peak:.2f}, "
                f"gating on experts heading for the nearer block {to_nearer:.2f}"
            )
            if args.refit_gating > 0:
                gating = refit_gating(moe, all_obs, all_act, start_pool, args.refit_gating)
                with torch.no_grad():
                    means = moe(obs_t).mean
                refit = float((gating(obs_t).numpy() * nearer(means)).sum(-1).mean())
                line += f", a refitted gating {refit:.2f}"
            print(line, flush=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (cover, prefer) = plt.subplots(1, 2, figsize=(11, 3.8))
        for name, points in curves.items():
            iterations, shares, to_nearer = zip(*points, strict=True)
            cover.plot(iterations, shares, marker="o", label=name)
            prefer.plot(iterations, to_nearer, marker="o", label=name)
        for (label, value), style in zip(references.items(), (":", "--"), strict=True):
            prefer.axhline(value, color="k", linestyle=style, label=f"{label} {value:.2f}")
        cover.set_ylabel(f"teacher chunks within {args.radius:g} of an expert")
        cover.set_title("start-state mode coverage")
        prefer.set_ylabel("gating on nearer-block experts")
        prefer.set_title("state-dependent preference at the start")
        for ax in (cover, prefer):
            ax.set_xlabel("iteration")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
