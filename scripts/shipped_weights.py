"""Write the torch backend's weights for a policy exported before export_policy wrote them.

    PYTHONPATH=. .venv/bin/python scripts/shipped_weights.py [policies/avoiding_vdd.onnx]

The ONNX graph holds the student's weights with the observation normaliser folded into the
trunk's input layer and the two heads fused (``export.onnx_export``); this undoes both,
fills a ``GaussianMoE`` of the architecture in the contract's ``training.moe``, checks that
the rebuilt network computes the graph's outputs (same inputs and noise) and writes
``<policy>.safetensors`` (+ ``.sha256``) with ``save_weights``, as a fresh export would.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import torch

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.export.contract import METADATA_KEY, PolicyContract
from vdd_ros.export.onnx_export import save_weights, weights_path
from vdd_ros.moe.policy import GaussianMoE, split_description
from vdd_ros.runtime.noise import NoiseSource
from vdd_ros.runtime.onnx_policy import load_policy
from vdd_ros.runtime.torch_policy import load_torch_policy

PARITY = 1e-5


def student_from_graph(path: pathlib.Path) -> tuple[GaussianMoE, PolicyContract]:
    """The student whose export is ``path``; SystemExit naming any weight the graph lacks."""
    model = onnx.load(str(path))
    contract = PolicyContract.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    if "moe" not in contract.training:
        sys.exit(f"{path}: the contract has no training.moe (architecture): export it again instead")
    moe = GaussianMoE(*split_description(contract.training["moe"], f"{path} training.moe"))
    weights = {i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    state = {k: weights[f"moe.{k}"] for k in moe.state_dict() if f"moe.{k}" in weights}
    if "trunk_input.weight" in weights:  # W_f = W / s, b_f = b - W_f m  =>  W = W_f s, b = b_f + W_f m
        obs = Normalizer.from_dict(contract.obs_normalizer)
        window = moe.shape.obs_window
        mean, std = torch.from_numpy(np.tile(obs.mean, window)), torch.from_numpy(np.tile(obs.std, window))
        folded_w, folded_b = weights["trunk_input.weight"], weights["trunk_input.bias"]
        state["trunk.inp.weight"] = folded_w * std
        state["trunk.inp.bias"] = folded_b + folded_w @ mean
    hidden = moe.mean_head[0].out_features
    head_w, head_b = weights["head_in.weight"], weights["head_in.bias"]
    state |= {
        "mean_head.0.weight": head_w[:hidden],
        "mean_head.0.bias": head_b[:hidden],
        "cov_head.0.weight": head_w[hidden:],
        "cov_head.0.bias": head_b[hidden:],
        "mean_head.2.weight": weights["mean_out.weight"][:, :hidden],
        "mean_head.2.bias": weights["mean_out.bias"],
        "cov_head.2.weight": weights["cov_out.weight"][:, hidden:],
        "cov_head.2.bias": weights["cov_out.bias"],
    }
    unused = {"delta_scale"} if moe.config.velocity_gain <= 0 or moe.shape.obs_window == 1 else set()
    missing = set(moe.state_dict()) - set(state) - unused
    if missing:
        sys.exit(f"{path}: the graph lacks the weights {sorted(missing)}")
    moe.load_state_dict(state, strict=False)
    return moe, contract


def main(argv: list[str]) -> int:
    path = pathlib.Path(argv[0] if argv else "policies/avoiding_vdd.onnx")
    moe, contract = student_from_graph(path)
    digest = save_weights(moe, contract, weights_path(path))
    graph, rebuilt = load_policy(str(path)), load_torch_policy(str(path))
    c = contract
    noise = NoiseSource("sample", 0, c.num_experts, c.act_chunk * c.act_dim)
    rng = np.random.default_rng(0)
    mean, std = (np.asarray(c.obs_normalizer[k], np.float32) for k in ("mean", "std"))
    worst = 0.0
    for _ in range(200):
        obs = (mean + 2 * std * rng.standard_normal((1, c.obs_window, c.obs_dim))).astype(np.float32)
        gumbel, eps = noise.draw(1)
        a, b = graph.run(obs, gumbel, eps), rebuilt.run(obs, gumbel, eps)
        if not np.array_equal(a[1], b[1]):
            sys.exit(f"{path}: the rebuilt student picks expert {b[1]} where the graph picks {a[1]}")
        worst = max(worst, float(np.abs(a[0] - b[0]).max()))
    if worst > PARITY:
        weights_path(path).unlink()
        sys.exit(f"{path}: the rebuilt student differs from the graph by {worst:.3g} > {PARITY}")
    print(f"wrote {weights_path(path)} (sha256 {digest[:12]}); max |action difference| over 200 steps {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
