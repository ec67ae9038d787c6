"""Teacher families: score formulas, samplers, the registry, checkpoints, training resume, policy wrapper, docs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import signal

import numpy as np
import pytest
import torch
from torch import nn

from vdd_ros.data.dataset import content_sha256, load_dataset
from vdd_ros.data.noise import CorrelatedNormal
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.teacher import registry
from vdd_ros.teacher.checkpoint import (
    META_FILE,
    MODEL_FILE,
    TeacherCheckpointError,
    TeacherMeta,
    build_teacher,
    load_teacher,
    save_teacher,
    teacher_meta_fields,
    teacher_sha256,
)
from vdd_ros.teacher.config import NetworkConfig, TeacherTrainConfig
from vdd_ros.teacher.ddpm import DDPMConfig, DDPMTeacher
from vdd_ros.teacher.edm import EDMConfig, EDMTeacher
from vdd_ros.teacher.policy import TeacherPolicy
from vdd_ros.teacher.ring_gmm import RingGMMTeacher
from vdd_ros.teacher.train import STATE_DIR, TrainData, train_teacher
from vdd_ros.util.checkpoint import NonFiniteError
from vdd_ros.util.config import load_config, markdown_table
from vdd_ros.util.files import sha256_file
from vdd_ros.util.progress import EvalResult, Notice, Resumed, TrainProgress

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = NetworkConfig(width=32, blocks=1, emb_dim=8)
MEAN = torch.tensor([0.8, -0.4])
STD = torch.tensor([0.5, 0.3])
# sqrt(1 - alpha_bar_t) of the N = 8 cosine schedule, from docs/vdd_method.md section 2.
DDPM8_SIGMA_EFF = (0.205, 0.391, 0.562, 0.711, 0.834, 0.925, 0.981, 1.0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


class ExactEDMNet(nn.Module):
    """F such that the preconditioned D is the exact denoiser of x0 ~ N(MEAN, STD^2)."""

    def forward(self, x_in: torch.Tensor, obs: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(4 * c_noise).view(-1, 1, 1)
        sd = 0.5
        a = x_in * (sigma**2 + sd**2).sqrt()
        d = MEAN + STD**2 / (STD**2 + sigma**2) * (a - MEAN)
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        return (d - c_skip * a) / c_out


class ExactDDPMNet(nn.Module):
    """Exact epsilon of x_t = sqrt(ab) x0 + sqrt(1-ab) eps with x0 ~ N(MEAN, STD^2)."""

    def __init__(self, alpha_bar: torch.Tensor, steps: int) -> None:
        super().__init__()
        self.alpha_bar, self.steps = alpha_bar, steps

    def forward(self, x: torch.Tensor, obs: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[torch.round(cond * self.steps).long()].view(-1, 1, 1)
        score = -(x - ab.sqrt() * MEAN) / (ab * STD**2 + 1 - ab)
        return -(1 - ab).sqrt() * score


def gaussian_score(a: torch.Tensor, scale: torch.Tensor, var_noise: torch.Tensor) -> torch.Tensor:
    """Score of N(scale*MEAN, scale^2 STD^2 + var_noise) at a; scale/var_noise per row."""
    scale, var_noise = scale.view(-1, 1, 1), var_noise.view(-1, 1, 1)
    return -(a - scale * MEAN) / (scale**2 * STD**2 + var_noise)


def exact(family: str, sampler: str, **config: float) -> DDPMTeacher | EDMTeacher:
    """A 1-D-observation teacher of ``family`` whose network is the exact Gaussian denoiser."""
    if family == "ddpm":
        teacher = DDPMTeacher(1, 2, 1, 1, TINY, DDPMConfig(sampler=sampler, **config))
        teacher.net = ExactDDPMNet(teacher.alpha_bar, teacher.config.steps)
    else:
        teacher = EDMTeacher(1, 2, 1, 1, TINY, EDMConfig(sampler=sampler, **config))
        teacher.net = ExactEDMNet()
    return teacher


def test_edm_score_uses_preconditioned_denoiser() -> None:
    teacher = EDMTeacher(3, 2, obs_window=2, act_chunk=1, network=TINY)
    sigma = teacher.sample_noise_levels(64)
    teacher.net = ExactEDMNet()
    a, obs = torch.randn(64, 1, 2), torch.randn(64, 2, 3)
    assert sigma.min() >= 0.2 and sigma.max() <= 0.5
    expected = gaussian_score(a, torch.ones(64), sigma**2)
    torch.testing.assert_close(teacher.score(a, obs, sigma), expected, rtol=1e-5, atol=1e-5)


def test_ddpm_score_is_unrescaled_eps_over_sigma_eff() -> None:
    teacher = DDPMTeacher(3, 2, obs_window=2, act_chunk=1, network=TINY)
    torch.testing.assert_close((1 - teacher.alpha_bar).sqrt(), torch.tensor(DDPM8_SIGMA_EFF), atol=1e-3, rtol=0)
    teacher.net = ExactDDPMNet(teacher.alpha_bar, 8)
    t = teacher.sample_noise_levels(64, 1, 4)
    assert set(t.tolist()) <= {1, 2, 3, 4}
    a, obs = torch.randn(64, 1, 2), torch.randn(64, 2, 3)
    ab = teacher.alpha_bar[t]
    torch.testing.assert_close(teacher.score(a, obs, t), gaussian_score(a, ab.sqrt(), 1 - ab), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["ddpm", "edm"])
def test_trained_score_approximates_gaussian_score(family: str) -> None:
    net = NetworkConfig(width=64, blocks=2, emb_dim=16)
    teacher = DDPMTeacher(1, 2, 1, 1, net) if family == "ddpm" else EDMTeacher(1, 2, 1, 1, net)
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    obs = torch.zeros(256, 1, 1)
    for _ in range(250):
        loss = teacher.loss(obs, MEAN + STD * torch.randn(256, 1, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    a = MEAN + 1.5 * STD * torch.randn(256, 1, 2)
    if family == "ddpm":
        level = torch.full((256,), 2)
        ab = teacher.alpha_bar[level]
        expected = gaussian_score(a, ab.sqrt(), 1 - ab)
    else:
        level = torch.full((256,), 0.3)
        expected = gaussian_score(a, torch.ones(256), level**2)
    with torch.no_grad():
        err = (teacher.score(a, obs, level) - expected).norm() / expected.norm()
    assert err < 0.25


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_ddpm_samplers_with_exact_eps_recover_the_mean(sampler: str) -> None:
    teacher = exact("ddpm", sampler)
    x = teacher.sample(torch.zeros(4000, 1, 1), generator=torch.Generator().manual_seed(0))[:, 0]
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.03, rtol=0)
    assert torch.all(x.std(0) < STD)  # 8 coarse steps end at sigma_eff 0.205: the last step shrinks


@pytest.mark.parametrize("sampler", ["euler", "heun", "euler_ancestral"])
def test_edm_samplers_with_exact_denoiser_recover_the_data(sampler: str) -> None:
    teacher = exact("edm", sampler, sigma_min=0.002, sigma_max=40.0)
    obs = torch.zeros(4000, 1, 1)
    x = teacher.sample(obs, steps=200, generator=torch.Generator().manual_seed(0))[:, 0]
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0), STD, atol=0.05, rtol=0)


# Outputs of every sampler before it moved into teacher/samplers.py (exact networks, deterministic
# noise: a linspace, so no RNG is involved), three observations x two action dimensions each.
SAMPLER_REFERENCE = {
    ("ddpm", "ddpm", 8): (0.470252, -0.611918, 0.575045, -0.558625, 0.679839, -0.505332),
    ("ddpm", "ddim", 8): (1.297057, -0.116082, 1.343482, -0.090892, 1.389907, -0.065703),
    ("ddpm", "ddpm", 3): (0.684235, -0.470164, 0.769619, -0.418674, 0.855005, -0.367184),
    ("edm", "euler", 5): (0.906927, -0.023378, 0.974459, 0.018085, 1.041992, 0.059548),
    ("edm", "heun", 5): (0.921952, 0.039895, 0.998974, 0.088324, 1.075997, 0.136753),
    ("edm", "euler_ancestral", 5): (0.825338, -0.307192, 0.96403, -0.223237, 1.102722, -0.139282),
}


@pytest.mark.parametrize(("family", "sampler", "steps"), list(SAMPLER_REFERENCE))
def test_samplers_reproduce_their_outputs_from_before_the_refactor(family: str, sampler: str, steps: int) -> None:
    teacher = exact(family, sampler)
    noise = torch.linspace(-1.5, 1.5, (steps + 1) * 3 * 2).reshape(steps + 1, 3, 1, 2).flip(0)
    x = teacher.sample(torch.zeros(3, 1, 1), steps=steps, noise=noise)
    torch.testing.assert_close(x.flatten(), torch.tensor(SAMPLER_REFERENCE[family, sampler, steps]), atol=2e-6, rtol=0)


@pytest.mark.parametrize("family", ["ddpm", "edm"])
def test_given_noise_is_the_noise_the_generator_would_draw(family: str) -> None:
    """The documented layout: ``noise_shape`` rows, and sample(noise=N) equals the draw of N from a generator."""
    teacher = (DDPMTeacher if family == "ddpm" else EDMTeacher)(3, 2, 2, 3, TINY).eval()
    obs = torch.randn(5, 2, 3)
    assert teacher.noise_shape(5, 4) == (5, 5, 3, 2)
    noise = torch.randn(teacher.noise_shape(5, 4), generator=torch.Generator().manual_seed(1))
    drawn = teacher.sample(obs, steps=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(teacher.sample(obs, steps=4, noise=noise), drawn)
    with pytest.raises(ValueError, match="noise must have shape"):
        teacher.sample(obs, steps=4, noise=noise[:4])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_ddpm_samplers_accept_any_step_count_up_to_n(sampler: str) -> None:
    teacher = DDPMTeacher(3, 2, obs_window=2, act_chunk=3, network=TINY, config=DDPMConfig(sampler=sampler))
    obs = torch.randn(4, 2, 3)
    for k in range(1, 9):
        out = teacher.sample(obs, steps=k)
        assert out.shape == (4, 3, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        teacher.sample(obs, steps=9)


@pytest.mark.parametrize("sampler", ["euler", "heun", "euler_ancestral"])
def test_edm_samplers_accept_any_step_count(sampler: str) -> None:
    teacher = EDMTeacher(3, 2, obs_window=2, act_chunk=3, network=TINY, config=EDMConfig(sampler=sampler))
    obs = torch.randn(4, 2, 3)
    for k in (1, 2, 3, 8, 17):
        out = teacher.sample(obs, steps=k)
        assert out.shape == (4, 3, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("teacher", "good", "bad", "reason"),
    [
        (DDPMTeacher(1, 2, 1, 1, TINY), (0, 7), (1.5, 3), "whole steps"),
        (DDPMTeacher(1, 2, 1, 1, TINY), (None, None), (2, 8), "< 8"),
        (EDMTeacher(1, 2, 1, 1, TINY), (0.2, 0.5), (0.0, 0.5), "0 < low"),
        (RingGMMTeacher(), (None, None), (0.5, 0.1), "low <= high"),
    ],
)
def test_noise_ranges_are_checked_before_any_work(teacher, good, bad, reason) -> None:
    teacher.check_noise_range(*good)
    with pytest.raises(ValueError, match=reason):
        teacher.check_noise_range(*bad)
    with pytest.raises(ValueError, match=reason):
        teacher.sample_noise_levels(4, *bad)


def test_family_configs_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="sample_steps"):
        DDPMConfig(sample_steps=9)
    with pytest.raises(ValueError, match="sampler"):
        EDMConfig(sampler="ddpm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        EDMConfig(sigma_min=1.0, sigma_max=0.5)


def _meta(teacher: EDMTeacher | DDPMTeacher, task: str = "avoiding") -> TeacherMeta:
    return TeacherMeta(
        **teacher_meta_fields(teacher),
        obs_names=tuple(f"o{i}" for i in range(teacher.obs_dim)),
        act_names=tuple(f"a{i}" for i in range(teacher.act_dim)),
        control_period_s=0.035,
        task=task,
        obs_normalizer=Normalizer(
            np.zeros(teacher.obs_dim, np.float32), np.ones(teacher.obs_dim, np.float32)
        ).to_dict(),
        act_normalizer=Normalizer(np.zeros(2, np.float32), np.full(2, 0.01, np.float32)).to_dict(),
    )


@pytest.mark.parametrize("family", ["ddpm", "edm"])
def test_checkpoint_roundtrip_is_bit_exact(tmp_path: pathlib.Path, family: str) -> None:
    teacher = (DDPMTeacher if family == "ddpm" else EDMTeacher)(4, 2, 5, 1, TINY).eval()
    meta = _meta(teacher)
    save_teacher(teacher, meta, tmp_path / "ckpt")
    loaded, loaded_meta = load_teacher(tmp_path / "ckpt")
    assert loaded_meta == meta and type(loaded) is type(teacher)
    obs, a = torch.randn(8, 5, 4), torch.randn(8, 1, 2)
    level = teacher.sample_noise_levels(8)
    assert torch.equal(teacher.score(a, obs, level), loaded.score(a, obs, level))
    gen = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(teacher.sample(obs, generator=gen[0]), loaded.sample(obs, generator=gen[1]))
    assert teacher_sha256(tmp_path / "ckpt") == sha256_file(
        tmp_path / "ckpt" / MODEL_FILE, tmp_path / "ckpt" / META_FILE
    )


def test_old_teacher_json_with_noise_correlation_still_loads(tmp_path: pathlib.Path) -> None:
    """Teachers saved before the correlation moved to TeacherPolicy carry it in their family settings."""
    teacher = DDPMTeacher(4, 2, 5, 1, TINY).eval()
    save_teacher(teacher, _meta(teacher), tmp_path)
    data = json.loads((tmp_path / META_FILE).read_text())
    data["diffusion"]["noise_correlation"] = 0.98
    (tmp_path / META_FILE).write_text(json.dumps(data))
    loaded, _ = load_teacher(tmp_path, sampler="ddim")
    assert loaded.config == dataclasses.replace(teacher.config, sampler="ddim")


def test_bad_checkpoints_raise(tmp_path: pathlib.Path) -> None:
    teacher = EDMTeacher(4, 2, 5, 1, TINY)
    d = tmp_path / "ckpt"
    save_teacher(teacher, _meta(teacher), d)
    with pytest.raises(TeacherCheckpointError):
        save_teacher(teacher, dataclasses.replace(_meta(teacher), obs_window=3), tmp_path / "other")
    with pytest.raises(TeacherCheckpointError, match="missing"):
        load_teacher(tmp_path / "nowhere")
    with pytest.raises(TeacherCheckpointError, match="sampler"):
        load_teacher(d, sampler="ddim")  # not an EDM sampler
    blob = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TeacherCheckpointError, match="corrupt"):
        load_teacher(d)
    narrow = EDMTeacher(4, 2, 5, 1, NetworkConfig(width=16, blocks=1, emb_dim=8))
    save_teacher(narrow, _meta(narrow), tmp_path / "narrow")
    (d / MODEL_FILE).write_bytes((tmp_path / "narrow" / MODEL_FILE).read_bytes())
    with pytest.raises(TeacherCheckpointError, match="does not match"):
        load_teacher(d)  # json says width 32, weights are width 16
    (d / META_FILE).write_text("{not json")
    with pytest.raises(TeacherCheckpointError, match="JSON"):
        load_teacher(d)


def test_unknown_family_names_the_known_ones() -> None:
    meta = dataclasses.replace(_meta(DDPMTeacher(4, 2, 5, 1, TINY)), family="flow")
    with pytest.raises(TeacherCheckpointError, match="unknown teacher family 'flow'; known: ddpm, edm"):
        build_teacher(meta)
    with pytest.raises(ValueError, match="known: ddpm, edm"):
        TeacherTrainConfig(family="flow")


class CopyTeacher(EDMTeacher):
    """A 'new family' for the registry test: the EDM teacher under another name."""

    family = "edm_copy"


def test_one_registry_line_makes_a_family_trainable_and_loadable(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setitem(registry._FAMILIES, "edm_copy", registry.Family(CopyTeacher, EDMConfig))
    cfg = _train_cfg(family="edm_copy", iterations=5, diffusion={"sample_steps": 3})
    result = train_teacher(cfg, _synthetic_data(), tmp_path)
    teacher, meta = load_teacher(result.output)
    assert type(teacher) is CopyTeacher and meta.family == "edm_copy" and teacher.default_sample_steps == 3


def _identity_meta(teacher, obs_dim: int) -> TeacherMeta:
    """Metadata with identity normalisers, so the policy's actions are the teacher's samples."""
    zeros, ones = np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32)
    return TeacherMeta(
        family=teacher.family,
        network={},
        diffusion={},
        obs_window=teacher.obs_window,
        act_chunk=teacher.act_chunk,
        obs_dim=obs_dim,
        act_dim=teacher.act_dim,
        obs_names=tuple(f"o{i}" for i in range(obs_dim)),
        act_names=("x", "y"),
        control_period_s=0.1,
        task="synthetic",
        obs_normalizer=Normalizer(zeros, ones).to_dict(),
        act_normalizer=Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32)).to_dict(),
    )


def test_teacher_policy_clips_raw_actions(tmp_path: pathlib.Path) -> None:
    teacher = DDPMTeacher(4, 2, 5, 1, TINY, DDPMConfig(clip_x0=0))
    save_teacher(teacher, _meta(teacher), tmp_path)
    bounds = (np.full(2, -0.03), np.full(2, 0.03))
    policy = TeacherPolicy.from_checkpoint(tmp_path, steps=3, sampler="ddpm", action_bounds=bounds)
    policy.reset(6, seed=1)
    action = policy.act(np.zeros((6, 4), np.float32))
    assert action.shape == (6, 2) and np.abs(action).max() <= 0.03
    policy.reset(6, seed=1)
    assert np.array_equal(policy.act(np.zeros((6, 4), np.float32)), action)


@pytest.mark.parametrize("teacher", [EDMTeacher(1, 2, 1, 1, TINY).eval(), RingGMMTeacher()])
def test_teacher_policy_draws_the_shared_correlated_stream(teacher) -> None:
    """TeacherPolicy feeds the sampler the AR(1) stream of data.noise, one stream per environment."""
    policy = TeacherPolicy(teacher, _identity_meta(teacher, 1), steps=2, noise_correlation=0.9)
    stream = CorrelatedNormal(np.random.default_rng(7), 0.9)
    policy.reset(3, seed=7)
    obs = np.zeros((3, 1), np.float32)
    for _ in range(3):
        noise = torch.from_numpy(stream.draw((3, 3, 1, 2))).float().permute(1, 0, 2, 3)
        expected = teacher.sample(torch.zeros(3, 1, 1), steps=2, noise=noise)[:, 0].numpy()
        np.testing.assert_allclose(policy.act(obs), expected, rtol=1e-6, atol=1e-6)


def test_teacher_policy_refuses_a_correlation_of_one() -> None:
    teacher = RingGMMTeacher()
    with pytest.raises(ValueError, match=re.escape("noise_correlation must be in [0, 1)")):
        TeacherPolicy(teacher, _identity_meta(teacher, 1), noise_correlation=1.0)


def _synthetic_data(n: int = 256) -> TrainData:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, 2, 3)).astype(np.float32)
    act = (obs[:, -1:, :2] * 0.5 + 0.1 * rng.normal(size=(n, 1, 2))).astype(np.float32)
    return TrainData(
        obs=obs,
        actions=act,
        obs_norm=Normalizer.fit(obs.reshape(-1, 3)),
        act_norm=Normalizer.fit(act.reshape(-1, 2)),
        obs_names=("a", "b", "c"),
        act_names=("x", "y"),
        control_period_s=0.1,
        task="synthetic",
    )


def _train_cfg(**kw: object) -> TeacherTrainConfig:
    base = {"family": "edm", "obs_window": 2, "network": TINY, "iterations": 40, "batch_size": 32, "warmup": 5}
    return TeacherTrainConfig(**{**base, "checkpoint_every": 0, "device": "cpu", "torch_threads": 1, **kw})


def _weights(path: pathlib.Path) -> list[torch.Tensor]:
    return list(load_teacher(path)[0].parameters())


def test_resume_continues_from_saved_step(tmp_path: pathlib.Path) -> None:
    data, cfg = _synthetic_data(), _train_cfg()
    full = train_teacher(cfg, data, tmp_path / "full")
    half = train_teacher(cfg, data, tmp_path / "split", stop_after=20)
    assert half.interrupted and half.step == 20
    assert json.loads((tmp_path / "split" / STATE_DIR / "state.json").read_text())["iteration"] == 20
    events: list = []
    rest = train_teacher(cfg, data, tmp_path / "split", resume=True, on_progress=events.append)
    assert not rest.interrupted and rest.step == full.step == 40
    assert Resumed(20) in events and [e.iteration for e in events if isinstance(e, TrainProgress)] == [40]
    assert math.isclose(rest.loss, full.loss, rel_tol=0.5)
    for pa, pb in zip(_weights(tmp_path / "full"), _weights(tmp_path / "split"), strict=True):
        torch.testing.assert_close(pa, pb)  # state, optimiser and RNG restored: same trajectory


def test_damaged_newest_training_state_falls_back_to_the_previous(tmp_path: pathlib.Path) -> None:
    """Teacher training resumes through the same verified store as distillation."""
    data, cfg = _synthetic_data(), _train_cfg(checkpoint_every=10)
    full = tmp_path / "full"
    train_teacher(cfg, data, full)
    split = tmp_path / "split"
    train_teacher(cfg, data, split, stop_after=30)
    state = split / STATE_DIR
    assert json.loads((state / "state.prev.json").read_text())["iteration"] == 20
    newest = state / "ema-00000030.safetensors"
    newest.write_bytes(newest.read_bytes()[:-8] + bytes(8))
    events: list = []
    train_teacher(cfg, data, split, resume=True, on_progress=events.append)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and f"{newest}: sha256 mismatch" in notices[0]
    assert Resumed(20) in events
    for pa, pb in zip(_weights(full), _weights(split), strict=True):
        torch.testing.assert_close(pa, pb)


def test_unusable_or_missing_training_state_is_an_error(tmp_path: pathlib.Path) -> None:
    data, cfg = _synthetic_data(), _train_cfg(iterations=4)
    with pytest.raises(TeacherCheckpointError, match="nothing to resume"):
        train_teacher(cfg, data, tmp_path, resume=True)
    train_teacher(cfg, data, tmp_path)
    (tmp_path / STATE_DIR / "state.json").write_text("{")
    with pytest.raises(TeacherCheckpointError, match=r"no usable checkpoint.*not valid JSON"):
        train_teacher(cfg, data, tmp_path, resume=True)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path: pathlib.Path, monkeypatch) -> None:
    data, cfg = _synthetic_data(), _train_cfg(iterations=20, checkpoint_every=5)
    loss = EDMTeacher.loss
    calls = iter(range(100))
    monkeypatch.setattr(EDMTeacher, "loss", lambda self, o, a: loss(self, o, a) * (1 if next(calls) < 12 else math.nan))
    with pytest.raises(NonFiniteError, match="iteration 12"):
        train_teacher(cfg, data, tmp_path)
    assert json.loads((tmp_path / STATE_DIR / "state.json").read_text())["iteration"] == 10


def test_signal_saves_state_and_stops(tmp_path: pathlib.Path) -> None:
    def interrupt(teacher: object, meta: object) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)
        return {"score": 0.5, "success_rate": 0.5, "entropy": 0.25}

    events: list = []
    result = train_teacher(
        _train_cfg(eval_every=10), _synthetic_data(), tmp_path, evaluate=interrupt, on_progress=events.append
    )
    assert result.interrupted and result.step == 10
    assert json.loads((tmp_path / STATE_DIR / "state.json").read_text())["iteration"] == 10
    assert [(e.iteration, e.success_rate) for e in events if isinstance(e, EvalResult)] == [(10, 0.5)]
    load_teacher(tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"eval_episodes": 0}, "eval_episodes must be >= 1"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"diffusion": {"sampel": "heun"}}, "did you mean 'sampler'"),
        ({"diffusion": DDPMConfig()}, "takes a EDMConfig"),
    ],
)
def test_train_config_refuses_bad_values_on_construction(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _train_cfg(**override)


@pytest.mark.parametrize(("name", "family"), [("teacher_avoiding.yaml", "ddpm"), ("teacher_avoiding_edm.yaml", "edm")])
def test_default_configs_load(name: str, family: str) -> None:
    cfg = load_config(TeacherTrainConfig, ROOT / "config" / name)
    config_cls = DDPMConfig if family == "ddpm" else EDMConfig
    assert cfg.family == family and cfg.diffusion == config_cls() and cfg.network == NetworkConfig()
    assert cfg.output == f"runs/teacher_{family}"


def test_cli_trains_and_resumes(tmp_path: pathlib.Path) -> None:
    from vdd_ros.cli.train_teacher import main
    from vdd_ros.data.dataset import DemoDataset, save_dataset

    rng = np.random.default_rng(0)
    obs = [rng.normal(size=(30, 4)).astype(np.float32) for _ in range(3)]
    ds = DemoDataset(
        observations=obs,
        actions=[o[:, :2] * 0.01 for o in obs],
        obs_names=("a", "b", "c", "d"),
        act_names=("x", "y"),
        control_period_s=0.1,
        mode_labels=np.zeros(3, np.int64),
        task="synthetic",
    )
    save_dataset(ds, tmp_path / "demos.safetensors")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"family: ddpm\ndataset: {tmp_path / 'demos.safetensors'}\nnetwork: {{width: 16, blocks: 1, emb_dim: 8}}\n"
        "batch_size: 8\nwarmup: 2\ncheckpoint_every: 0\ndevice: cpu\ntorch_threads: 1\n"
    )
    out = tmp_path / "out"
    assert main([str(cfg), f"output={out}", "resume=true"]) == 2  # nothing to resume yet
    assert main([str(cfg), f"output={out}", "iterations=4"]) == 0
    assert main([str(cfg), f"output={out}", "iterations=6", "resume=true"]) == 0
    _, meta = load_teacher(out)
    assert meta.training["step"] == 6 and meta.dataset_sha256 and meta.task == "synthetic"
    assert meta.dataset_content_sha256 == content_sha256(load_dataset(tmp_path / "demos.safetensors"))


DOC = ROOT / "docs" / "teacher.md"


def test_docs_example_runs() -> None:
    """The example under "## Example" in docs/teacher.md is executed as written."""
    text = DOC.read_text()
    block = re.search(r"## Example.*?```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/teacher.md lost its example"
    exec(compile(block.group(1), str(DOC), "exec"), {})


@pytest.mark.parametrize("config", [TeacherTrainConfig, DDPMConfig, EDMConfig])
def test_docs_tables_match_the_code(config: type) -> None:
    assert markdown_table(config) in DOC.read_text(), f"regenerate the {config.__name__} table in docs/teacher.md"
