"""network.obs_deltas: the teacher also sees the window's scaled successive differences.

On Pushing one control step moves a z-scored position by ~0.03, so an MLP over absolute
coordinates predicts the next (smooth) action from the motion only roughly; the scaled
differences make that motion an O(1) input. The scale is fitted on the training windows and
travels in the weights, so a saved teacher scores exactly as the trained one.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.teacher.checkpoint import load_teacher
from vdd_ros.teacher.config import NetworkConfig, TeacherTrainConfig
from vdd_ros.teacher.ddpm import DDPMConfig, DDPMTeacher
from vdd_ros.teacher.train import TrainData, train_teacher
from vdd_ros.util.window_deltas import step_scale

SMALL = NetworkConfig(width=64, blocks=2, emb_dim=8)


def _moving_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, 2, 2) of a point at a random place moving by a small random step; the action is that step."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(-1.0, 1.0, (n, 2))
    step = rng.normal(0.0, 0.01, (n, 2))
    obs = np.stack([start, start + step], axis=1).astype(np.float32)
    return obs, step[:, None, :].astype(np.float32)


def _data(obs: np.ndarray, act: np.ndarray) -> TrainData:
    norm = (Normalizer.fit(obs.reshape(-1, 2)), Normalizer.fit(act.reshape(-1, 2)))
    return TrainData(obs, act, *norm, obs_names=("x", "y"), act_names=("dx", "dy"), control_period_s=0.1, task="s")


def _config(tmp_path: pathlib.Path, deltas: bool, iterations: int) -> TeacherTrainConfig:
    return TeacherTrainConfig(
        obs_window=2,
        act_chunk=1,
        network=NetworkConfig(width=64, blocks=2, emb_dim=8, obs_deltas=deltas),
        diffusion=DDPMConfig(steps=8, sample_steps=8),
        iterations=iterations,
        batch_size=128,
        warmup=10,
        checkpoint_every=0,
        obs_noise=0.0,
        device="cpu",
        torch_threads=1,
        output=str(tmp_path),
    )


@pytest.mark.parametrize("kind", ["mlp", "unet1d"])
def test_the_fitted_scale_is_saved_with_the_weights(tmp_path: pathlib.Path, kind: str) -> None:
    obs, act = _moving_points(256)
    data = _data(obs, act)
    cfg = _config(tmp_path, True, 3)
    if kind == "unet1d":
        unet = NetworkConfig(kind="unet1d", width=16, emb_dim=8, unet_channels=(8,), unet_kernel=3, unet_groups=4)
        cfg = TeacherTrainConfig(**{**cfg.__dict__, "network": NetworkConfig(**{**unet.__dict__, "obs_deltas": True})})
    teacher, _ = load_teacher(train_teacher(cfg, data, tmp_path / "out").output)
    expected = step_scale(torch.from_numpy(data.obs_norm.normalize(obs)))
    assert torch.allclose(teacher.net.window.delta_scale, expected)
    assert expected.min() > 10.0  # a step is a few hundredths of the z-scored range


def test_without_deltas_the_state_dict_is_unchanged() -> None:
    """Checkpoints of teachers trained before the option load as they are (no new tensor in them)."""
    keys = DDPMTeacher(2, 2, 2, 1, SMALL).state_dict().keys()
    assert not any("delta_scale" in k for k in keys)
    with_deltas = DDPMTeacher(2, 2, 2, 1, NetworkConfig(**{**SMALL.__dict__, "obs_deltas": True})).state_dict()
    assert "net.window.delta_scale" in with_deltas


def test_deltas_let_the_teacher_follow_a_small_motion(tmp_path: pathlib.Path) -> None:
    """The same budget learns 'continue the last step' far better with the differences as inputs."""
    torch.manual_seed(0)
    obs, act = _moving_points(4096)
    data = _data(obs, act)
    test_obs, test_act = _moving_points(512, seed=1)
    errors = {}
    for deltas in (False, True):
        torch.manual_seed(0)
        out = train_teacher(_config(tmp_path / str(deltas), deltas, 300), data).output
        teacher, meta = load_teacher(out)
        with torch.no_grad():
            sample = teacher.sample(torch.from_numpy(meta.obs_norm.normalize(test_obs)), steps=8)
        errors[deltas] = float(np.abs(meta.act_norm.denormalize(sample.numpy()) - test_act).mean())
    assert errors[True] < 0.5 * errors[False], errors
