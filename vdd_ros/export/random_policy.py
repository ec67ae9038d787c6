"""A small randomly initialised policy file, for tests of the runtime and controller.

It goes through the real export path, so a consumer tested against it is tested against
the real contract and graph layout, not a hand-written stand-in.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnx.numpy_helper
import torch

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.data.shape import PolicyShape
from vdd_ros.export.contract import PolicyContract
from vdd_ros.export.onnx_export import export_policy, save_model
from vdd_ros.moe.config import MoEConfig
from vdd_ros.moe.policy import GaussianMoE


def export_random_policy(
    path: str | pathlib.Path,
    obs_dim: int = 4,
    act_dim: int = 2,
    obs_window: int = 5,
    num_experts: int = 8,
    control_period_s: float = 0.035,
    policy_id: str = "random",
    seed: int = 0,
    act_chunk: int = 1,
    act_exec: int = 1,
    act_scale: float = 0.01,
    ballast_mb: int = 0,
) -> str:
    """Export an untrained MoE to ``path``; returns its sha256.

    Observations pass through unscaled (identity normaliser); actions are scaled by
    ``act_scale`` so that raw actions stay small (the initial experts have means in
    [-1, 1] and unit std in normalised space). ``ballast_mb`` adds an unused initializer
    of that size: a valid policy that is as slow to read, hash and parse as a large one.
    """
    torch.manual_seed(seed)
    config = MoEConfig(num_experts=num_experts, hidden=32, head_hidden=32, trunk_blocks=1, gating="learned")
    moe = GaussianMoE(PolicyShape(obs_dim, act_dim, obs_window, act_chunk), config)
    obs_norm = Normalizer(np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32))
    act_norm = Normalizer(np.zeros(act_dim, np.float32), np.full(act_dim, act_scale, np.float32))
    contract = PolicyContract(
        policy_id=policy_id,
        obs_dim=obs_dim,
        act_dim=act_dim,
        obs_window=obs_window,
        act_chunk=act_chunk,
        act_exec=act_exec,
        num_experts=num_experts,
        control_period_s=control_period_s,
        obs_names=tuple(f"obs_{i}" for i in range(obs_dim)),
        act_names=tuple(f"act_{i}" for i in range(act_dim)),
        obs_normalizer=obs_norm.to_dict(),
        act_normalizer=act_norm.to_dict(),
        task="random",
        covariance=config.covariance,
        training={"method": "random_init", "seed": seed},
    )
    digest = export_policy(moe, contract, obs_norm, act_norm, path)
    if ballast_mb > 0:
        model = onnx.load(str(path))
        ballast = np.ones(ballast_mb * (1 << 20) // 4, np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(ballast, "ballast"))
        digest = save_model(model, path)
    return digest
