"""Does VDD put one expert on each mode in higher action dimensions? Noise schedules vs EM.

    PYTHONPATH=. nice -n 19 .venv/bin/python scripts/vdd_modes_study.py [--dims 6 16] [--seeds 0 1 2] [--experts 3 6]

The teacher is an exact-score, state-conditioned Gaussian mixture
(``GaussianMixtureTeacher.random``: 3 modes of weights 0.5/0.3/0.2, pairwise 2.0 apart, std
0.3, each mode drifting 0.3 per unit of the 2-D state; D = 6 is one 6-D action, D = 16 an
H = 8 chunk of 2-D actions). The student (learned gating, diagonal experts) is distilled on
2048 states s ~ U[-1, 1]^2 with each noise setting, and an EM-fitted MoE of the same size on
the same states with one teacher sample each is the baseline. On 256 fresh states it reports
coverage (fraction of (state, mode) pairs with an expert mean within ``--tol``), the gating's
TV to the true mode weights (each expert's gating counted for its nearest mode), and both KL
directions by Monte Carlo (256 draws per state). Prints one markdown table row per
(D, experts, method), averaged over the seeds, with the per-seed coverage.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from vdd_ros.distill.config import TrainConfig, VDDConfig
from vdd_ros.distill.em_baseline import EMTrainer
from vdd_ros.distill.vdd import VDDTrainer
from vdd_ros.moe.config import MoEConfig
from vdd_ros.moe.policy import GaussianMoE, mixture_log_prob
from vdd_ros.teacher.gmm import GaussianMixtureTeacher

WEIGHTS = (0.5, 0.3, 0.2)
# name -> VDD settings (noise levels are sigmas of the exact mixture score), or None for EM
METHODS: dict[str, VDDConfig | None] = {
    "uniform 0.2-0.5 (paper)": VDDConfig(noise_low=0.2, noise_high=0.5),
    "uniform 0 (clean score)": VDDConfig(noise_low=0.0, noise_high=0.0),
    "anneal 0.5 -> 0": VDDConfig(noise_low=0.0, noise_high=0.5, noise_schedule="anneal"),
    "anneal 1 -> 0": VDDConfig(noise_low=0.0, noise_high=1.0, noise_schedule="anneal"),
    "EM on teacher samples": None,
}


def teacher_for(dim: int, seed: int) -> GaussianMixtureTeacher:
    """D = 6: one 6-D action; D = 16: an H = 8 chunk of 2-D actions."""
    act_dim, chunk = (dim, 1) if dim <= 8 else (2, dim // 2)
    return GaussianMixtureTeacher.random(WEIGHTS, act_dim, chunk, seed=seed)


def fit(
    teacher: GaussianMixtureTeacher, vdd: VDDConfig | None, experts: int, args: argparse.Namespace, seed: int
) -> GaussianMoE:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(args.states, 1, 2, generator=g) * 2 - 1
    actions = teacher.sample(obs, generator=g)
    torch.manual_seed(seed)
    moe = GaussianMoE(
        teacher.shape,
        MoEConfig(num_experts=experts, hidden=args.hidden, trunk_blocks=1, head_hidden=args.hidden, gating="learned"),
    )
    train = TrainConfig(iterations=args.iterations, batch_size=args.batch, lr=args.lr, obs_noise=0.0)
    if vdd is None:  # EM sees one sample per state, so give it as many updates as VDD's expert steps
        train = dataclasses.replace(train, iterations=2 * args.iterations)
        EMTrainer(moe, obs, actions, train, seed=seed).run()
    else:
        vdd = dataclasses.replace(vdd, samples_per_expert=args.samples)
        VDDTrainer(moe, teacher, obs, actions, train, vdd, seed=seed).run()
    return moe.eval()


@torch.no_grad()
def evaluate(teacher: GaussianMixtureTeacher, moe: GaussianMoE, tol: float, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(10_000 + seed)
    n, m = 256, 256
    obs = torch.rand(n, 1, 2, generator=g) * 2 - 1
    out = moe(obs)
    weights = teacher.mode_weights(obs, out.mean, out.log_gating.exp())
    # KL by Monte Carlo: m draws per state from each side
    obs_m = obs.repeat_interleave(m, 0)
    k = torch.multinomial(out.log_gating.exp(), m, replacement=True, generator=g)  # (n, m)
    mean = out.mean.gather(1, k[..., None].expand(-1, -1, out.mean.shape[-1]))
    scale = out.scale.gather(1, k[..., None].expand(-1, -1, out.scale.shape[-1]))
    q_draws = mean + scale * torch.randn(mean.shape, generator=g)
    p_draws = teacher.sample(obs_m, generator=g).reshape(n, m, -1)
    shape = (n * m, teacher.act_chunk, teacher.act_dim)
    reverse = mixture_log_prob(q_draws, out) - teacher.log_prob(q_draws.reshape(shape), obs_m).view(n, m)
    forward = teacher.log_prob(p_draws.reshape(shape), obs_m).view(n, m) - mixture_log_prob(p_draws, out)
    return {
        "coverage": float(teacher.mode_coverage(obs, out.mean, tol).float().mean()),
        "tv": float(0.5 * (weights - teacher.weights).abs().sum(-1).mean()),
        "kl_rev": float(reverse.mean()),
        "kl_fwd": float(forward.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[6, 16])
    parser.add_argument("--experts", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8, help="V, samples per expert and state")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--states", type=int, default=2048)
    parser.add_argument("--tol", type=float, default=0.3, help="coverage radius (the modes' std)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| D | experts | method | coverage | coverage per seed | gating TV | KL(q‖π) | KL(π‖q) |")
    print("|---|---|---|---|---|---|---|---|")
    for dim in args.dims:
        for experts in args.experts:
            for name in args.methods:
                rows = []
                for seed in args.seeds:
                    teacher = teacher_for(dim, seed)
                    rows.append(evaluate(teacher, fit(teacher, METHODS[name], experts, args, seed), args.tol, seed))
                mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
                per_seed = " / ".join(f"{r['coverage']:.2f}" for r in rows)
                print(
                    f"| {dim} | {experts} | {name} | {mean['coverage']:.2f} | {per_seed} | {mean['tv']:.3f} "
                    f"| {mean['kl_rev']:.2f} | {mean['kl_fwd']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
