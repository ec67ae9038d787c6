"""VDD in higher action dimensions: one expert per mode of a state-conditioned 6-D mixture, and the noise schedule.

The teacher is an exact-score Gaussian mixture (3 modes, weights 0.5 / 0.3 / 0.2, 6-D
actions, modes drifting with a 2-D state), so a missed mode is the distiller's fault.
docs/results.md ("VDD in higher action dimensions: noise schedule") has the measurements
behind the settings and thresholds.
"""

from __future__ import annotations

import pytest
import torch

from vdd_ros.distill.config import TrainConfig, VDDConfig
from vdd_ros.distill.vdd import VDDTrainer, annealed_noise_range
from vdd_ros.moe.config import MoEConfig
from vdd_ros.moe.policy import GaussianMoE
from vdd_ros.teacher.gmm import GaussianMixtureTeacher

torch.set_num_threads(1)

WEIGHTS = (0.5, 0.3, 0.2)
TOL = 0.3  # coverage radius: the modes' std (the modes are 2.0 apart; each moves by up to 0.6 over the states)


def _distil(vdd: VDDConfig, seed: int = 0) -> tuple[GaussianMixtureTeacher, GaussianMoE]:
    """4 experts (one spare) with learned gating, distilled on 2048 states s ~ U[-1, 1]^2."""
    teacher = GaussianMixtureTeacher.random(WEIGHTS, act_dim=6, seed=seed)
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(2048, 1, 2, generator=g) * 2 - 1
    torch.manual_seed(seed)
    config = MoEConfig(num_experts=4, hidden=64, trunk_blocks=1, head_hidden=64, gating="learned")
    moe = GaussianMoE(teacher.shape, config)
    train = TrainConfig(iterations=300, batch_size=64, lr=3e-3, obs_noise=0.0)
    VDDTrainer(moe, teacher, obs, teacher.sample(obs, generator=g), train, vdd, seed=seed).run()
    return teacher, moe.eval()


def _coverage_and_tv(teacher: GaussianMixtureTeacher, moe: GaussianMoE) -> tuple[float, float]:
    """On 256 fresh states: the fraction of (state, mode) pairs with an expert mean within TOL,
    and the mean TV between the gating's mode weights and the true ones."""
    obs = torch.rand(256, 1, 2, generator=torch.Generator().manual_seed(99)) * 2 - 1
    with torch.no_grad():
        out = moe(obs)
    coverage = teacher.mode_coverage(obs, out.mean, TOL).float().mean().item()
    weights = teacher.mode_weights(obs, out.mean, out.log_gating.exp())
    return coverage, (0.5 * (weights - teacher.weights).abs().sum(-1)).mean().item()


def test_annealing_puts_one_expert_on_each_mode_with_the_right_weights():
    """Every (state, mode) pair has an expert within TOL, and the learned gating's mode weights
    are within TV 0.1 of (0.5, 0.3, 0.2). Measured with these settings on seeds 0-7: coverage
    1.00 and TV 0.02-0.03 on every seed (the clean score, sigma = 0 all run, misses a mode on
    2 of the 8 seeds, seed 0 among them)."""
    vdd = VDDConfig(samples_per_expert=8, noise_low=0.0, noise_high=1.0, noise_schedule="anneal")
    coverage, tv = _coverage_and_tv(*_distil(vdd))
    assert coverage == 1.0
    assert tv < 0.1


def test_anneal_lowers_the_upper_end_linearly_then_holds_the_low_end():
    assert annealed_noise_range(0.2, 0.5, 0.0, 0.8) == (0.2, 0.5)
    assert annealed_noise_range(0.2, 0.5, 0.4, 0.8) == pytest.approx((0.2, 0.35))
    assert annealed_noise_range(0.2, 0.5, 0.9, 0.8) == pytest.approx((0.2, 0.2))
    assert annealed_noise_range(0.2, 0.5, 0.0, 0.0) == pytest.approx((0.2, 0.2))  # fraction 0: low all run
    # 1.0 - (1.0 - 0.2) is 0.19999999999999996: the end of the anneal must not fall below the low end
    low, high = annealed_noise_range(0.2, 1.0, 1.0, 0.8)
    assert high >= low == 0.2
    # DDPM step indices stay whole steps
    assert [annealed_noise_range(1, 4, p, 1.0) for p in (0.0, 0.3, 0.5, 0.9, 1.0)] == [
        (1, 4),
        (1, 3),
        (1, 2),
        (1, 1),
        (1, 1),
    ]


def test_trainer_draws_from_the_scheduled_range():
    """uniform passes the configured bounds through (None = the teacher's default) all run;
    anneal resolves the teacher's defaults and narrows the range as the iterations pass."""
    teacher = GaussianMixtureTeacher.random(WEIGHTS, act_dim=6)
    moe = GaussianMoE(teacher.shape, MoEConfig(num_experts=3, hidden=8, head_hidden=8))
    obs, actions = torch.zeros(8, 1, 2), torch.zeros(8, 1, 6)
    train = TrainConfig(iterations=10, batch_size=4, obs_noise=0.0)
    uniform = VDDTrainer(moe, teacher, obs, actions, train, VDDConfig())
    assert uniform.current_noise_range() == (None, None)
    anneal = VDDTrainer(moe, teacher, obs, actions, train, VDDConfig(noise_high=0.5, noise_schedule="anneal"))
    seen = []
    while anneal.iteration < 10:
        seen.append(anneal.current_noise_range())
        anneal.run(until=anneal.iteration + 1)
    assert seen[0] == (0.0, 0.5) and seen[2] == pytest.approx((0.0, 0.5 * (1 - 0.2 / 0.8)))
    assert all(r == pytest.approx((0.0, 0.0)) for r in seen[8:])
