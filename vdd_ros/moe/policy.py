"""Gaussian mixture-of-experts student q(a|s) = sum_z q(z|s) N(a; mu_z(s), Sigma_z(s)).

Layout follows VDD (vdd_method.md §3): one shared trunk over the flattened, normalised
observation window, one mean head and one covariance head with per-expert output slices,
and a small gating net that reads *detached* trunk features so that the gating step
never trains the trunk. Actions are the flattened, normalised chunk of D = H*act_dim.

Covariances are returned as a ``scale`` tensor: (B, Z, D) standard deviations for the
diagonal case, (B, Z, D, D) lower-triangular Cholesky factors for the full case. The
functions below branch on its rank so that callers can pass detached copies.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
import tempfile
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from vdd_ros.data.shape import PolicyShape
from vdd_ros.moe.config import Activation, MoEConfig
from vdd_ros.util.config import from_dict
from vdd_ros.util.files import atomic_replace_dir
from vdd_ros.util.window_deltas import step_scale

# Mish is the paper's; SiLU is the same smooth, non-monotone shape but exports as a Sigmoid
# and a Mul, cheaper in onnxruntime than Mish's Softplus + Tanh + Mul.
_ACTIVATIONS: dict[str, type[nn.Module]] = {"mish": nn.Mish, "silu": nn.SiLU}


_WEIGHTS = "model.safetensors"
_CONFIG = "moe_config.json"


class MoEOutput(NamedTuple):
    """Per-state mixture parameters in normalised action space."""

    log_gating: torch.Tensor  # (B, Z)
    mean: torch.Tensor  # (B, Z, D)
    scale: torch.Tensor  # (B, Z, D) std, or (B, Z, D, D) Cholesky factor


class _ResidualBlock(nn.Module):
    """x + W2 act(W1 act(x)): keeps deep MLPs trainable without normalisation layers."""

    def __init__(self, width: int, activation: Activation) -> None:
        super().__init__()
        self.act = _ACTIVATIONS[activation]()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.act(x))))


class _ResidualMLP(nn.Module):
    """Linear lift, residual blocks, final activation."""

    def __init__(self, in_dim: int, width: int, blocks: int, activation: Activation) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*[_ResidualBlock(width, activation) for _ in range(blocks)])
        self.act = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.blocks(self.inp(x)))


def _head(in_dim: int, hidden: int, out_dim: int, activation: Activation) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), _ACTIVATIONS[activation](), nn.Linear(hidden, out_dim))


def _tril_map(d: int) -> torch.Tensor:
    """0/1 matrix placing [diagonal, strict lower entries] into a flattened D x D factor.

    A constant matmul instead of index assignment: exact, differentiable, and plain MatMul in ONNX.
    """
    rows, cols = torch.tril_indices(d, d, offset=-1)
    targets = torch.cat([torch.arange(d) * (d + 1), rows * d + cols])
    m = torch.zeros(len(targets), d * d)
    m[torch.arange(len(targets)), targets] = 1.0
    return m


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class GaussianMoE(nn.Module):
    """Shared-trunk Gaussian MoE; ``forward`` maps normalised obs windows to MoEOutput."""

    def __init__(self, shape: PolicyShape, config: MoEConfig | None = None) -> None:
        super().__init__()
        config = config or MoEConfig()
        if config.init_std <= config.min_std:
            raise ValueError("init_std must exceed min_std")
        self.shape = shape
        self.config = config
        z, d = config.num_experts, shape.action_size
        in_dim = shape.obs_window * shape.obs_dim
        if config.velocity_gain > 0 and shape.obs_window > 1:
            in_dim += (shape.obs_window - 1) * shape.obs_dim
        self.register_buffer("delta_scale", torch.ones(shape.obs_dim))
        act = config.activation
        self.trunk = _ResidualMLP(in_dim, config.hidden, config.trunk_blocks, act)
        self.mean_head = _head(config.hidden, config.head_hidden, z * d, act)
        cov_out = z * d if config.covariance == "diagonal" else z * d * (d + 1) // 2
        self.cov_head = _head(config.hidden, config.head_hidden, cov_out, act)
        self.gating_net: nn.Module | None = None
        if config.gating == "learned":
            self.gating_net = nn.Sequential(
                _ResidualMLP(config.hidden, config.gating_hidden, config.gating_blocks, act),
                nn.Linear(config.gating_hidden, z),
            )
        self.register_buffer("_zero_gating", torch.zeros(z, config.hidden), persistent=False)
        self.register_buffer("_uniform_logits", torch.full((z,), -math.log(z)), persistent=False)
        self.diag_shift = _inverse_softplus(config.init_std - config.min_std)
        self.register_buffer("_tril_map", _tril_map(d), persistent=False)
        self._init_heads()

    def _init_heads(self) -> None:
        """Paper §3: tiny orthogonal head weights; state-independent random initial means, cov = init_std^2 I."""
        for head in (self.mean_head, self.cov_head):
            for layer in head:
                if isinstance(layer, nn.Linear):
                    nn.init.orthogonal_(layer.weight, gain=0.01)
                    nn.init.zeros_(layer.bias)
        last = self.mean_head[-1]
        nn.init.zeros_(last.weight)
        nn.init.uniform_(last.bias, -self.config.mean_init_bound, self.config.mean_init_bound)

    def fit_delta_scale(self, obs: torch.Tensor) -> None:
        """Scale successive differences of training windows (N, T, obs_dim) to unit std.

        Unscaled (``vdd_ros.util.window_deltas``), the trunk barely sees the direction of motion,
        which is what lets an expert choice persist from one step to the next. The features are
        tanh(gain * d / std(d)): direction without magnitude, so the net cannot simply
        copy the previous action out of the desired-position differences.
        """
        self.delta_scale.copy_(step_scale(obs))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Trunk features (B, hidden) of normalised observation windows (B, T, obs_dim)."""
        x = obs.flatten(1)
        gain = self.config.velocity_gain
        if gain > 0 and obs.shape[1] > 1:
            x = torch.cat([x, torch.tanh(gain * (obs[:, 1:] - obs[:, :-1]) * self.delta_scale).flatten(1)], dim=-1)
        return self.trunk(x)

    def gating_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """log q(z|s) (B, Z) up to a per-state constant, which argmax and softmax ignore; features detached."""
        if self.gating_net is None:  # uniform: a zero-weight linear map, one Gemm in the exported graph
            return F.linear(feats.detach(), self._zero_gating, self._uniform_logits)
        return self.gating_net(feats.detach())

    def log_gating(self, feats: torch.Tensor) -> torch.Tensor:
        """log q(z|s) (B, Z) from trunk features (the uniform logits are normalised already)."""
        logits = self.gating_logits(feats)
        return logits if self.gating_net is None else torch.log_softmax(logits, dim=-1)

    def experts(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (B, Z, D) and scales of all experts from trunk features."""
        return self.components_from_heads(self.mean_head(feats), self.cov_head(feats))

    def components_from_heads(self, mean: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (B, Z, D) and scales from the two heads' outputs (the export fuses the heads)."""
        cfg = self.config
        z, d = cfg.num_experts, self.shape.action_size  # constant shapes: no Shape ops in the exported graph
        mean = mean.view(-1, z, d)
        if cfg.covariance == "diagonal":
            scale = F.softplus(raw.view(-1, z, d) + self.diag_shift) + cfg.min_std
        else:
            raw = raw.view(-1, z, d * (d + 1) // 2)
            diag = F.softplus(raw[..., :d] + self.diag_shift) + cfg.min_std
            entries = torch.cat([diag, raw[..., d:]], dim=-1)
            scale = (entries @ self._tril_map).view(-1, z, d, d)
        return mean, scale

    def forward(self, obs: torch.Tensor) -> MoEOutput:
        feats = self.features(obs)
        mean, scale = self.experts(feats)
        return MoEOutput(self.log_gating(feats), mean, scale)

    def expert_parameters(self) -> list[nn.Parameter]:
        """Trunk and heads: what the expert (M-)step trains."""
        return [*self.trunk.parameters(), *self.mean_head.parameters(), *self.cov_head.parameters()]

    def gating_parameters(self) -> list[nn.Parameter]:
        return [] if self.gating_net is None else list(self.gating_net.parameters())

    def describe(self) -> dict[str, object]:
        """Shape and architecture in one flat mapping: ``moe_config.json`` and the policy contract's ``moe``."""
        return {**dataclasses.asdict(self.shape), **dataclasses.asdict(self.config)}

    def save(self, directory: str | pathlib.Path) -> None:
        """Weights as safetensors plus the config as JSON (no pickle), replacing ``directory`` as a whole.

        Both files are written into a temporary sibling folder that then takes the place of
        ``directory``, so a reader (or a crash) never finds new weights with an old config
        or a half-written file.
        """
        directory = pathlib.Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        try:
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the policy from other users
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(staging / _WEIGHTS))
            (staging / _CONFIG).write_text(json.dumps(self.describe(), indent=2, sort_keys=True))
            atomic_replace_dir(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @staticmethod
    def load(directory: str | pathlib.Path, device: str | torch.device = "cpu") -> GaussianMoE:
        directory = pathlib.Path(directory)
        moe = GaussianMoE(*split_description(json.loads((directory / _CONFIG).read_text()), str(directory / _CONFIG)))
        moe.load_state_dict(load_file(str(directory / _WEIGHTS), device=str(device)))
        return moe.to(device)


def split_description(data: dict[str, object], where: str) -> tuple[PolicyShape, MoEConfig]:
    """Inverse of ``GaussianMoE.describe`` (files written before the split hold the same flat keys)."""
    shape_keys = {f.name for f in dataclasses.fields(PolicyShape)}
    shape = from_dict(PolicyShape, {k: v for k, v in data.items() if k in shape_keys}, where)
    return shape, from_dict(MoEConfig, {k: v for k, v in data.items() if k not in shape_keys}, where)


def is_diagonal(scale: torch.Tensor, mean: torch.Tensor) -> bool:
    return scale.dim() == mean.dim()


def expert_log_prob(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(x_n; mu_k, Sigma_k) for every point n and expert k: x (B, N, D) -> (B, N, Z)."""
    d = mean.shape[-1]
    diff = x.unsqueeze(2) - mean.unsqueeze(1)  # (B, N, Z, D)
    if is_diagonal(scale, mean):
        maha = (diff / scale.unsqueeze(1)).square().sum(-1)
        log_det = scale.log().sum(-1).unsqueeze(1)
    else:
        # One triangular solve per (state, expert) with all N points as right-hand sides.
        rhs = diff.permute(0, 2, 3, 1)  # (B, Z, D, N)
        sol = torch.linalg.solve_triangular(scale, rhs, upper=False)
        maha = sol.square().sum(-2).transpose(1, 2)
        log_det = torch.diagonal(scale, dim1=-2, dim2=-1).log().sum(-1).unsqueeze(1)
    return -0.5 * maha - log_det - 0.5 * d * math.log(2 * math.pi)


def entropy(mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Closed-form Gaussian entropy of every expert, (B, Z)."""
    d = mean.shape[-1]
    diag = scale if is_diagonal(scale, mean) else torch.diagonal(scale, dim1=-2, dim2=-1)
    return diag.log().sum(-1) + 0.5 * d * (1.0 + math.log(2 * math.pi))


def rsample(mean: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Reparameterised samples mu_z + L_z eps: eps (B, Z, V, D) -> (B, Z, V, D)."""
    if is_diagonal(scale, mean):
        return mean.unsqueeze(2) + scale.unsqueeze(2) * eps
    return mean.unsqueeze(2) + torch.einsum("bzij,bzvj->bzvi", scale, eps)


def mixture_log_prob(x: torch.Tensor, out: MoEOutput) -> torch.Tensor:
    """log q(x|s) of points x (B, N, D) under the whole mixture, (B, N)."""
    return torch.logsumexp(expert_log_prob(x, out.mean, out.scale) + out.log_gating.unsqueeze(1), dim=-1)
