"""The torch backend computes what the ONNX graph computes, from the weights beside it, and is vetted alike."""

from __future__ import annotations

import itertools
import json
import pathlib

import numpy as np
import pytest
import torch

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.data.shape import PolicyShape
from vdd_ros.export.contract import ContractError, PolicyContract
from vdd_ros.export.onnx_export import export_policy, weights_path
from vdd_ros.moe.config import MoEConfig
from vdd_ros.moe.policy import GaussianMoE
from vdd_ros.runtime.noise import SAMPLING_MODES, NoiseSource
from vdd_ros.runtime.onnx_policy import load_policy
from vdd_ros.runtime.providers import CPU, CUDA, ProviderOptions
from vdd_ros.runtime.serving import ServingConfig, ServingCore, Source
from vdd_ros.runtime.torch_policy import load_torch_policy, torch_device
from vdd_ros.util.files import sha256_file

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, T, H, Z = 4, 2, 3, 2, 5
OBS_NORM = Normalizer(np.array([0.5, -0.1, 0.5, -0.1], np.float32), np.array([0.1, 0.2, 0.1, 0.2], np.float32))
ACT_NORM = Normalizer(np.array([0.001, 0.004], np.float32), np.array([0.01, 0.02], np.float32))
PARITY = 1e-5


def _export(folder: pathlib.Path, covariance: str, velocity_gain: float = 0.0, nan: bool = False) -> pathlib.Path:
    torch.manual_seed(0)
    config = MoEConfig(
        num_experts=Z, covariance=covariance, velocity_gain=velocity_gain, gating="learned", hidden=32, head_hidden=16
    )
    moe = GaussianMoE(PolicyShape(OBS_DIM, ACT_DIM, T, H), config)
    moe.fit_delta_scale(torch.cumsum(0.05 * torch.randn(16, T, OBS_DIM), dim=1))
    with torch.no_grad():  # state-dependent means, skewed gating, correlated full covariances
        for p in moe.parameters():
            p.add_(0.1 * torch.randn_like(p))
        moe.gating_net[-1].bias.copy_(torch.linspace(-1.0, 1.0, Z))
        if nan:
            moe.mean_head[-1].bias[0] = float("nan")
    contract = PolicyContract(
        policy_id=f"torch-{covariance}",
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
    )
    path = folder / "policy.onnx"
    export_policy(moe, contract, OBS_NORM, ACT_NORM, path)
    return path


@pytest.fixture(
    scope="module", params=[("diagonal", 0.0), ("full", 0.0), ("full", 1.5)], ids=lambda p: f"{p[0]}-{p[1]}"
)
def pair(request, tmp_path_factory):
    """(onnx policy, torch policy) of one export."""
    path = _export(tmp_path_factory.mktemp("torch"), *request.param)
    return load_policy(str(path)), load_torch_policy(str(path))


def _windows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (OBS_NORM.mean + 3 * OBS_NORM.std * rng.standard_normal((n, 1, T, OBS_DIM))).astype(np.float32)


@pytest.mark.parametrize("mode", SAMPLING_MODES)
def test_batch1_steps_match_the_onnx_graph(pair, mode: str) -> None:
    onnx_policy, torch_policy = pair
    noise = NoiseSource(mode, 3, Z, H * ACT_DIM)
    for window in _windows(40, 1):
        gumbel, eps = noise.draw(1)
        ref, got = onnx_policy.run(window, gumbel, eps), torch_policy.run(window, gumbel, eps)
        assert got[0].shape == ref[0].shape == (1, H, ACT_DIM) and got[1].dtype == np.int64
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=PARITY)
        np.testing.assert_allclose(got[2], ref[2], rtol=0, atol=PARITY)


def test_other_batch_sizes_run_eagerly_with_the_same_values(pair) -> None:
    onnx_policy, torch_policy = pair
    obs = _windows(7, 2)[:, 0]
    gumbel, eps = NoiseSource("sample", 4, Z, H * ACT_DIM).draw(7)
    ref, got = onnx_policy.run(obs, gumbel, eps), torch_policy.run(obs, gumbel, eps)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=PARITY)


def test_consecutive_sampled_steps_differ_and_outputs_are_fresh_arrays(pair) -> None:
    """The static buffers are refilled each call: new noise, new action; a returned array is never overwritten."""
    _, torch_policy = pair
    window = _windows(1, 3)[0]
    noise = NoiseSource("sample", 5, Z, H * ACT_DIM)
    actions = [torch_policy.run(window, *noise.draw(1))[0] for _ in range(6)]
    assert all(not np.allclose(a, b) for a, b in itertools.pairwise(actions))
    first = actions[0].copy()
    torch_policy.run(window, *noise.draw(1))
    np.testing.assert_array_equal(actions[0], first)


def test_identity_and_provider(pair, tmp_path) -> None:
    onnx_policy, torch_policy = pair
    weights = weights_path(onnx_policy.path)
    assert torch_policy.path == str(weights) and torch_policy.contract == onnx_policy.contract
    assert torch_policy.sha256 == sha256_file(weights) == pathlib.Path(f"{weights}.sha256").read_text().split()[0]
    assert (torch_policy.provider, torch_policy.provider_fallback, torch_policy.fallback_reason) == (
        "torch:cpu",
        False,
        "",
    )
    assert load_torch_policy(str(weights)).sha256 == torch_policy.sha256  # the weights path itself works too


def test_serving_core_drives_the_torch_policy(pair) -> None:
    _, torch_policy = pair
    core = ServingCore(torch_policy, ServingConfig(sampling_mode="sample"))
    assert core.offer(OBS_NORM.mean.astype(np.float64), 0, 0, 0.0) is None
    decision = core.tick(0.01)
    assert decision is not None and decision.source == Source.POLICY and decision.action.shape == (ACT_DIM,)
    assert decision.chunk_step == 0  # the first action of an H-action chunk


def test_a_gpu_request_without_cuda_falls_back_with_a_reason() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the fallback cannot happen here")
    device, reason = torch_device([CUDA, CPU], ProviderOptions())
    assert device == "cpu" and "torch.cuda.is_available() is False" in reason
    assert torch_device([CPU], ProviderOptions()) == ("cpu", "")


def test_vetting_is_the_onnx_loaders(tmp_path) -> None:
    """A non-finite expert mean fails the same probe with the same reason under both backends."""
    path = _export(tmp_path, "diagonal", nan=True)
    reasons = []
    for load in (load_policy, load_torch_policy):
        with pytest.raises(ContractError, match="vetting: non-finite action") as err:
            load(str(path))
        reasons.append(str(err.value).split(": ", 1)[1])
    assert reasons[0] == reasons[1]


def test_bad_weights_are_refused_with_one_reason(tmp_path) -> None:
    path = _export(tmp_path, "diagonal")
    weights = weights_path(path)
    with pytest.raises(ContractError, match="neither an onnx file"):
        load_torch_policy(str(tmp_path / "policy.pt"))
    good = weights.read_bytes()
    weights.write_bytes(b"garbage")
    with pytest.raises(ContractError, match="is not a safetensors file"):
        load_torch_policy(str(path))
    # a network description (the metadata) that the stored tensors do not fit
    size = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + size])
    student = json.loads(header["__metadata__"]["vdd_ros.student"])
    header["__metadata__"]["vdd_ros.student"] = json.dumps({**student, "hidden": 2 * student["hidden"]})
    raw = json.dumps(header).encode()
    weights.write_bytes(len(raw).to_bytes(8, "little") + raw + good[8 + size :])
    with pytest.raises(ContractError, match="do not rebuild the student"):
        load_torch_policy(str(path))
    weights.unlink()
    with pytest.raises(ContractError, match="does not exist"):
        load_torch_policy(str(path))


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the CUDA-graph step is checked by scripts/device_check.sh"
)
def test_cuda_graph_step_matches_the_cpu_step(tmp_path) -> None:
    path = _export(tmp_path, "full")
    cpu = load_torch_policy(str(path))
    gpu = load_torch_policy(str(path), [CUDA, CPU], options=ProviderOptions(cuda_graph=True))
    assert gpu.provider == "torch:cuda:0+cudagraph"
    noise = NoiseSource("sample", 0, Z, H * ACT_DIM)
    for window in _windows(20, 4):
        gumbel, eps = noise.draw(1)
        ref, got = cpu.run(window, gumbel, eps), gpu.run(window, gumbel, eps)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=PARITY)


def test_controller_serves_the_torch_backend_and_hot_swaps(start_node, ros, tmp_path) -> None:
    """``backend: torch`` end to end: actions flow, status names the backend and the fallback, a swap is vetted."""
    from test_controller import ControllerClient

    from vdd_ros.export.random_policy import export_random_policy
    from vdd_ros.harness.process import ros_params

    paths = [str(tmp_path / f"{name}.onnx") for name in ("a", "b")]
    for seed, path in enumerate(paths):
        export_random_policy(path, policy_id=f"torch-{seed}", seed=seed)
    params = {
        "policy_path": paths[0],
        "backend": "torch",
        "providers": [CUDA, CPU],
        "observation_type": "array",
        "control_rate_hz": 50.0,
        "status_rate_hz": 10.0,
    }
    node = start_node("controller", ["-r", "__ns:=/torch_backend", *ros_params(params)])
    client = ControllerClient(ros, "torch_backend")
    client.wait_actions(20, what=f"actions; log:\n{node.log()}")
    status = client.wait_status()
    assert status.policy_path == str(weights_path(paths[0])) and status.policy_id == "torch-0"
    if not torch.cuda.is_available():
        assert (status.execution_provider, status.provider_fallback) == ("torch:cpu", True)
        assert "torch has no CUDA device" in node.log()
    result = client.set_policy(paths[1])
    assert result.ok, result.reason
    client.wait_last(lambda a: a.policy_id == "torch-1", "actions of the swapped-in policy")
