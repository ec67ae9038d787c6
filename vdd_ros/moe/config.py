"""The student's architecture settings, importable without torch (``--help``, the node's parameters)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from vdd_ros.util.config import knob

Activation = Literal["mish", "silu"]


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Architecture of a GaussianMoE: what a user chooses (the shapes come with ``PolicyShape``)."""

    num_experts: int = knob(8, "Z, the number of Gaussian experts")
    covariance: Literal["diagonal", "full"] = knob(
        "diagonal", "expert covariance: diagonal, or full (Cholesky factor over D = H * act_dim)"
    )
    activation: Literal["mish", "silu"] = knob(
        "mish", "mish (the paper's) or silu (the same shape, a cheaper ONNX graph)"
    )
    hidden: int = knob(256, "width of the shared residual-MLP trunk")
    trunk_blocks: int = knob(2, "residual blocks in the trunk")
    head_hidden: int = knob(128, "hidden width of the mean and covariance heads")
    gating: Literal["learned", "uniform"] = knob(
        "uniform",
        "uniform: q(z|s) = 1/Z, no gating step, keeps the teacher's diversity; "
        "learned: a gating net fitted by an EM step on dataset actions (the paper)",
    )
    gating_hidden: int = knob(64, "width of the learned gating net (gating learned only)")
    gating_blocks: int = knob(2, "residual blocks of the learned gating net (gating learned only)")
    init_std: float = knob(1.0, "initial expert standard deviation in normalised action units (> min_std)")
    min_std: float = knob(1e-4, "floor added to every expert standard deviation")
    mean_init_bound: float = knob(1.0, "initial expert means are uniform in [-bound, bound] (normalised units)")
    velocity_gain: float = knob(
        0.0, "> 0: add tanh(gain * d / std(d)) direction features of the window's successive steps d"
    )
