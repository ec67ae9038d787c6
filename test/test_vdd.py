"""VDD trainer: stop-gradient placement, the 8-mode ring toy check, NaN guard, resume, EM baseline."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vdd_ros.data.shape import PolicyShape
from vdd_ros.distill.config import TrainConfig, VDDConfig
from vdd_ros.distill.em_baseline import EMTrainer
from vdd_ros.distill.vdd import VDDTrainer, gating_loss, log_q_tilde, vdd_expert_loss
from vdd_ros.moe.config import MoEConfig
from vdd_ros.moe.policy import GaussianMoE, MoEOutput
from vdd_ros.teacher.base import Teacher
from vdd_ros.teacher.ring_gmm import RingGMMTeacher
from vdd_ros.util.checkpoint import NonFiniteError

torch.set_num_threads(1)


class ConstantScoreTeacher(Teacher):
    """score = c everywhere (c is a Parameter, to prove no gradient reaches a teacher); records noise levels."""

    def __init__(self, c: tuple[float, ...], obs_dim: int = 1, obs_window: int = 1, nan_after: int | None = None):
        super().__init__()
        self.obs_dim, self.act_dim, self.obs_window, self.act_chunk = obs_dim, len(c), obs_window, 1
        self.c = nn.Parameter(torch.tensor(c))
        self.levels: list[torch.Tensor] = []
        self.calls, self.nan_after = 0, nan_after

    def score(self, actions, obs, noise_level):
        self.calls += 1
        out = self.c.expand_as(actions).clone()
        return out * float("nan") if self.nan_after is not None and self.calls > self.nan_after else out

    def _sample(self, obs, steps, noise):
        return torch.zeros(obs.shape[0], 1, self.act_dim)

    default_sample_steps = 1
    sampler = "none"

    def _noise_range(self, low, high):
        return low, high

    def sample_noise_levels(self, n, low=None, high=None, generator=None):
        self.levels.append(low + (high - low) * torch.rand(n, generator=generator))
        return self.levels[-1]


def _moe(z: int, gating: str = "learned", **kw) -> GaussianMoE:
    torch.manual_seed(0)
    return GaussianMoE(PolicyShape(1, 2), MoEConfig(num_experts=z, hidden=32, head_hidden=32, gating=gating, **kw))


def test_score_is_a_constant_and_gives_the_reparameterised_gradient():
    """One expert, constant score c: q~ = 1, so d loss / d mu = -c exactly, and the teacher gets no gradient."""
    teacher = ConstantScoreTeacher((1.5, -2.0))
    moe = _moe(1, gating="uniform")
    obs = torch.ones(8, 1, 1)
    loss, _ = vdd_expert_loss(moe, teacher, obs, samples_per_expert=4, noise_low=0.2, noise_high=0.5)
    loss.backward()
    assert teacher.c.grad is None
    assert torch.allclose(moe.mean_head[-1].bias.grad, -teacher.c.detach(), atol=1e-6)


def test_one_noise_level_per_state_expert_sample():
    teacher = ConstantScoreTeacher((0.0, 0.0))
    vdd_expert_loss(_moe(3), teacher, torch.ones(4, 1, 1), samples_per_expert=5, noise_low=0.2, noise_high=0.5)
    (levels,) = teacher.levels
    assert levels.shape == (4 * 3 * 5,) and levels.unique().numel() == levels.numel()
    assert levels.min() >= 0.2 and levels.max() <= 0.5


def test_entropy_gets_full_gradient_and_gating_weight_is_detached():
    """Zero score and Z = 1: the loss is exactly -entropy; with Z > 1 the gating net gets no gradient."""
    moe = _moe(1, gating="uniform")
    loss, stats = vdd_expert_loss(moe, ConstantScoreTeacher((0.0, 0.0)), torch.ones(4, 1, 1), 3, 0.0, 0.0)
    assert loss.item() == pytest.approx(-stats["expert_entropy"], abs=1e-5)
    loss.backward()
    assert moe.cov_head[-1].bias.grad.abs().min() > 0

    moe = _moe(4)
    loss, _ = vdd_expert_loss(moe, ConstantScoreTeacher((0.3, 0.1)), torch.ones(4, 1, 1), 3, 0.0, 0.0)
    loss.backward()
    assert all(p.grad is None for p in moe.gating_parameters())


def test_uniform_expert_weighting_trains_experts_the_gating_ignores():
    """With q(z|s) ~ 0 for an expert, the paper's weighting leaves it untrained in that state; uniform does not."""
    moe = _moe(2)
    with torch.no_grad():  # the gating puts all weight on expert 0 everywhere
        last = [m for m in moe.gating_net.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([30.0, -30.0]))
    teacher, obs = ConstantScoreTeacher((0.3, 0.1)), torch.ones(4, 1, 1)
    grads = {}
    for weighting in ("gating", "uniform"):
        moe.zero_grad()
        loss, _ = vdd_expert_loss(moe, teacher, obs, 3, 0.0, 0.0, expert_weighting=weighting)
        loss.backward()
        grads[weighting] = moe.mean_head[-1].bias.grad.view(2, 2).abs().sum(-1)  # per expert
    assert grads["gating"][1] < 1e-9 < grads["gating"][0]
    assert grads["uniform"][1] > 0.1 * grads["uniform"][0]


def test_q_tilde_gets_gradient_only_through_the_sample():
    b, z, v, d = 2, 3, 4, 2
    mean = torch.randn(b, z, d, requires_grad=True)
    scale = (0.5 + torch.rand(b, z, d)).requires_grad_()
    logits = torch.randn(b, z, requires_grad=True)
    samples = torch.randn(b, z, v, d, requires_grad=True)
    lq = log_q_tilde(samples, MoEOutput(torch.log_softmax(logits, -1), mean, scale))
    assert lq.shape == (b, z, v) and torch.all(lq <= 0)
    lq.sum().backward()
    assert mean.grad is None and scale.grad is None and logits.grad is None
    assert samples.grad.abs().sum() > 0
    # it is the log posterior of the sample's own expert, over all Z experts
    joint = torch.distributions.Normal(mean[:, None, None], scale[:, None, None]).log_prob(samples[:, :, :, None])
    joint = joint.sum(-1) + torch.log_softmax(logits, -1)[:, None, None]
    ref = torch.log_softmax(joint, -1).diagonal(dim1=1, dim2=3).permute(0, 2, 1)
    assert torch.allclose(lq, ref.detach(), atol=1e-5)


def test_gating_step_trains_only_the_gating_net():
    moe = _moe(4)
    gating_loss(moe, torch.randn(16, 1, 1), torch.randn(16, 2)).backward()
    assert all(p.grad is None for p in moe.expert_parameters())
    assert all(p.grad is not None for p in moe.gating_parameters())


def _sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> float:
    theta = torch.randn(64, 2, generator=g)
    theta = theta / theta.norm(dim=1, keepdim=True)
    return ((x @ theta.T).sort(0).values - (y @ theta.T).sort(0).values).abs().mean().item()


def _distil_ring(use_q_tilde: bool, iterations: int) -> tuple[torch.Tensor, torch.Tensor, RingGMMTeacher]:
    """The VDD toy setting (§7): 8 diagonal experts, uniform gating, batch 32, V = 64, lr 5e-4, exact score."""
    teacher = RingGMMTeacher()
    moe = GaussianMoE(
        PolicyShape(1, 2),
        MoEConfig(num_experts=8, hidden=64, trunk_blocks=1, head_hidden=64, gating="uniform", mean_init_bound=0.5),
    )
    obs = torch.ones(64, 1, 1)
    train = TrainConfig(iterations=iterations, batch_size=32, lr=5e-4, obs_noise=0.0)
    vdd = VDDConfig(samples_per_expert=64, expert_steps=1)
    VDDTrainer(moe, teacher, obs, teacher.sample(obs), train, vdd, use_q_tilde=use_q_tilde).run()
    with torch.no_grad():
        out = moe(torch.ones(1, 1, 1))
    return out.mean[0], out.scale[0], teacher


def _matched_modes(mean: torch.Tensor, modes: torch.Tensor, radius: float) -> set[int]:
    dist = torch.cdist(mean, modes)
    return {int(k) for k, r in zip(dist.argmin(1), dist.min(1).values, strict=True) if r < radius}


def test_ring_toy_distillation_and_negative_control():
    """Pass criteria of vdd_method.md §7, plus a distribution metric.

    Sliced Wasserstein-1 (64 directions) between 4k student and 4k true samples: two
    independent true sample sets score ~0.03 (the finite-sample floor) and the collapsed
    negative control ~0.28, so the threshold 0.08 sits well above the floor and far below
    a collapse.
    """
    torch.manual_seed(0)
    mean, std, teacher = _distil_ring(use_q_tilde=True, iterations=600)
    dist = torch.cdist(mean, teacher.modes)
    assignment = dist.argmin(1)
    assert sorted(assignment.tolist()) == list(range(8))  # one-to-one
    assert dist.min(1).values.max() < 0.3
    assert std.min() > 0.35 and std.max() < 0.65

    g = torch.Generator().manual_seed(1)
    n = 4000
    k = torch.randint(8, (n,), generator=g)
    student = mean[k] + std[k] * torch.randn(n, 2, generator=g)
    truth = teacher.sample(torch.ones(n, 1, 1), generator=g).view(n, 2)
    assert _sliced_wasserstein(student, truth, g) < 0.08

    torch.manual_seed(0)
    mean_c, std_c, _ = _distil_ring(use_q_tilde=False, iterations=300)
    assert len(_matched_modes(mean_c, teacher.modes, 0.5)) < 8
    student_c = mean_c[k] + std_c[k] * torch.randn(n, 2, generator=g)
    assert _sliced_wasserstein(student_c, truth, g) > 0.08


def _trainer(teacher: Teacher, iterations: int = 10) -> VDDTrainer:
    moe = _moe(3)
    obs = torch.randn(64, 1, 1)
    train = TrainConfig(iterations=iterations, batch_size=8, obs_noise=0.0)
    vdd = VDDConfig(samples_per_expert=2, noise_low=0.2, noise_high=0.5)
    return VDDTrainer(moe, teacher, obs, torch.randn(64, 1, 2), train, vdd, seed=3)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    # each iteration calls the score twice (2 expert steps); NaN from iteration 5 on
    trainer = _trainer(ConstantScoreTeacher((0.1, 0.2), nan_after=8))
    with pytest.raises(NonFiniteError, match="iteration 4"):
        trainer.run(checkpoint_dir=tmp_path, checkpoint_every=2)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["iteration"] == 4
    fresh = _trainer(ConstantScoreTeacher((0.1, 0.2)))
    fresh.load_checkpoint(tmp_path)
    assert fresh.iteration == 4
    assert all(torch.isfinite(p).all() for p in fresh.moe.parameters())


def test_resume_continues_exactly(tmp_path):
    straight = _trainer(ConstantScoreTeacher((0.1, 0.2)))
    straight.run()

    first = _trainer(ConstantScoreTeacher((0.1, 0.2)))
    first.extra = {"note": "kept"}
    assert first.run(checkpoint_dir=tmp_path, checkpoint_every=4, should_stop=lambda: first.iteration >= 6) is False
    resumed = _trainer(ConstantScoreTeacher((0.1, 0.2)))  # a new process after a kill
    assert resumed.load_checkpoint(tmp_path)
    assert resumed.iteration == 6 and resumed.extra == {"note": "kept"}
    resumed.run(checkpoint_dir=tmp_path, checkpoint_every=4)
    for a, b in zip(straight.moe.state_dict().values(), resumed.moe.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # the last two checkpoints are kept
        "model-00000008.safetensors",
        "model-00000010.safetensors",
        "optim-00000008.safetensors",
        "optim-00000010.safetensors",
        "state.json",
        "state.prev.json",
    ]


def test_em_baseline_finds_both_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    actions = centres[torch.randint(2, (512,))] + 0.2 * torch.randn(512, 2)
    moe = _moe(2, mean_init_bound=1.0)
    train = TrainConfig(iterations=300, batch_size=64, lr=3e-3, obs_noise=0.0)
    EMTrainer(moe, torch.ones(512, 1, 1), actions.view(512, 1, 2), train).run()
    with torch.no_grad():
        out = moe(torch.ones(1, 1, 1))
    dist = torch.cdist(out.mean[0], centres)
    assert sorted(dist.argmin(1).tolist()) == [0, 1] and dist.min(1).values.max() < 0.2
    assert torch.allclose(out.log_gating.exp(), torch.full((1, 2), 0.5), atol=0.1)


def test_jitter_uses_the_resolved_obs_noise_and_refuses_an_unresolved_one():
    """One jitter implementation: std = train.obs_noise; < 0 ("the teacher's") must be resolved first."""
    obs, actions = torch.zeros(4096, 1, 1), torch.zeros(4096, 1, 2)
    train = TrainConfig(iterations=1, obs_noise=0.25)
    jittered = EMTrainer(_moe(2), obs, actions, train)._jitter(obs)
    assert jittered.std().item() == pytest.approx(0.25, rel=0.05)
    assert torch.equal(EMTrainer(_moe(2), obs, actions, TrainConfig(iterations=1, obs_noise=0.0))._jitter(obs), obs)
    with pytest.raises(ValueError, match="obs_noise"):
        EMTrainer(_moe(2), obs, actions, TrainConfig(iterations=1))


def test_start_fraction_draws_that_share_of_each_batch_from_demonstration_starts():
    """start_fraction: batches hold at least that share of early windows; it needs the windows' steps."""
    steps = torch.arange(1000) % 100  # ten demonstrations of 100 windows
    obs, actions = steps.float().view(1000, 1, 1), torch.zeros(1000, 1, 2)
    train = TrainConfig(iterations=1, obs_noise=0.0, start_fraction=0.5, start_steps=3)
    drawn = steps[EMTrainer(_moe(2), obs, actions, train, episode_steps=steps)._data_indices(1000)]
    early = (drawn < 3).float().mean().item()
    assert 0.5 <= early < 0.56  # 500 from the starts, and about 3 % of the uniform half
    off = TrainConfig(iterations=1, obs_noise=0.0)
    assert (steps[EMTrainer(_moe(2), obs, actions, off)._data_indices(1000)] < 3).float().mean().item() < 0.08
    with pytest.raises(ValueError, match="episode_steps"):
        EMTrainer(_moe(2), obs, actions, train)
