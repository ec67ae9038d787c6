"""Teacher families: score formulas, samplers, checkpoints, training resume, policy wrapper."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import signal

import numpy as np
import pytest
import torch
from torch import nn

from vdd_ros.util.config import load_config
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.teacher.checkpoint import (
    MODEL_FILE,
    TeacherCheckpointError,
    TeacherMeta,
    load_teacher,
    load_training_state,
    save_teacher,
    teacher_meta_fields,
    teacher_sha256,
)
from vdd_ros.teacher.ddpm import DDPMConfig, DDPMTeacher
from vdd_ros.teacher.edm import EDMConfig, EDMTeacher
from vdd_ros.teacher.network import NetworkConfig
from vdd_ros.teacher.policy import TeacherPolicy
from vdd_ros.teacher.train import STATE_DIR, TeacherTrainConfig, TrainData, train_teacher

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
    t = teacher.sample_noise_levels(64)
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
    teacher = DDPMTeacher(1, 2, 1, 1, TINY)
    teacher.net = ExactDDPMNet(teacher.alpha_bar, 8)
    x = teacher.sample(torch.zeros(4000, 1, 1), sampler=sampler, generator=torch.Generator().manual_seed(0))[:, 0]
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.03, rtol=0)
    assert torch.all(x.std(0) < STD)  # 8 coarse steps end at sigma_eff 0.205: the last step shrinks


@pytest.mark.parametrize("sampler", ["euler", "heun", "euler_ancestral"])
def test_edm_samplers_with_exact_denoiser_recover_the_data(sampler: str) -> None:
    teacher = EDMTeacher(1, 2, 1, 1, TINY, EDMConfig(sigma_min=0.002, sigma_max=40.0))
    teacher.net = ExactEDMNet()
    obs = torch.zeros(4000, 1, 1)
    x = teacher.sample(obs, steps=200, sampler=sampler, generator=torch.Generator().manual_seed(0))[:, 0]
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0), STD, atol=0.05, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_ddpm_samplers_accept_any_step_count_up_to_n(sampler: str) -> None:
    teacher = DDPMTeacher(3, 2, obs_window=2, act_chunk=3, network=TINY)
    obs = torch.randn(4, 2, 3)
    for k in range(1, 9):
        out = teacher.sample(obs, steps=k, sampler=sampler)
        assert out.shape == (4, 3, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        teacher.sample(obs, steps=9)


@pytest.mark.parametrize("sampler", ["euler", "heun", "euler_ancestral"])
def test_edm_samplers_accept_any_step_count(sampler: str) -> None:
    teacher = EDMTeacher(3, 2, obs_window=2, act_chunk=3, network=TINY)
    obs = torch.randn(4, 2, 3)
    for k in (1, 2, 3, 8, 17):
        out = teacher.sample(obs, steps=k, sampler=sampler)
        assert out.shape == (4, 3, 2) and torch.isfinite(out).all()


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
    assert loaded_meta == meta
    obs, a = torch.randn(8, 5, 4), torch.randn(8, 1, 2)
    level = teacher.sample_noise_levels(8)
    assert torch.equal(teacher.score(a, obs, level), loaded.score(a, obs, level))
    gen = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(teacher.sample(obs, generator=gen[0]), loaded.sample(obs, generator=gen[1]))
    assert len(teacher_sha256(tmp_path / "ckpt")) == 64


def test_bad_checkpoints_raise(tmp_path: pathlib.Path) -> None:
    teacher = EDMTeacher(4, 2, 5, 1, TINY)
    d = tmp_path / "ckpt"
    save_teacher(teacher, _meta(teacher), d)
    with pytest.raises(TeacherCheckpointError):
        save_teacher(teacher, dataclasses.replace(_meta(teacher), obs_window=3), tmp_path / "other")
    with pytest.raises(TeacherCheckpointError, match="missing"):
        load_teacher(tmp_path / "nowhere")
    blob = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TeacherCheckpointError, match="corrupt"):
        load_teacher(d)
    narrow = EDMTeacher(4, 2, 5, 1, NetworkConfig(width=16, blocks=1, emb_dim=8))
    save_teacher(narrow, _meta(narrow), tmp_path / "narrow")
    (d / MODEL_FILE).write_bytes((tmp_path / "narrow" / MODEL_FILE).read_bytes())
    with pytest.raises(TeacherCheckpointError, match="does not match"):
        load_teacher(d)  # json says width 32, weights are width 16
    (d / "teacher.json").write_text("{not json")
    with pytest.raises(TeacherCheckpointError, match="JSON"):
        load_teacher(d)


def test_teacher_policy_clips_raw_actions(tmp_path: pathlib.Path) -> None:
    teacher = DDPMTeacher(4, 2, 5, 1, TINY, DDPMConfig(clip_x0=0))
    save_teacher(teacher, _meta(teacher), tmp_path)
    policy = TeacherPolicy.from_checkpoint(tmp_path, steps=3, sampler="ddpm")
    policy.reset(6, seed=1)
    action = policy.act(np.zeros((6, 4), np.float32))
    assert action.shape == (6, 2) and np.abs(action).max() <= 0.03
    policy.reset(6, seed=1)
    assert np.array_equal(policy.act(np.zeros((6, 4), np.float32)), action)


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


def test_resume_continues_from_saved_step(tmp_path: pathlib.Path) -> None:
    data, cfg = _synthetic_data(), _train_cfg()
    full = train_teacher(cfg, data, tmp_path / "full")
    half = train_teacher(cfg, data, tmp_path / "split", stop_after=20)
    assert half.interrupted and half.step == 20
    assert load_training_state(tmp_path / "split" / STATE_DIR).step == 20
    rest = train_teacher(cfg, data, tmp_path / "split", resume=True)
    assert not rest.interrupted and rest.step == full.step == 40
    assert math.isclose(rest.loss, full.loss, rel_tol=0.5)
    a, b = load_teacher(tmp_path / "full")[0], load_teacher(tmp_path / "split")[0]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)  # state, optimiser and RNG restored: same trajectory


def test_signal_saves_state_and_stops(tmp_path: pathlib.Path) -> None:
    def interrupt(teacher: object, meta: object) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)
        return {"score": 0.5}

    result = train_teacher(_train_cfg(eval_every=10), _synthetic_data(), tmp_path, evaluate=interrupt)
    assert result.interrupted and result.step == 10
    assert load_training_state(tmp_path / STATE_DIR).step == 10
    load_teacher(tmp_path)


@pytest.mark.parametrize("name", ["teacher_avoiding.yaml", "teacher_avoiding_edm.yaml"])
def test_default_configs_load(name: str) -> None:
    cfg = load_config(TeacherTrainConfig, ROOT / "config" / name)
    assert cfg.family == ("edm" if "edm" in name else "ddpm")
    assert cfg.ddpm == DDPMConfig() and cfg.edm == EDMConfig() and cfg.network == NetworkConfig()


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
    assert main(["--config", str(cfg), "--out", str(out), "--resume"]) == 2  # nothing to resume yet
    assert main(["--config", str(cfg), "--out", str(out), "--iterations", "4"]) == 0
    assert main(["--config", str(cfg), "--out", str(out), "--iterations", "6", "--resume"]) == 0
    _, meta = load_teacher(out)
    assert meta.training["step"] == 6 and meta.dataset_sha256 and meta.task == "synthetic"
