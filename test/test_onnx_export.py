"""The exported graph computes exactly what the PyTorch MoE does, in raw units, atomically."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.data.shape import PolicyShape
from vdd_ros.export.contract import METADATA_KEY, PolicyContract
from vdd_ros.export.onnx_export import export_policy
from vdd_ros.export.random_policy import export_random_policy
from vdd_ros.moe.config import MoEConfig
from vdd_ros.moe.policy import GaussianMoE
from vdd_ros.runtime.onnx_policy import load_policy
from vdd_ros.util import files
from vdd_ros.util.files import sha256_file

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, T, H, Z = 4, 2, 5, 3, 6
OBS_NORM = Normalizer(np.array([0.5, -0.1, 0.5, -0.1], np.float32), np.array([0.1, 0.2, 0.1, 0.2], np.float32))
ACT_NORM = Normalizer(np.array([0.001, 0.004], np.float32), np.array([0.01, 0.02], np.float32))


def _moe(covariance: str, velocity_gain: float = 1.5, activation: str = "mish") -> GaussianMoE:
    torch.manual_seed(0)
    moe = GaussianMoE(
        PolicyShape(OBS_DIM, ACT_DIM, T, H),
        MoEConfig(
            num_experts=Z, covariance=covariance, velocity_gain=velocity_gain, activation=activation, gating="learned"
        ),
    )
    moe.fit_delta_scale(torch.cumsum(0.05 * torch.randn(32, T, OBS_DIM), dim=1))
    with torch.no_grad():  # make the graph non-trivial: state-dependent means, skewed gating, correlations
        for p in moe.parameters():
            p.add_(0.1 * torch.randn_like(p))
        moe.gating_net[-1].bias.copy_(torch.linspace(-1.5, 1.5, Z))
    return moe


def _contract(covariance: str) -> PolicyContract:
    return PolicyContract(
        policy_id="test",
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        obs_window=T,
        act_chunk=H,
        num_experts=Z,
        control_period_s=0.035,
        obs_names=("dx", "dy", "x", "y"),
        act_names=("vx", "vy"),
        obs_normalizer=OBS_NORM.to_dict(),
        act_normalizer=ACT_NORM.to_dict(),
        covariance=covariance,
        training={"iterations": 3},
    )


# velocity_gain 0: the exporter folds the observation normaliser into the trunk's input layer.
@pytest.fixture(
    scope="module",
    params=[("diagonal", 1.5, "mish"), ("full", 1.5, "mish"), ("diagonal", 0.0, "silu"), ("full", 0.0, "mish")],
    ids=lambda p: "-".join(map(str, p)),
)
def exported(request, tmp_path_factory):
    cov, velocity_gain, activation = request.param
    moe = _moe(cov, velocity_gain, activation)
    path = tmp_path_factory.mktemp(cov) / "policy.onnx"
    digest = export_policy(moe, _contract(cov), OBS_NORM, ACT_NORM, path)
    return moe, path, digest, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _obs(rng: np.random.Generator, n: int) -> np.ndarray:
    return (OBS_NORM.mean + OBS_NORM.std * rng.standard_normal((n, T, OBS_DIM))).astype(np.float32)


def _torch_reference(moe: GaussianMoE, obs: np.ndarray):
    with torch.no_grad():
        out = moe(torch.from_numpy(OBS_NORM.normalize(obs)))
    return out.log_gating.numpy(), out.mean.numpy(), out.scale.numpy()


def test_parity_with_pytorch(exported):
    moe, _, _, sess = exported
    rng = np.random.default_rng(1)
    obs = _obs(rng, 64)
    gumbel = rng.gumbel(size=(64, Z)).astype(np.float32)
    eps = rng.standard_normal((64, H * ACT_DIM)).astype(np.float32)
    action, expert, gating = sess.run(None, {"obs": obs, "gumbel": gumbel, "eps": eps})

    log_gating, mean, scale = _torch_reference(moe, obs)
    ref_expert = np.argmax(log_gating + gumbel, axis=1)
    idx = np.arange(64)
    if scale.ndim == 3:
        norm_action = mean[idx, ref_expert] + scale[idx, ref_expert] * eps
    else:
        norm_action = mean[idx, ref_expert] + np.einsum("bij,bj->bi", scale[idx, ref_expert], eps)
    ref_action = ACT_NORM.denormalize(norm_action.reshape(64, H, ACT_DIM))

    assert action.shape == (64, H, ACT_DIM) and expert.dtype == np.int64 and gating.shape == (64, Z)
    np.testing.assert_array_equal(expert, ref_expert)
    assert np.abs(action - ref_action).max() <= 1e-5
    assert np.abs(gating - np.exp(log_gating)).max() <= 1e-5
    assert len(set(expert.tolist())) > 1  # the test exercises more than one expert


def test_greedy_and_mean_modes(exported):
    moe, _, _, sess = exported
    obs = _obs(np.random.default_rng(2), 16)
    zeros_g, zeros_e = np.zeros((16, Z), np.float32), np.zeros((16, H * ACT_DIM), np.float32)
    action, expert, gating = sess.run(None, {"obs": obs, "gumbel": zeros_g, "eps": zeros_e})
    _, mean, _ = _torch_reference(moe, obs)
    np.testing.assert_array_equal(expert, np.argmax(gating, axis=1))
    chosen = ACT_NORM.denormalize(mean[np.arange(16), expert].reshape(16, H, ACT_DIM))
    assert np.abs(action - chosen).max() <= 1e-5


def test_dynamic_batch(exported):
    sess = exported[3]
    for n in (1, 7):
        out = sess.run(
            None,
            {
                "obs": _obs(np.random.default_rng(n), n),
                "gumbel": np.zeros((n, Z), np.float32),
                "eps": np.zeros((n, H * ACT_DIM), np.float32),
            },
        )
        assert [o.shape[0] for o in out] == [n, n, n]


def test_bound_batch_one_calls_match_session_run(exported):
    """LoadedPolicy.run's bound path (batch 1) gives run()'s values and fresh arrays; other batches fall back."""
    _, path, _, sess = exported
    loaded = load_policy(str(path))
    rng = np.random.default_rng(3)
    for n in (1, 1, 5):
        feed = (_obs(rng, n), rng.gumbel(size=(n, Z)).astype(np.float32), rng.standard_normal((n, H * ACT_DIM)))
        got = loaded.run(feed[0], feed[1], feed[2].astype(np.float32))
        want = sess.run(None, {"obs": feed[0], "gumbel": feed[1], "eps": feed[2].astype(np.float32)})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    first = loaded.run(*(a[:1] for a in feed[:2]), np.zeros((1, H * ACT_DIM), np.float32))[0]
    kept = first.copy()
    loaded.run(_obs(rng, 1), np.zeros((1, Z), np.float32), np.ones((1, H * ACT_DIM), np.float32))
    np.testing.assert_array_equal(first, kept)  # a later call does not overwrite a returned action


def test_gumbel_frequencies_match_gating(exported):
    """Gumbel-max draws expert z with probability q(z|s).

    With n = 20k draws each frequency has standard error sqrt(p(1-p)/n) <= 0.0035; a
    5-sigma band per expert keeps the false-failure rate below 1e-5 while a wrong
    sampler (e.g. uniform, or the log-gating ignored) is off by > 0.05 here.
    """
    sess = exported[3]
    n = 20_000
    obs = np.repeat(_obs(np.random.default_rng(3), 1), n, axis=0)
    gumbel = np.random.default_rng(4).gumbel(size=(n, Z)).astype(np.float32)
    _, expert, gating = sess.run(None, {"obs": obs, "gumbel": gumbel, "eps": np.zeros((n, H * ACT_DIM), np.float32)})
    p = gating[0]
    assert p.max() - p.min() > 0.1  # skewed gating, so the check has teeth
    freq = np.bincount(expert, minlength=Z) / n
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9)


def test_metadata_and_hash(exported):
    _, path, digest, _ = exported
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    contract = PolicyContract.from_json(props[METADATA_KEY])
    assert contract == _contract(contract.covariance)
    assert digest == sha256_file(path)
    assert pathlib.Path(f"{path}.sha256").read_text().split()[0] == digest
    assert not any(p.name.endswith(".data") for p in path.parent.iterdir())  # single file, weights inline


def test_contract_mismatch_is_refused(tmp_path):
    bad = dataclasses.replace(_contract("diagonal"), num_experts=Z + 1)
    with pytest.raises(ValueError, match="num_experts"):
        export_policy(_moe("diagonal"), bad, OBS_NORM, ACT_NORM, tmp_path / "p.onnx")
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    """The target only ever appears complete (via rename); a failed write leaves the old file and no debris."""
    path = tmp_path / "p.onnx"
    path.write_bytes(b"old policy")
    real_replace = os.replace
    seen = []

    def checking_replace(src, dst):
        if pathlib.Path(dst) == path:
            assert pathlib.Path(src).parent == tmp_path  # same folder, so rename is atomic
            assert path.read_bytes() == b"old policy"
            onnx.checker.check_model(onnx.load(str(src)))  # the temp file is already complete
            seen.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", checking_replace)
    export_policy(_moe("diagonal"), _contract("diagonal"), OBS_NORM, ACT_NORM, path)
    assert seen == [path]

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    before = path.read_bytes()
    with pytest.raises(OSError):
        export_policy(_moe("full"), _contract("full"), OBS_NORM, ACT_NORM, path)
    assert path.read_bytes() == before
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["p.onnx", "p.onnx.sha256", "p.safetensors", "p.safetensors.sha256"]  # the first export's


def test_random_policy_is_fast_and_valid(tmp_path):
    start = time.perf_counter()
    digest = export_random_policy(tmp_path / "r.onnx", policy_id="r1", seed=3)
    assert time.perf_counter() - start < 2.0
    assert digest == export_random_policy(tmp_path / "r2.onnx", policy_id="r1", seed=3)  # reproducible
    sess = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    model = onnx.load(str(tmp_path / "r.onnx"))
    contract = PolicyContract.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert (contract.policy_id, contract.obs_dim, contract.act_dim, contract.obs_window, contract.num_experts) == (
        "r1",
        4,
        2,
        5,
        8,
    )
    action, _, gating = sess.run(
        None,
        {
            "obs": np.zeros((3, 5, 4), np.float32),
            "gumbel": np.zeros((3, 8), np.float32),
            "eps": np.zeros((3, 2), np.float32),
        },
    )
    assert action.shape == (3, 1, 2) and np.all(np.abs(action) < 0.05)
    np.testing.assert_allclose(gating.sum(1), 1.0, rtol=1e-5)


def test_uniform_gating_graph_has_constant_shapes(tmp_path):
    """Batch-1 latency is dominated by node count: no shape arithmetic or control flow in the graph."""
    torch.manual_seed(0)
    moe = GaussianMoE(PolicyShape(OBS_DIM, ACT_DIM, T, H), MoEConfig(num_experts=Z, gating="uniform"))
    path = tmp_path / "uniform.onnx"
    export_policy(moe, _contract("diagonal"), OBS_NORM, ACT_NORM, path)
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert not ops & {"Shape", "If", "GatherElements", "Where", "Expand", "ConstantOfShape"}, ops
    assert not ops & {"OneHot", "ReduceSum", "LogSoftmax", "Exp"}, ops  # diagonal: picked by a row lookup and Gemms
    constants = {init.name for init in graph.initializer}
    lookups = [node for node in graph.node if node.op_type == "Gather"]
    assert [node.input[0] in constants for node in lookups] == [True], "one Gather: the expert's row of a constant"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    gumbel = rng.gumbel(size=(5, Z)).astype(np.float32)
    feeds = {"obs": _obs(rng, 5), "gumbel": gumbel, "eps": np.zeros((5, H * ACT_DIM), np.float32)}
    _, expert, gating = sess.run(None, feeds)
    np.testing.assert_allclose(gating, 1.0 / Z, rtol=1e-6)
    np.testing.assert_array_equal(expert, np.argmax(gumbel, axis=1))


def test_export_refuses_a_contract_the_runtime_would_refuse(tmp_path: pathlib.Path) -> None:
    from vdd_ros.export.contract import ContractError

    with pytest.raises(ContractError, match="policy_id"):
        export_random_policy(tmp_path / "p.onnx", policy_id="x" * 300)
    assert not (tmp_path / "p.onnx").exists()
