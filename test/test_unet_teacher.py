"""The temporal U-Net denoiser (network.kind: unet1d): shapes, training, checkpoints, old files, external, ONNX."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from safetensors.torch import save_file

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.pipeline.latency import teacher_onnx_call
from vdd_ros.teacher.checkpoint import META_FILE, TeacherMeta, load_teacher, save_teacher, teacher_meta_fields
from vdd_ros.teacher.config import NetworkConfig, TeacherTrainConfig
from vdd_ros.teacher.ddpm import DDPMConfig, DDPMTeacher
from vdd_ros.teacher.edm import EDMConfig, EDMTeacher
from vdd_ros.teacher.network import DenoiserMLP, build_denoiser
from vdd_ros.teacher.policy import TeacherPolicy
from vdd_ros.teacher.unet import TemporalUNet
from vdd_ros.util.config import load_config

UNET = NetworkConfig(kind="unet1d", width=16, emb_dim=8, unet_channels=(8, 16), unet_kernel=3, unet_groups=4)
FAMILIES = {"ddpm": (DDPMTeacher, DDPMConfig), "edm": (EDMTeacher, EDMConfig)}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _teacher(family: str, obs_window: int = 2, act_chunk: int = 4, **config: object) -> DDPMTeacher | EDMTeacher:
    cls, config_cls = FAMILIES[family]
    return cls(3, 2, obs_window, act_chunk, UNET, config_cls(**config))


def _meta(teacher: DDPMTeacher | EDMTeacher) -> TeacherMeta:
    identity = {n: Normalizer(np.zeros(n, np.float32), np.ones(n, np.float32)).to_dict() for n in (2, 3)}
    return TeacherMeta(
        **teacher_meta_fields(teacher),
        obs_names=("a", "b", "c"),
        act_names=("x", "y"),
        control_period_s=0.1,
        task="synthetic",
        obs_normalizer=identity[3],
        act_normalizer=identity[2],
    )


@pytest.mark.parametrize("act_chunk", [1, 3, 8])
@pytest.mark.parametrize("obs_window", [1, 2])
@pytest.mark.parametrize("channels", [(8,), (8, 16, 16)])
def test_shapes_for_any_chunk_length(act_chunk: int, obs_window: int, channels: tuple[int, ...]) -> None:
    """Odd and short chunks are padded to a multiple of 2^(levels - 1) and cropped back."""
    net = build_denoiser(3, 2, obs_window, act_chunk, dataclasses.replace(UNET, unet_channels=channels))
    assert isinstance(net, TemporalUNet)
    noisy, obs, cond = torch.randn(5, act_chunk, 2), torch.randn(5, obs_window, 3), torch.rand(5)
    out = net(noisy, obs, cond)
    assert out.shape == (5, act_chunk, 2)
    torch.testing.assert_close(net(noisy.reshape(5, -1), obs.reshape(5, -1), cond), out)  # flat inputs too
    teacher = _teacher("ddpm", obs_window, act_chunk, sampler="ddim", steps=16, sample_steps=10).eval()
    assert teacher.sample(obs).shape == (5, act_chunk, 2)


def test_conditioning_reaches_the_output() -> None:
    """Observation window and noise level both change the prediction (FiLM in every block)."""
    net = build_denoiser(3, 2, 2, 4, UNET)
    noisy, obs, cond = torch.randn(2, 4, 2), torch.randn(2, 2, 3), torch.rand(2)
    out = net(noisy, obs, cond)
    assert not torch.allclose(out, net(noisy, obs + 1, cond))
    assert not torch.allclose(out, net(noisy, obs, cond + 0.5))


def test_mlp_stays_the_default() -> None:
    assert NetworkConfig().kind == "mlp" and isinstance(build_denoiser(3, 2, 2, 4, NetworkConfig()), DenoiserMLP)
    with pytest.raises(ValueError, match="unet_groups"):
        NetworkConfig(unet_channels=(8, 12), unet_groups=8)
    with pytest.raises(ValueError, match="unet_kernel"):
        NetworkConfig(unet_kernel=4)


@pytest.mark.parametrize("family", ["ddpm", "edm"])
def test_loss_falls(family: str) -> None:
    """A few dozen AdamW steps on a chunk that is a smooth function of the window."""
    teacher = _teacher(family)
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(128, 2, 3, generator=gen)
    ramp = torch.linspace(0.5, 1.5, 4).view(1, 4, 1)
    actions = ramp * obs[:, -1:, :2]  # (128, 4, 2)
    opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = teacher.loss(obs, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses


@pytest.mark.parametrize("family", ["ddpm", "edm"])
def test_checkpoint_roundtrip_is_exact(tmp_path: pathlib.Path, family: str) -> None:
    teacher = _teacher(family).eval()
    meta = _meta(teacher)
    save_teacher(teacher, meta, tmp_path)
    saved = json.loads((tmp_path / META_FILE).read_text())["network"]
    assert saved["kind"] == "unet1d" and saved["unet_channels"] == [8, 16]
    loaded, loaded_meta = load_teacher(tmp_path)
    assert loaded_meta == meta and isinstance(loaded.net, TemporalUNet) and loaded.network_config == UNET
    obs, a = torch.randn(6, 2, 3), torch.randn(6, 4, 2)
    level = teacher.sample_noise_levels(6)
    assert torch.equal(teacher.score(a, obs, level), loaded.score(a, obs, level))
    gen = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(teacher.sample(obs, generator=gen[0]), loaded.sample(obs, generator=gen[1]))


def test_teacher_json_without_kind_loads_as_mlp(tmp_path: pathlib.Path) -> None:
    """Files written before network.kind (and the unet_* sizes) existed."""
    teacher = DDPMTeacher(3, 2, 2, 1, NetworkConfig(width=16, blocks=1, emb_dim=8)).eval()
    save_teacher(teacher, _meta(teacher), tmp_path)
    data = json.loads((tmp_path / META_FILE).read_text())
    data["network"] = {k: v for k, v in data["network"].items() if k in ("width", "blocks", "emb_dim", "layer_norm")}
    (tmp_path / META_FILE).write_text(json.dumps(data))
    loaded, _ = load_teacher(tmp_path)
    assert loaded.network_config.kind == "mlp" and isinstance(loaded.net, DenoiserMLP)
    a, obs, t = torch.zeros(3, 1, 2), torch.randn(3, 2, 3), torch.zeros(3)
    assert torch.equal(loaded.score(a, obs, t), teacher.score(a, obs, t))


def test_yaml_selects_the_unet_and_training_saves_it(tmp_path: pathlib.Path) -> None:
    from vdd_ros.teacher.train import TrainData, train_teacher

    (tmp_path / "t.yaml").write_text(
        "family: edm\nobs_window: 2\nact_chunk: 3\niterations: 3\nbatch_size: 8\nwarmup: 1\ncheckpoint_every: 0\n"
        "device: cpu\ntorch_threads: 1\ndiffusion: {sample_steps: 2}\n"
        "network: {kind: unet1d, width: 16, emb_dim: 8, unet_channels: [8, 16], unet_kernel: 3, unet_groups: 4}\n"
    )
    cfg = load_config(TeacherTrainConfig, tmp_path / "t.yaml")
    assert cfg.network == UNET
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(32, 2, 3)).astype(np.float32)
    act = np.repeat(obs[:, -1:, :2], 3, axis=1)
    norm = (Normalizer.fit(obs.reshape(-1, 3)), Normalizer.fit(act.reshape(-1, 2)))
    data = TrainData(obs, act, *norm, obs_names=("a", "b", "c"), act_names=("x", "y"), control_period_s=0.1, task="s")
    teacher, meta = load_teacher(train_teacher(cfg, data, tmp_path / "out").output)
    assert meta.network["kind"] == "unet1d" and isinstance(teacher.net, TemporalUNet)
    assert teacher.sample(torch.zeros(2, 2, 3)).shape == (2, 3, 2)


def test_external_yaml_runs_the_unet_with_the_same_scores(tmp_path: pathlib.Path) -> None:
    """TemporalUNet named by an external teacher YAML scores exactly like the DDPM teacher it came from."""
    teacher = _teacher("ddpm", act_chunk=3).eval()
    save_file(teacher.net.state_dict(), tmp_path / "unet.safetensors")
    kwargs = {"obs_dim": 3, "act_dim": 2, "obs_window": 2, "act_chunk": 3, "channels": [8, 16], "kernel_size": 3}
    doc = {
        "module": "vdd_ros.teacher.unet",
        "class": "TemporalUNet",
        "kwargs": kwargs | {"groups": 4, "emb_dim": 8, "cond_width": 16},
        "weights": "unet.safetensors",
        "prediction": "epsilon",
        "schedule": {"kind": "ddpm", "cosine": 8, "timestep": "fraction", "clip_x0": 3.0},
        "obs_window": 2,
        "act_chunk": 3,
        "obs_dim": 3,
        "act_dim": 2,
        "obs_names": ["a", "b", "c"],
        "act_names": ["x", "y"],
        "control_period_s": 0.1,
    }
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(doc))
    external, _ = load_teacher(tmp_path / "teacher.yaml")
    obs, a, t = torch.randn(5, 2, 3), torch.randn(5, 3, 2), torch.randint(0, 8, (5,))
    torch.testing.assert_close(external.score(a, obs, t), teacher.score(a, obs, t))
    assert external.sample(obs).shape == (5, 3, 2)


def test_onnx_export_matches_torch(tmp_path: pathlib.Path) -> None:
    """The denoiser exports (opset 17, legacy tracer, as the latency figures use) and onnxruntime agrees."""
    teacher = _teacher("edm", act_chunk=3).eval()
    noisy, obs, cond = torch.randn(1, 3, 2), torch.randn(1, 2, 3), torch.rand(1)
    path = tmp_path / "unet.onnx"
    torch.onnx.export(teacher.net, (noisy, obs, cond), str(path), dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = dict(zip((i.name for i in session.get_inputs()), (noisy.numpy(), obs.numpy(), cond.numpy()), strict=True))
    (out,) = session.run(None, feed)
    np.testing.assert_allclose(out, teacher.net(noisy, obs, cond).detach().numpy(), rtol=1e-4, atol=1e-5)
    call = teacher_onnx_call(TeacherPolicy(teacher, _meta(teacher)), steps=3)
    assert callable(call), call  # the unrolled sampler exports too
    assert call()[0].shape == noisy.shape  # one action chunk, batch 1
