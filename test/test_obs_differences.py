"""network.obs_differences: the teacher also sees standardised differences of observation pairs.

A push depends on where the pusher is relative to a block, but observations are absolute
coordinates z-scored over the workspace, where a centimetre of relative offset is a few
hundredths of a unit. The pair differences make that offset an O(1) input; their gains and
biases are fitted on the training windows and travel in the weights.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import torch
from test_obs_deltas import _config as small_run

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.teacher.checkpoint import load_teacher
from vdd_ros.teacher.config import NetworkConfig, TeacherTrainConfig
from vdd_ros.teacher.ddpm import DDPMTeacher
from vdd_ros.teacher.network import WindowFeatures
from vdd_ros.teacher.train import TrainData, train_teacher

PAIRS = ((2, 0), (3, 1))  # object minus pusher, x and y


def _pusher_and_object(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, 1, 4) of a pusher anywhere and an object a few cm from it; the action is the offset."""
    rng = np.random.default_rng(seed)
    pusher = rng.uniform(-1.0, 1.0, (n, 2))
    offset = rng.normal(0.0, 0.02, (n, 2))
    obs = np.concatenate([pusher, pusher + offset], axis=1)[:, None, :].astype(np.float32)
    return obs, offset[:, None, :].astype(np.float32)


def _data(obs: np.ndarray, act: np.ndarray) -> TrainData:
    norm = (Normalizer.fit(obs.reshape(-1, 4)), Normalizer.fit(act.reshape(-1, 2)))
    names = ("px", "py", "ox", "oy")
    return TrainData(obs, act, *norm, obs_names=names, act_names=("dx", "dy"), control_period_s=0.1, task="s")


def _config(out: pathlib.Path, pairs: tuple[tuple[int, int], ...], iterations: int) -> TeacherTrainConfig:
    """test_obs_deltas' small DDPM run, over a one-step window with the pairs instead of the deltas."""
    network = NetworkConfig(width=64, blocks=2, emb_dim=8, obs_differences=pairs)
    return dataclasses.replace(small_run(out, False, iterations), obs_window=1, network=network)


def test_pair_features_are_standardised_differences_in_the_data_units() -> None:
    obs, _ = _pusher_and_object(2000)
    obs = np.concatenate([obs, obs + np.float32(0.01)], axis=1)  # a 2-step window
    norm = Normalizer.fit(obs.reshape(-1, 4))
    features = WindowFeatures(4, 2, deltas=False, pairs=PAIRS)
    x = torch.from_numpy(norm.normalize(obs))
    features.fit(x, torch.from_numpy(norm.mean), torch.from_numpy(norm.std))
    out = features(x)
    assert out.shape == (2000, 2 * 4 + 2 * 2) == (2000, features.size)
    pairs = out[:, 8:].reshape(2000, 2, 2).numpy()  # (window step, pair)
    physical = obs[..., [2, 3]] - obs[..., [0, 1]]
    expected = (physical - physical.reshape(-1, 2).mean(0)) / physical.reshape(-1, 2).std(0)
    np.testing.assert_allclose(pairs, expected, atol=2e-3)


def test_invalid_pairs_are_rejected() -> None:
    for bad in (((1, 1),), ((0, -1),), ((0, 1, 2),)):
        with pytest.raises(ValueError, match="obs_differences"):
            NetworkConfig(obs_differences=bad)
    with pytest.raises(ValueError, match=r"obs_differences: .*in \[0, 4\)"):
        DDPMTeacher(4, 2, 1, 1, NetworkConfig(obs_differences=((4, 0),)))


def test_fitted_pairs_are_saved_and_absent_without_the_option(tmp_path: pathlib.Path) -> None:
    obs, act = _pusher_and_object(256)
    data = _data(obs, act)
    teacher, _ = load_teacher(train_teacher(_config(tmp_path, PAIRS, 3), data, tmp_path / "out").output)
    pairs = teacher.net.window.pairs
    assert pairs.gain.shape == (2, 2) and pairs.gain.min() > 10.0  # a 2 cm offset in a 2 m range
    assert pairs.a.tolist() == [2, 3] and pairs.b.tolist() == [0, 1]
    plain = DDPMTeacher(4, 2, 1, 1, NetworkConfig(width=64, blocks=2, emb_dim=8)).state_dict()
    assert not any("pairs" in k for k in plain)  # older checkpoints keep their exact state dict


def test_pair_differences_let_the_teacher_act_relative_to_an_object(tmp_path: pathlib.Path) -> None:
    """The same budget learns 'move by the offset to the object' far better with the pair differences."""
    obs, act = _pusher_and_object(4096)
    data = _data(obs, act)
    test_obs, test_act = _pusher_and_object(512, seed=1)
    errors = {}
    for pairs in ((), PAIRS):
        torch.manual_seed(0)
        out = train_teacher(_config(tmp_path / str(len(pairs)), pairs, 300), data).output
        teacher, meta = load_teacher(out)
        with torch.no_grad():
            sample = teacher.sample(torch.from_numpy(meta.obs_norm.normalize(test_obs)), steps=8)
        errors[len(pairs)] = float(np.abs(meta.act_norm.denormalize(sample.numpy()) - test_act).mean())
    assert errors[2] < 0.5 * errors[0], errors
