"""An external network as a Teacher: exact scores per prediction type, YAML loading, frozen under distillation."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re

import numpy as np
import onnx
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from vdd_ros.data.dataset import DemoDataset, save_dataset
from vdd_ros.data.shape import PolicyShape
from vdd_ros.export.contract import METADATA_KEY, PolicyContract
from vdd_ros.pipeline import distill_job
from vdd_ros.pipeline.distill_config import DistillJobConfig, check_config
from vdd_ros.pipeline.evaluate import open_policy
from vdd_ros.tasks.registry import get_task
from vdd_ros.teacher.checkpoint import TeacherCheckpointError, load_teacher, teacher_sha256
from vdd_ros.teacher.ddpm import cosine_alpha_bar
from vdd_ros.teacher.external import DDPMSchedule, EDMSchedule, ExternalTeacher, ExternalTeacherConfig, LinearBetas
from vdd_ros.teacher.policy import TeacherPolicy
from vdd_ros.util.config import ConfigError, load_config, markdown_table
from vdd_ros.util.files import sha256_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # tiny tensors: more threads only add contention on a shared CPU

# The "network": exact epsilon / x0 / v / D / F of a Gaussian mixture whose means move with the
# observation. It is written next to each teacher.yaml and also executed here for its helpers.
GMM_SOURCE = '''
import math

import torch
from torch import nn


def mixture_score(x, means, variances, log_w):
    """grad_x log sum_k w_k N(x; means_k, diag(variances_k)); x (B, D), means (B, K, D), variances (B|1, K, D)."""
    diff = x.unsqueeze(1) - means
    log_comp = log_w - 0.5 * (diff**2 / variances + variances.log()).sum(-1)
    resp = torch.softmax(log_comp, dim=-1).unsqueeze(-1)
    return -(resp * diff / variances).sum(1)


class GMMNet(nn.Module):
    """x0 | o ~ sum_k w_k N(means_k + gain o, diag(stds_k^2)) in flat (B, D) vectors, D = H * A."""

    def __init__(self, weights, means, stds, gain, kind="ddpm", prediction="epsilon", alpha_bar=(0.5,),
                 timestep="zero_based", karras=False, sigma_data=0.5):
        super().__init__()
        self.means = nn.Parameter(torch.tensor(means, dtype=torch.float64))
        self.stds = nn.Parameter(torch.tensor(stds, dtype=torch.float64))
        self.gain = nn.Parameter(torch.tensor(gain, dtype=torch.float64))
        self.register_buffer("log_w", torch.tensor(weights, dtype=torch.float64).log())
        self.register_buffer("alpha_bar", torch.tensor(alpha_bar, dtype=torch.float64))
        self.kind, self.prediction, self.timestep, self.karras, self.sigma_data = (
            kind, prediction, timestep, karras, sigma_data)

    def component_means(self, obs):
        return self.means + (obs.reshape(obs.shape[0], -1).double() @ self.gain.T).unsqueeze(1)

    def forward(self, x, obs, t):
        shape, b = x.shape, x.shape[0]
        x = x.reshape(b, -1).double()
        means, var0 = self.component_means(obs), self.stds.unsqueeze(0) ** 2
        if self.kind == "ddpm":
            n = self.alpha_bar.shape[0]
            idx = {"zero_based": t, "one_based": t - 1, "fraction": torch.round(t * n)}[self.timestep].long()
            ab = self.alpha_bar[idx].view(-1, 1)
            score = mixture_score(x, ab.sqrt().unsqueeze(1) * means, ab.unsqueeze(1) * var0 + 1 - ab.unsqueeze(1),
                                  self.log_w)
            eps = -(1 - ab).sqrt() * score
            x0 = (x + (1 - ab) * score) / ab.sqrt()
            out = {"epsilon": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[self.prediction]
        else:
            sigma = (torch.exp(4 * t) if self.karras else t).double().view(-1, 1)
            c_in = 1 / (sigma**2 + self.sigma_data**2).sqrt()
            if self.karras:
                x = x / c_in
            score = mixture_score(x, means, var0 + sigma.unsqueeze(1) ** 2, self.log_w)
            d = x + sigma**2 * score
            out = -sigma * score if self.prediction == "epsilon" else d
            if self.karras:
                c_skip = self.sigma_data**2 / (sigma**2 + self.sigma_data**2)
                c_out = sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()
                out = (d - c_skip * x) / c_out
        return out.reshape(shape)
'''
GMM = {}
exec(compile(GMM_SOURCE, "gmm_net.py", "exec"), GMM)

T, OD, H, A = 3, 2, 2, 2  # obs window, obs dim, action chunk, action dim
D = H * A
rng = np.random.default_rng(0)
MIX = {
    "weights": [0.5, 0.3, 0.2],
    "means": rng.normal(0, 1.0, (3, D)).round(3).tolist(),
    "stds": rng.uniform(0.2, 0.6, (3, D)).round(3).tolist(),
    "gain": rng.normal(0, 0.2, (D, T * OD)).round(3).tolist(),
}
ALPHA_BAR = cosine_alpha_bar(10).float().double().tolist()  # float32-exact, as the adapter stores it
# Normalisers (float32-exact values): the model's spaces and, differently, the package's.
MODEL_NORM = {"obs": {"mean": [0.5, -1.0], "std": [2.0, 0.25]}, "act": {"mean": [0.25, -0.5], "std": [2.0, 0.5]}}
PACKAGE_NORM = {"obs": {"mean": [-0.25, 0.75], "std": [0.5, 4.0]}, "act": {"mean": [-0.125, 0.375], "std": [0.25, 1.5]}}


def _write_teacher(folder: pathlib.Path, net_kwargs: dict, **yaml_fields) -> pathlib.Path:
    """gmm_net.py + weights.safetensors + teacher.yaml in ``folder``; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gmm_net.py").write_text(GMM_SOURCE)
    kwargs = {**MIX, **net_kwargs}
    net = GMM["GMMNet"](**kwargs)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / "weights.safetensors")
    doc = {
        "module": "gmm_net.py",
        "class": "GMMNet",
        "kwargs": kwargs,
        "weights": "weights.safetensors",
        "obs_window": T,
        "act_chunk": H,
        "obs_dim": OD,
        "act_dim": A,
        "obs_names": ["o1", "o2"],
        "act_names": ["a1", "a2"],
        "control_period_s": 0.05,
        "task": "synthetic",
        "normalization": MODEL_NORM,
        "package_normalization": PACKAGE_NORM,
        **yaml_fields,
    }
    path = folder / "teacher.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _affine(d: dict, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(d[what]["mean"], dtype=torch.float64), torch.tensor(d[what]["std"], dtype=torch.float64)


def _expected_score(u: torch.Tensor, raw_obs: torch.Tensor, kind: str, level: torch.Tensor) -> torch.Tensor:
    """Score of the noised mixture in the package's action space, computed through raw units.

    The model's noisy variable X (model units) is R = s_m X + m_m in raw units and U = (R - m_p) / s_p
    in the package's; U is again a Gaussian mixture whose score is taken directly.
    """
    m_mo, s_mo = _affine(MODEL_NORM, "obs")
    m_ma, s_ma = (x.repeat(H) for x in _affine(MODEL_NORM, "act"))
    m_pa, s_pa = (x.repeat(H) for x in _affine(PACKAGE_NORM, "act"))
    net = GMM["GMMNet"](**MIX)
    means = net.component_means((raw_obs - m_mo) / s_mo).detach()  # model units (B, K, D)
    var0 = net.stds.detach().unsqueeze(0) ** 2
    if kind == "ddpm":
        ab = torch.tensor(ALPHA_BAR, dtype=torch.float64)[level.long()].view(-1, 1, 1)
        means, var = ab.sqrt() * means, ab * var0 + 1 - ab
    else:
        var = var0 + level.view(-1, 1, 1) ** 2
    raw_means, raw_var = s_ma * means + m_ma, s_ma**2 * var
    score = GMM["mixture_score"](u.reshape(u.shape[0], -1), (raw_means - m_pa) / s_pa, raw_var / s_pa**2, MIX_LOG_W)
    return score.reshape(u.shape)


MIX_LOG_W = torch.tensor(MIX["weights"], dtype=torch.float64).log()

CASES = {
    "ddpm-epsilon": ({"kind": "ddpm", "prediction": "epsilon"}, {"prediction": "epsilon"}),
    "ddpm-x0-keywords-flat-one_based": (
        {"kind": "ddpm", "prediction": "x0", "timestep": "one_based"},
        {"prediction": "x0", "call": ["noisy"], "call_keywords": {"t": "t", "obs": "obs"}, "act_shape": "flat"},
    ),
    "ddpm-v-fraction-flat-obs": (
        {"kind": "ddpm", "prediction": "v", "timestep": "fraction"},
        {"prediction": "v", "obs_shape": "flat"},
    ),
    "edm-denoiser": ({"kind": "edm", "prediction": "x0"}, {"prediction": "x0"}),
    "edm-epsilon": ({"kind": "edm", "prediction": "epsilon"}, {"prediction": "epsilon"}),
    "edm-karras-F": ({"kind": "edm", "prediction": "x0", "karras": True}, {"prediction": "x0"}),
}


def _schedule(net_kwargs: dict) -> dict:
    if net_kwargs["kind"] == "ddpm":
        return {"kind": "ddpm", "alpha_bar": ALPHA_BAR, "timestep": net_kwargs.get("timestep", "zero_based")}
    return {"kind": "edm", "preconditioning": "karras" if net_kwargs.get("karras") else "none"}


@pytest.mark.parametrize("case", list(CASES))
def test_score_is_the_exact_score_of_the_noised_mixture_in_the_package_space(tmp_path, case):
    net_kwargs, fields = CASES[case]
    if net_kwargs["kind"] == "ddpm":
        net_kwargs = {**net_kwargs, "alpha_bar": ALPHA_BAR}
    path = _write_teacher(tmp_path, net_kwargs, schedule=_schedule(net_kwargs), **fields)
    teacher, meta = load_teacher(path)
    teacher.double()
    gen = torch.Generator().manual_seed(1)
    b = 64
    raw_obs = torch.randn(b, T, OD, generator=gen, dtype=torch.float64)
    u = 2 * torch.randn(b, H, A, generator=gen, dtype=torch.float64)
    m_po, s_po = _affine(PACKAGE_NORM, "obs")
    obs_u = (raw_obs - m_po) / s_po
    if net_kwargs["kind"] == "ddpm":
        level = torch.randint(0, len(ALPHA_BAR), (b,), generator=gen)
    else:
        level = torch.exp(torch.empty(b, dtype=torch.float64).uniform_(math.log(0.05), math.log(5.0), generator=gen))
    got = teacher.score(u, obs_u, level)
    want = _expected_score(u, raw_obs, net_kwargs["kind"], level.double())
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    assert meta.obs_norm.to_dict() == PACKAGE_NORM["obs"] and meta.act_norm.to_dict() == PACKAGE_NORM["act"]


@pytest.mark.parametrize("kind", ["ddpm", "edm"])
def test_samples_follow_the_mixture_in_the_package_space(tmp_path, kind):
    """Many exact sampler steps reproduce the mixture's mean and spread (package space, mapped back)."""
    if kind == "ddpm":
        table = cosine_alpha_bar(100).float().double().tolist()
        net_kwargs = {"kind": "ddpm", "alpha_bar": table}
        schedule = {"kind": "ddpm", "cosine": 100, "sampler": "ddpm"}
    else:
        net_kwargs = {"kind": "edm", "prediction": "x0"}
        schedule = {"kind": "edm", "sigma_min": 0.002, "sigma_max": 40.0, "sampler": "heun", "sample_steps": 40}
    path = _write_teacher(tmp_path, net_kwargs, schedule=schedule, prediction="x0" if kind == "edm" else "epsilon")
    teacher, _ = load_teacher(path)
    n = 3000
    raw_obs = _affine(MODEL_NORM, "obs")[0].float().expand(n, T, OD)  # the model's obs 0: the mixture near 0, as
    # sampling from N(0, sigma_max^2) assumes (an offset mu would bias EDM samples by about -std * mu / sigma_max)
    m_po, s_po = _affine(PACKAGE_NORM, "obs")
    chunk = teacher.sample(((raw_obs - m_po) / s_po).float(), generator=torch.Generator().manual_seed(0)).double()
    # Reference draws from the mixture itself, mapped to the package's space through raw units.
    net = GMM["GMMNet"](**MIX)
    m_mo, s_mo = _affine(MODEL_NORM, "obs")
    means = net.component_means((raw_obs[:1].double() - m_mo) / s_mo).detach()[0]
    k = torch.multinomial(torch.tensor(MIX["weights"]), n, replacement=True, generator=torch.Generator().manual_seed(1))
    x0 = means[k] + net.stds.detach()[k] * torch.randn(n, D, generator=torch.Generator().manual_seed(2)).double()
    m_ma, s_ma = (x.repeat(H) for x in _affine(MODEL_NORM, "act"))
    m_pa, s_pa = (x.repeat(H) for x in _affine(PACKAGE_NORM, "act"))
    ref = ((s_ma * x0 + m_ma) - m_pa) / s_pa
    got = chunk.reshape(n, D)
    spread = ref.std(0)
    assert torch.all((got.mean(0) - ref.mean(0)).abs() < 0.1 * spread), (got.mean(0), ref.mean(0))
    assert torch.all((got.std(0) / spread - 1).abs() < 0.1), (got.std(0), spread)


def test_schedules_and_noise_levels(tmp_path):
    betas = torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)
    table = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(DDPMSchedule(linear=LinearBetas(steps=50)).table(), table)
    torch.testing.assert_close(DDPMSchedule(betas=tuple(betas.tolist())).table(), table)
    torch.testing.assert_close(DDPMSchedule(cosine=8).table(), cosine_alpha_bar(8))
    path = _write_teacher(
        tmp_path, {"alpha_bar": ALPHA_BAR}, schedule={"kind": "ddpm", "alpha_bar": ALPHA_BAR, "noise_high": 2}
    )
    teacher, meta = load_teacher(path, sampler="ddim")
    assert teacher.sampler == "ddim" and teacher.default_sample_steps == 10 and meta.family == "external"
    levels = teacher.sample_noise_levels(200, generator=torch.Generator().manual_seed(0))
    assert set(levels.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="whole steps"):
        teacher.check_noise_range(0, 10)
    edm = _write_teacher(tmp_path / "edm", {"kind": "edm"}, schedule={"kind": "edm"}, prediction="x0")
    teacher, _ = load_teacher(edm)
    levels = teacher.sample_noise_levels(100)
    assert float(levels.min()) >= 0.2 and float(levels.max()) <= 0.5
    with pytest.raises(ValueError, match="sigmas"):
        teacher.check_noise_range(0.0, 1.0)


def test_loads_from_yaml_with_metadata_frozen_network_and_identity(tmp_path):
    path = _write_teacher(
        tmp_path, {"alpha_bar": ALPHA_BAR}, schedule={"kind": "ddpm", "alpha_bar": ALPHA_BAR}, obs_noise=0.05
    )
    teacher, meta = load_teacher(path)
    assert isinstance(teacher, ExternalTeacher) and teacher.shape == PolicyShape(OD, A, T, H)
    assert (meta.family, meta.obs_names, meta.act_names) == ("external", ("o1", "o2"), ("a1", "a2"))
    assert (meta.obs_window, meta.act_chunk, meta.control_period_s, meta.task) == (T, H, 0.05, "synthetic")
    assert meta.training == {"config": {"obs_noise": 0.05}} and meta.diffusion["prediction"] == "epsilon"
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert teacher.training and not teacher.net.training  # the wrapped network stays in eval mode
    assert teacher_sha256(path) == sha256_file(path, tmp_path / "weights.safetensors")
    policy = open_policy(teacher=str(path))
    assert isinstance(policy, TeacherPolicy) and policy.name == "teacher-external-ddpm-10"
    policy.reset(2, seed=0)
    assert policy.act(np.zeros((2, OD), np.float32)).shape == (2, A)


def _error(path: pathlib.Path) -> str:
    with pytest.raises(TeacherCheckpointError) as info:
        load_teacher(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_yaml_fails_in_one_line(tmp_path):
    schedule = {"kind": "ddpm", "alpha_bar": ALPHA_BAR}
    ok = {"alpha_bar": ALPHA_BAR}
    cases = {
        "missing module file": ({"module": "nowhere.py"}, r"module file .*nowhere\.py does not exist"),
        "missing import": ({"module": "no_such_package_xyz.net"}, r"cannot import module 'no_such_package_xyz\.net'"),
        "missing class": ({"class": "Nope"}, r"module 'gmm_net\.py' has no class 'Nope'"),
        "unknown prediction": ({"prediction": "score"}, r"prediction: expected one of .*'score'"),
        "wrong length": (
            {"schedule": {**schedule, "steps": 12}},
            r"the alpha_bar schedule has 10 steps but steps is 12",
        ),
        "unknown kind": ({"schedule": {"kind": "flow"}}, r"schedule.kind must be one of"),
        "unknown key": ({"predicton": "x0"}, r"unknown key 'predicton'; did you mean 'prediction'"),
        "v on edm": ({"prediction": "v", "schedule": {"kind": "edm"}}, r"prediction v needs a ddpm schedule"),
        "names": ({"act_names": ["a1"]}, r"act_names has 1 entries, expected act_dim = 2"),
    }
    for i, (name, (fields, pattern)) in enumerate(cases.items()):
        path = _write_teacher(tmp_path / str(i), ok, **{"schedule": schedule, **fields})
        assert re.search(pattern, _error(path)), name
    # A state dict that does not fit the class: one component too few.
    path = _write_teacher(tmp_path / "fit", ok, schedule=schedule)
    small = GMM["GMMNet"](**{**MIX, "weights": [0.5, 0.5], "means": MIX["means"][:2], "stds": MIX["stds"][:2]})
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, tmp_path / "fit" / "weights.safetensors")
    assert re.search(r"weights .* do not fit GMMNet: .*means: \(2, 4\) in the file, \(3, 4\) in GMMNet", _error(path))
    tensors = {**load_file(tmp_path / "0" / "weights.safetensors"), "extra": torch.zeros(1)}
    save_file(tensors, tmp_path / "fit" / "weights.safetensors")
    assert "unexpected ['extra']" in _error(path)
    (tmp_path / "fit" / "weights.safetensors").unlink()
    assert "missing weights" in _error(path)


def test_docs_tables_match_the_code():
    text = (ROOT / "docs" / "teacher.md").read_text()
    for config in (ExternalTeacherConfig, DDPMSchedule, EDMSchedule):
        assert markdown_table(config) in text, f"regenerate the {config.__name__} table in docs/teacher.md"


def test_docs_example_loads(tmp_path):
    """The minimal example of docs/teacher.md: its module, its YAML, weights saved from the class."""
    text = (ROOT / "docs" / "teacher.md").read_text().split("## Your own teacher", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    doc = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    (tmp_path / "my_denoiser.py").write_text(code)
    (tmp_path / "teacher.yaml").write_text(doc)
    namespace: dict = {}
    exec(compile(code, "my_denoiser.py", "exec"), namespace)
    kwargs = yaml.safe_load(doc)["kwargs"]
    save_file(namespace["EpsMLP"](**kwargs).state_dict(), tmp_path / "my_denoiser.safetensors")
    teacher, meta = load_teacher(tmp_path / "teacher.yaml")
    obs = torch.zeros(3, meta.obs_window, meta.obs_dim)
    assert teacher.score(torch.zeros(3, 1, meta.act_dim), obs, torch.zeros(3)).shape == (3, 1, meta.act_dim)
    assert teacher.sample(obs).shape == (3, 1, meta.act_dim)


# -- distillation through the job: the wrapped network is never trained --------------------------

TASK = get_task("avoiding")


def _avoiding_teacher(folder: pathlib.Path) -> pathlib.Path:
    """A two-mode mixture with the Avoiding task's shapes and names (actions in centimetre-ish model units)."""
    mix = {"weights": [0.5, 0.5], "means": [[0.5, 0.0], [-0.5, 0.0]], "stds": [[0.3, 0.3], [0.3, 0.3]]}
    return _write_teacher(
        folder,
        {**mix, "gain": np.full((2, 20), 0.01).tolist(), "alpha_bar": ALPHA_BAR},
        schedule={"kind": "ddpm", "alpha_bar": ALPHA_BAR},
        obs_window=5,
        act_chunk=1,
        obs_dim=4,
        act_dim=2,
        obs_names=list(TASK.obs_names),
        act_names=list(TASK.act_names),
        control_period_s=TASK.control_period_s,
        task=TASK.name,
        normalization={"act": {"mean": [0.0, 0.0], "std": [0.01, 0.01]}},
        package_normalization={},
    )


def test_evaluate_tool_rolls_out_a_teacher_yaml(tmp_path, monkeypatch, capsys):
    from vdd_ros.cli.evaluate import main

    monkeypatch.chdir(tmp_path)
    yaml_path = _avoiding_teacher(tmp_path / "mine")
    assert main([f"teacher={yaml_path}", "episodes=2"]) == 0
    report = yaml.safe_load((tmp_path / "runs" / "eval" / "teacher" / "eval_teacher.json").read_text())
    assert report["episodes"] == 2 and report["policy"] == "teacher-external-ddpm-10"
    (tmp_path / "mine" / "weights.safetensors").write_bytes(b"not safetensors")
    capsys.readouterr()
    assert main([f"teacher={yaml_path}", "episodes=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluate: error: ") and "not a safetensors file" in err[0]


def test_distillation_leaves_the_wrapped_network_unchanged(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    start = np.array([0.525, -0.28, 0.525, -0.28], np.float32)
    obs = [start + np.cumsum(rng.normal(0, 0.01, (30, 4)), 0).astype(np.float32) for _ in range(4)]
    act = [rng.normal(0, 0.01, (30, 2)).astype(np.float32) for _ in range(4)]
    ds = DemoDataset(obs, act, TASK.obs_names, TASK.act_names, TASK.control_period_s, np.full(4, -1), TASK.name)
    save_dataset(ds, tmp_path / "demos.safetensors")
    yaml_path = _avoiding_teacher(tmp_path / "teacher")
    seen = []

    def capture(*args, **kwargs):
        seen.append(load_teacher(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(distill_job, "load_teacher", capture)
    overrides = {
        "teacher": str(yaml_path),
        "dataset": str(tmp_path / "demos.safetensors"),
        "output": str(tmp_path / "out"),
        "moe.hidden": 16,
        "moe.trunk_blocks": 1,
        "train.iterations": 4,
        "train.batch_size": 8,
        "eval.every": 0,
        "eval.final_episodes": 2,
        "torch_threads": 1,
        "device": "cpu",
    }
    cfg = load_config(DistillJobConfig, overrides=overrides)
    summary = distill_job.run_distillation(cfg)
    assert summary["status"] == "done" and summary["eval"]["episodes"] == 2
    ((teacher, _meta),) = seen
    before = load_file(yaml_path.parent / "weights.safetensors")
    after = teacher.net.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not teacher.net.training and not any(p.requires_grad for p in teacher.net.parameters())
    model = onnx.load(str(tmp_path / "out" / "policy.onnx"))
    contract = PolicyContract.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert contract.teacher_sha256 == teacher_sha256(yaml_path) and contract.training["teacher_family"] == "external"
    assert contract.training["train"]["obs_noise"] == 0.0  # the YAML records none
    with pytest.raises(ConfigError, match="is not a file"):
        check_config(dataclasses.replace(cfg, teacher=str(tmp_path / "missing.yaml")))
