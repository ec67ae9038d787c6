"""GaussianMoE: initialisation per VDD §3, exact Gaussian maths, detached gating, pickle-free save/load."""

from __future__ import annotations

import json

import pytest
import torch

from vdd_ros.data.shape import PolicyShape
from vdd_ros.moe.config import MoEConfig
from vdd_ros.moe.policy import GaussianMoE, entropy, expert_log_prob, mixture_log_prob, rsample

torch.set_num_threads(1)


def _moe(covariance: str = "diagonal", **kw) -> GaussianMoE:
    torch.manual_seed(0)
    kw.setdefault("gating", "learned")
    return GaussianMoE(PolicyShape(obs_dim=3, act_dim=2, obs_window=4, act_chunk=2), MoEConfig(5, covariance, **kw))


def _perturb(moe: GaussianMoE) -> GaussianMoE:
    with torch.no_grad():
        for p in moe.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return moe


def _full_tril(scale: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(scale) if scale.dim() == mean.dim() else scale


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_initial_experts_are_state_independent_random_means_with_unit_cov(covariance):
    moe = _moe(covariance, mean_init_bound=0.7)
    with torch.no_grad():
        out = moe(torch.randn(6, 4, 3))
    assert torch.allclose(out.mean, out.mean[:1].expand_as(out.mean))  # state-independent
    assert out.mean.abs().max() <= 0.7 and out.mean.std() > 0.1  # random within [-b, b]
    eye = torch.eye(4).expand(6, 5, 4, 4)
    assert torch.allclose(_full_tril(out.scale, out.mean), eye, atol=1e-3)  # cov ~ I
    assert torch.allclose(out.log_gating.exp().sum(-1), torch.ones(6))


def test_std_floor_holds():
    moe = _moe()
    with torch.no_grad():
        moe.cov_head[-1].bias.fill_(-1e4)
        out = moe(torch.randn(2, 4, 3))
    assert torch.all(out.scale >= moe.config.min_std * 0.999)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_log_prob_entropy_and_samples_match_torch_distributions(covariance):
    moe = _perturb(_moe(covariance))
    with torch.no_grad():
        out = moe(torch.randn(3, 4, 3))
    tril = _full_tril(out.scale, out.mean)
    dist = torch.distributions.MultivariateNormal(out.mean, scale_tril=tril)
    x = torch.randn(3, 7, 4)
    ref = torch.distributions.MultivariateNormal(out.mean.unsqueeze(1), scale_tril=tril.unsqueeze(1)).log_prob(
        x.unsqueeze(2)
    )  # (3, 7, Z)
    assert torch.allclose(expert_log_prob(x, out.mean, out.scale), ref, atol=1e-4)
    assert torch.allclose(entropy(out.mean, out.scale), dist.entropy(), atol=1e-5)
    mix = torch.logsumexp(ref + out.log_gating.unsqueeze(1), -1)
    assert torch.allclose(mixture_log_prob(x, out), mix, atol=1e-4)
    eps = torch.randn(3, 5, 2, 4)
    expect = out.mean.unsqueeze(2) + (tril.unsqueeze(2) @ eps.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(rsample(out.mean, out.scale, eps), expect, atol=1e-5)


def test_gating_reads_detached_features():
    moe = _moe()
    out = moe(torch.randn(4, 4, 3))
    (out.log_gating[:, 0]).sum().backward()
    assert all(p.grad is None for p in moe.expert_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in moe.gating_parameters())


def test_uniform_gating_has_no_parameters():
    moe = _moe(gating="uniform")
    out = moe(torch.randn(2, 4, 3))
    assert moe.gating_parameters() == []
    assert torch.allclose(out.log_gating.exp(), torch.full((2, 5), 0.2))


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_save_load_round_trip_without_pickle(tmp_path, covariance):
    moe = _perturb(_moe(covariance))
    moe.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "moe_config.json"]
    loaded = GaussianMoE.load(tmp_path)
    assert (loaded.shape, loaded.config) == (moe.shape, moe.config)
    obs = torch.randn(3, 4, 3)
    with torch.no_grad():
        for a, b in zip(moe(obs), loaded(obs), strict=True):
            assert torch.equal(a, b)


def test_velocity_features_are_rescaled_and_saved(tmp_path):
    moe = _moe(velocity_gain=2.0)
    obs = torch.cumsum(0.01 * torch.randn(64, 4, 3), dim=1)  # slow motion, as in z-scored positions
    moe.fit_delta_scale(obs)
    assert torch.all(moe.delta_scale > 50)
    moe.save(tmp_path)
    loaded = GaussianMoE.load(tmp_path)
    assert torch.equal(loaded.delta_scale, moe.delta_scale)
    with torch.no_grad():
        assert torch.equal(loaded(obs).mean, moe(obs).mean)


def test_a_file_from_before_the_shape_split_still_loads(tmp_path):
    """moe_config.json has always been one flat mapping; files written with the old MoEConfig load unchanged."""
    moe = _perturb(_moe())
    moe.save(tmp_path)
    old = {
        "obs_dim": 3, "act_dim": 2, "obs_window": 4, "act_chunk": 2, "num_experts": 5, "covariance": "diagonal",
        "activation": "mish", "hidden": 256, "trunk_blocks": 2, "head_hidden": 128, "gating": "learned",
        "gating_hidden": 64, "gating_blocks": 2, "init_std": 1.0, "min_std": 1e-4, "mean_init_bound": 1.0,
        "velocity_gain": 0.0,
    }  # fmt: skip
    (tmp_path / "moe_config.json").write_text(json.dumps(old))
    loaded = GaussianMoE.load(tmp_path)
    assert loaded.shape == PolicyShape(3, 2, 4, 2) and loaded.config == moe.config
    obs = torch.randn(3, 4, 3)
    with torch.no_grad():
        assert torch.equal(loaded(obs).mean, moe(obs).mean)
