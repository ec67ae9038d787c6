"""Export a GaussianMoE as ONE self-contained ONNX graph that speaks raw units.

The graph folds in both normalisers, selects the expert by Gumbel-max
(z = argmax(log q(z|s) + gumbel)) and returns mu_z + L_z eps, so the runtime needs no
torch and no knowledge of the training spaces. The noise enters as inputs (see
``vdd_ros.export.contract``). The file is written to a temporary name in the target
folder and renamed, so a watcher never sees a partial policy.
"""

from __future__ import annotations

import copy
import io
import json
import pathlib
import warnings
from typing import TYPE_CHECKING

import safetensors.torch
import torch
from torch import nn
from torch.nn import functional as F

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.export.contract import INPUT_NAMES, METADATA_KEY, OUTPUT_NAMES, PolicyContract
from vdd_ros.moe.policy import GaussianMoE
from vdd_ros.util.files import write_with_sha256

if TYPE_CHECKING:  # onnx is imported where a graph is written: the torch backend rebuilds the student without it
    import onnx

OPSET = 17
STUDENT_KEY = "vdd_ros.student"  # safetensors metadata: GaussianMoE.describe() of the weights


def _fold_normalisation(layer: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """W (x - m) / s + b == (W / s) x + (b - (W / s) m) over the first len(m) inputs: no Sub and Div."""
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        weight = folded.weight[:, : mean.numel()]
        weight.div_(std)
        folded.bias.sub_(weight @ mean)
    return folded


def _direction_map(moe: GaussianMoE, obs_std: torch.Tensor) -> torch.Tensor:
    """C with raw_window @ C.T == gain * delta_scale * (successive differences of the normalised window).

    The normaliser's mean cancels in a difference and its std folds into C, so the graph computes
    the direction features as one MatMul and a Tanh instead of Sub, Div, two Slices, Sub and two Muls.
    """
    window, dim = moe.shape.obs_window, moe.shape.obs_dim
    gain = moe.config.velocity_gain * moe.delta_scale.detach().cpu() / obs_std
    rows = torch.zeros(window - 1, dim, window, dim)
    for t in range(window - 1):
        rows[t, :, t + 1] = torch.diag(gain)
        rows[t, :, t] = -torch.diag(gain)
    return rows.reshape((window - 1) * dim, window * dim)


def _fused_head_input(moe: GaussianMoE) -> nn.Linear:
    """The mean and covariance heads' first layers as one wider layer (one Gemm and one activation).

    The output layers stay separate, each reading its half of the fused hidden layer: padding
    them to the full width would double their weights, and at batch 1 the graph's time goes
    to reading weights and to per-node overhead, not to arithmetic.
    """
    (m1, _, _), (c1, _, _) = moe.mean_head, moe.cov_head
    first = nn.Linear(m1.in_features, m1.out_features + c1.out_features)
    with torch.no_grad():
        first.weight.copy_(torch.cat([m1.weight, c1.weight]))
        first.bias.copy_(torch.cat([m1.bias, c1.bias]))
    return first


def _diagonal_outputs(moe: GaussianMoE, act_mean: torch.Tensor, act_std: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """The heads' output layers with constants folded into their biases: the mean head's gives
    mean + act_mean / act_std (so the de-normalising product adds act_mean), the covariance head's
    gives raw + diag_shift (so softplus of it, plus min_std, is the std)."""
    mean_out, std_out = copy.deepcopy(moe.mean_head[2]), copy.deepcopy(moe.cov_head[2])
    with torch.no_grad():
        mean_out.bias.add_((act_mean / act_std).repeat(moe.config.num_experts))
        std_out.bias.add_(moe.diag_shift)
    return mean_out, std_out


def _selection_maps(num_experts: int, act_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(masks, collect): row z of masks marks expert z's block of a flat (B, Z*D) head output, and
    x @ collect sums the marked block back to (B, D) times the action std: the pick and the
    de-normalisation as a lookup and a matrix product, with no Reshape or ReduceSum in the graph."""
    d = act_std.numel()
    masks = torch.kron(torch.eye(num_experts), torch.ones(1, d))
    collect = torch.kron(torch.ones(num_experts, 1), torch.diag(act_std))
    return masks, collect


class _RawPolicyGraph(nn.Module):
    """(obs raw, gumbel, eps) -> (action raw, expert, gating): what the exported graph computes.

    The same function as ``moe`` behind both normalisers, rearranged for a small graph: the
    observation normaliser is folded into the trunk's input layer and the direction features'
    map, the two heads are fused, the expert is drawn from the gating logits (Gumbel-max is
    invariant to log-softmax's per-state shift, so softmax alone gives the gating output), and
    with diagonal covariances the chosen expert's mean and std are picked and de-normalised by
    constant matrix products (``_selection_maps``). At batch 1 a graph's time is per-node
    overhead and weight reads, not arithmetic (docs/results.md).
    """

    def __init__(self, moe: GaussianMoE, obs_normalizer: Normalizer, act_normalizer: Normalizer) -> None:
        super().__init__()
        cfg, shape = moe.config, moe.shape
        self.moe = moe
        self.act_chunk, self.act_dim, self.num_experts = shape.act_chunk, shape.act_dim, cfg.num_experts
        obs_mean = torch.as_tensor(obs_normalizer.mean, dtype=torch.float32)
        obs_std = torch.as_tensor(obs_normalizer.std, dtype=torch.float32)
        window = shape.obs_window
        self.trunk_input = _fold_normalisation(moe.trunk.inp, obs_mean.repeat(window), obs_std.repeat(window))
        self.directions = cfg.velocity_gain > 0 and window > 1
        if self.directions:
            self.register_buffer("direction_map", _direction_map(moe, obs_std))
        act_mean = torch.as_tensor(act_normalizer.mean, dtype=torch.float32).repeat(shape.act_chunk)
        act_std = torch.as_tensor(act_normalizer.std, dtype=torch.float32).repeat(shape.act_chunk)
        self.register_buffer("act_mean", act_mean)
        self.register_buffer("act_std", act_std)
        self.head_in = _fused_head_input(moe)
        self.head_act = copy.deepcopy(moe.mean_head[1])
        self.head_hidden = cfg.head_hidden
        self.diagonal = cfg.covariance == "diagonal"
        if self.diagonal:
            self.mean_out, self.std_out = _diagonal_outputs(moe, act_mean, act_std)
            masks, collect = _selection_maps(cfg.num_experts, act_std)
            self.register_buffer("masks", masks)
            self.register_buffer("collect", collect)
            self.register_buffer("min_std", cfg.min_std * act_std)

    def _features(self, obs: torch.Tensor) -> torch.Tensor:
        """``moe.features`` of the normalised window, computed from the raw one."""
        x = obs.flatten(1)
        if self.directions:
            x = torch.cat([x, torch.tanh(F.linear(x, self.direction_map))], dim=-1)
        trunk = self.moe.trunk
        return trunk.act(trunk.blocks(self.trunk_input(x)))

    def _diagonal_draw(
        self, mean_hidden: torch.Tensor, cov_hidden: torch.Tensor, expert: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """mu_z + sigma_z * eps in raw units (B, D): a row lookup, two masked products, and a Gemm whose C is
        the noise term."""
        mask = F.embedding(expert, self.masks)
        std = F.linear(F.softplus(self.std_out(cov_hidden)) * mask, self.collect.T, self.min_std)
        return torch.addmm(std * eps, self.mean_out(mean_hidden) * mask, self.collect)

    def _full_draw(
        self, mean_hidden: torch.Tensor, cov_hidden: torch.Tensor, expert: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """mu_z + L_z eps in raw units (B, D).

        Selected by a one-hot mask rather than gather + squeeze: same values, and a graph of
        constant shapes (a Shape/Gather/If chain costs more than the matmuls: docs/results.md).
        """
        pick = F.one_hot(expert, self.num_experts).to(eps.dtype)
        means, scales = self.moe.components_from_heads(
            self.moe.mean_head[2](mean_hidden), self.moe.cov_head[2](cov_hidden)
        )
        mean = (means * pick.unsqueeze(-1)).sum(1)
        scale = (scales * pick.view(-1, self.num_experts, 1, 1)).sum(1)
        return (mean + (scale @ eps.unsqueeze(-1)).squeeze(-1)) * self.act_std + self.act_mean

    def forward(
        self, obs: torch.Tensor, gumbel: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self._features(obs)
        mean_hidden, cov_hidden = self.head_act(self.head_in(feats)).split(self.head_hidden, dim=-1)
        logits = self.moe.gating_logits(feats)
        expert = torch.argmax(logits + gumbel, dim=-1)
        draw = self._diagonal_draw if self.diagonal else self._full_draw
        action = draw(mean_hidden, cov_hidden, expert, eps)
        return action.view(-1, self.act_chunk, self.act_dim), expert, torch.softmax(logits, dim=-1)


def check_contract(moe: GaussianMoE, contract: PolicyContract) -> None:
    """Refuse to stamp a contract that does not describe the network."""
    shape = moe.shape
    pairs = {
        "obs_dim": shape.obs_dim,
        "act_dim": shape.act_dim,
        "obs_window": shape.obs_window,
        "act_chunk": shape.act_chunk,
        "num_experts": moe.config.num_experts,
        "covariance": moe.config.covariance,
    }
    wrong = [
        f"{k}: contract {getattr(contract, k)!r}, network {v!r}" for k, v in pairs.items() if getattr(contract, k) != v
    ]
    if wrong:
        raise ValueError("contract does not match the network: " + "; ".join(wrong))
    PolicyContract.from_json(contract.to_json())  # never write a file the runtime would refuse


def to_onnx_bytes(moe: GaussianMoE, obs_normalizer: Normalizer, act_normalizer: Normalizer) -> bytes:
    """Serialised graph without metadata.

    Exports a CPU copy, leaving the caller's module untouched. Uses the TorchScript
    exporter (``dynamo=False``): one file with inline weights, a plain dynamic batch axis, and
    an export many times faster than the dynamo exporter's (docs/results.md, measurement notes).
    """
    graph = _RawPolicyGraph(copy.deepcopy(moe).cpu(), obs_normalizer, act_normalizer).eval()
    shape = moe.shape
    example = (
        torch.zeros(2, shape.obs_window, shape.obs_dim),
        torch.zeros(2, moe.config.num_experts),
        torch.zeros(2, shape.action_size),
    )
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            graph,
            example,
            buf,
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)},
            opset_version=OPSET,
        )
    return buf.getvalue()


def weights_path(onnx_path: str | pathlib.Path) -> pathlib.Path:
    """Where the student's weights lie beside its graph: ``policy.onnx`` -> ``policy.safetensors``."""
    return pathlib.Path(onnx_path).with_suffix(".safetensors")


def save_weights(moe: GaussianMoE, contract: PolicyContract, path: str | pathlib.Path) -> str:
    """The student's weights as safetensors (+ ``.sha256``) for the torch backend; return the sha256.

    The metadata holds the same contract JSON as the ONNX file and the network's description,
    so ``vdd_ros.runtime.torch_policy`` rebuilds exactly this ``GaussianMoE`` without the graph.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in moe.state_dict().items()}
    metadata = {METADATA_KEY: contract.to_json(), STUDENT_KEY: json.dumps(moe.describe(), sort_keys=True)}
    return write_with_sha256(pathlib.Path(path), safetensors.torch.save(tensors, metadata))


def export_policy(
    moe: GaussianMoE,
    contract: PolicyContract,
    obs_normalizer: Normalizer,
    act_normalizer: Normalizer,
    path: str | pathlib.Path,
) -> str:
    """Write ``path`` (and ``<path>.sha256``) atomically; return the file's sha256.

    The weights for the torch backend follow at ``weights_path(path)`` (``save_weights``).
    """
    import onnx

    check_contract(moe, contract)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load_from_string(to_onnx_bytes(moe, obs_normalizer, act_normalizer))
    onnx.helper.set_model_props(model, {METADATA_KEY: contract.to_json()})
    digest = save_model(model, path)
    save_weights(moe, contract, weights_path(path))
    return digest


def save_model(model: onnx.ModelProto, path: str | pathlib.Path) -> str:
    """Check and write ``model`` and its ``<path>.sha256`` sidecar atomically; return the sha256."""
    import onnx

    path = pathlib.Path(path)
    onnx.checker.check_model(model)
    return write_with_sha256(path, model.SerializeToString())
