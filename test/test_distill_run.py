"""The distillation job end to end on a tiny teacher: export with full contract, resume, fail-fast inputs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import pytest
import torch

from vdd_ros.data.dataset import DemoDataset, dataset_sha256, save_dataset
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.export.contract import METADATA_KEY, PolicyContract
from vdd_ros.pipeline.distill_config import DistillJobConfig
from vdd_ros.pipeline.distill_job import DistillError, run_distillation
from vdd_ros.tasks.registry import get_task
from vdd_ros.teacher.checkpoint import TeacherMeta, save_teacher, teacher_meta_fields, teacher_sha256
from vdd_ros.teacher.config import NetworkConfig
from vdd_ros.teacher.ddpm import DDPMTeacher
from vdd_ros.util.config import ConfigError, load_config
from vdd_ros.util.files import sha256_file
from vdd_ros.util.progress import EvalResult, Notice, Resumed, TrainProgress

torch.set_num_threads(1)
TEACHER_OBS_NOISE = 0.05  # what the tiny teacher records as its training jitter
TASK = get_task("avoiding")
TASK_NAME, OBS_NAMES, ACT_NAMES, CONTROL_PERIOD_S = TASK.name, TASK.obs_names, TASK.act_names, TASK.control_period_s


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    rng = np.random.default_rng(0)
    start = np.array([0.525, -0.28, 0.525, -0.28], np.float32)
    obs = [start + np.cumsum(rng.normal(0, 0.01, (30, 4)), 0).astype(np.float32) for _ in range(4)]
    act = [rng.normal(0, 0.01, (30, 2)).astype(np.float32) for _ in range(4)]
    ds = DemoDataset(obs, act, OBS_NAMES, ACT_NAMES, CONTROL_PERIOD_S, np.full(4, -1), TASK_NAME)
    save_dataset(ds, root / "demos.safetensors")
    torch.manual_seed(0)
    teacher = DDPMTeacher(4, 2, 5, 1, NetworkConfig(width=16, blocks=1, emb_dim=4))
    meta = TeacherMeta(
        **teacher_meta_fields(teacher),
        obs_names=OBS_NAMES,
        act_names=ACT_NAMES,
        control_period_s=CONTROL_PERIOD_S,
        task=TASK_NAME,
        obs_normalizer=Normalizer.fit(np.concatenate(obs)).to_dict(),
        act_normalizer=Normalizer.fit(np.concatenate(act)).to_dict(),
        dataset_sha256=dataset_sha256(root / "demos.safetensors"),
        training={"config": {"obs_noise": TEACHER_OBS_NOISE}},
    )
    save_teacher(teacher, meta, root / "teacher")
    return root


def _cfg(root, name: str = "out", **overrides) -> DistillJobConfig:
    """A tiny job; ``overrides`` use the dotted setting names, e.g. ``**{"eval.every": 0}``."""
    base = {
        "teacher": str(root / "teacher"),
        "dataset": str(root / "demos.safetensors"),
        "output": str(root / name),
        "moe.hidden": 16,
        "moe.trunk_blocks": 1,
        "train.iterations": 4,
        "train.batch_size": 8,
        "eval.every": 2,
        "eval.episodes": 2,
        "eval.final_episodes": 2,
        "checkpoint_every": 2,
        "torch_threads": 1,
        "device": "cpu",
    }
    return load_config(DistillJobConfig, overrides={**base, **overrides})


def _contract(path) -> PolicyContract:
    model = onnx.load(str(path))
    return PolicyContract.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])


@pytest.mark.parametrize("method", ["vdd", "em"])
def test_exports_policy_with_full_contract(inputs, method):
    events = []
    summary = run_distillation(_cfg(inputs, name=method, method=method), on_progress=events.append)
    assert summary["status"] == "done" and [e["iteration"] for e in summary["evals"]] == [2, 4]
    path = inputs / method / "policy.onnx"
    assert summary["sha256"] == sha256_file(path)
    contract = _contract(path)
    assert contract.task == TASK_NAME and contract.obs_names == OBS_NAMES and contract.created_utc
    assert contract.dataset_sha256 == dataset_sha256(inputs / "demos.safetensors")
    assert contract.teacher_sha256 == (teacher_sha256(inputs / "teacher") if method == "vdd" else "")
    assert contract.training["method"] == method and contract.training["train"]["iterations"] == 4
    assert contract.training["train"]["obs_noise"] == TEACHER_OBS_NOISE  # the teacher's, resolved
    assert contract.training["moe"]["obs_window"] == 5 and contract.training["moe"]["hidden"] == 16
    assert (contract.act_chunk, contract.act_exec) == (1, 1)  # act_exec 0: half the chunk, rounded up
    assert "output" not in contract.training and contract.training["teacher"] == "teacher"  # no machine paths
    assert json.loads((inputs / method / "summary.json").read_text())["sha256"] == summary["sha256"]
    evals = [e for e in events if isinstance(e, EvalResult)]
    assert [(e.iteration, e.final) for e in evals] == [(2, False), (4, False), (summary["selected_iteration"], True)]
    assert evals[-1].episodes == 2 and evals[-1].success_rate == summary["eval"]["success_rate"]
    train = [e for e in events if isinstance(e, TrainProgress)]
    assert [e.iteration for e in train] == [2, 4] and "expert_loss" in train[0].stats and "lr" in train[0].stats
    assert not [e for e in events if isinstance(e, Notice)]
    assert sorted(p.name for p in (inputs / method).iterdir()) == [
        "best", "checkpoint", "policy.onnx", "policy.onnx.sha256", "policy.safetensors",
        "policy.safetensors.sha256", "summary.json"
    ]  # fmt: skip


def test_student_layout_parameters_reach_the_network(inputs):
    overrides = {"moe.activation": "silu", "moe.hidden": 32, "moe.head_hidden": 16, "eval.every": 0}
    run_distillation(_cfg(inputs, name="layout", **overrides))
    contract = _contract(inputs / "layout" / "policy.onnx")
    layout = {k: contract.training["moe"][k] for k in ("activation", "hidden", "trunk_blocks", "head_hidden")}
    assert layout == {"activation": "silu", "hidden": 32, "trunk_blocks": 1, "head_hidden": 16}
    ops = {n.op_type for n in onnx.load(str(inputs / "layout" / "policy.onnx")).graph.node}
    assert "Sigmoid" in ops and "Tanh" not in ops  # SiLU in the trunk and heads, no Mish left


def test_an_explicit_obs_noise_other_than_the_teachers_is_reported(inputs):
    events = []
    cfg = _cfg(inputs, name="jitter", **{"train.obs_noise": 0.2, "eval.every": 0, "eval.final_episodes": 0})
    run_distillation(cfg, on_progress=events.append)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == [f"train.obs_noise 0.2 differs from the {TEACHER_OBS_NOISE:g} the teacher was trained with"]
    assert _contract(inputs / "jitter" / "policy.onnx").training["train"]["obs_noise"] == 0.2


def test_a_noise_range_the_teacher_family_cannot_use_fails_before_any_output(inputs):
    """DDPM levels are whole steps t < steps (8 here); sigma-like values are refused, nothing is written."""
    for low, high in ((0.0, 8.0), (0.2, 0.5)):
        cfg = _cfg(inputs, name="badrange", **{"vdd.noise_low": low, "vdd.noise_high": high})
        with pytest.raises(ConfigError, match=r"vdd\.noise_low/noise_high for this ddpm teacher"):
            run_distillation(cfg)
        assert not (inputs / "badrange").exists()


def test_executing_more_actions_than_the_teachers_chunk_fails_before_any_output(inputs):
    with pytest.raises(DistillError, match="act_exec 2 exceeds the teacher's chunk of 1 actions"):
        run_distillation(_cfg(inputs, name="overexec", act_exec=2))
    assert not (inputs / "overexec").exists()


def test_stop_then_resume(inputs):
    cfg = _cfg(inputs, name="resume", **{"eval.every": 0, "eval.final_episodes": 0})
    checks = itertools.count()
    stopped = run_distillation(cfg, should_stop=lambda: next(checks) >= 2)  # polled once per iteration
    assert stopped["status"] == "stopped" and stopped["iteration"] == 2
    events = []
    done = run_distillation(cfg, on_progress=events.append)
    assert done["status"] == "done" and Resumed(2) in events
    with pytest.raises(DistillError, match="different configuration"):
        run_distillation(_cfg(inputs, name="resume", **{"eval.every": 0, "eval.final_episodes": 0, "train.lr": 0.1}))


def test_corrupt_inputs_fail_fast(inputs, tmp_path):
    bad_teacher = tmp_path / "teacher"
    bad_teacher.mkdir()
    (bad_teacher / "teacher.json").write_text((inputs / "teacher" / "teacher.json").read_text())
    (bad_teacher / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DistillError, match="teacher"):
        run_distillation(_cfg(inputs, teacher=str(bad_teacher), output=str(tmp_path / "o1")))
    (tmp_path / "demos.safetensors").write_bytes(b"garbage")
    with pytest.raises(DistillError, match="dataset"):
        run_distillation(_cfg(inputs, dataset=str(tmp_path / "demos.safetensors"), output=str(tmp_path / "o2")))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_student_states_are_collected_and_survive_resume(inputs):
    """With student_states > 0 the evaluation rollouts feed the state buffer, which the checkpoint keeps."""
    overrides = {"train.iterations": 6, "vdd.student_states": 0.5, "vdd.student_state_capacity": 40}
    cfg = _cfg(inputs, name="student", **overrides)
    checks = itertools.count()
    stopped = run_distillation(cfg, should_stop=lambda: next(checks) >= 3)  # after the eval at 2
    assert stopped["status"] == "stopped"
    state = json.loads((inputs / "student" / "checkpoint" / "state.json").read_text())
    first = state["extra"]["evals"][0]["student_states"]
    assert 0 < first <= 40
    done = run_distillation(cfg)
    counts = [e["student_states"] for e in done["evals"]]
    assert done["status"] == "done" and counts[0] == first and counts[-1] == 40  # capacity-bounded, grows
