"""The distillation job end to end on a tiny teacher: export with full contract, resume, fail-fast inputs."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import onnx
import pytest
import torch

from vdd_ros.util.config import ConfigError
from vdd_ros.data.dataset import DemoDataset, dataset_sha256, save_dataset
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.pipeline.distill_job import DistillConfig, DistillError, load_params_file, run_distillation
from vdd_ros.export.contract import METADATA_KEY, PolicyContract, file_sha256
from vdd_ros.tasks.avoiding import ACT_NAMES, CONTROL_PERIOD_S, OBS_NAMES, TASK_NAME
from vdd_ros.teacher.checkpoint import TeacherMeta, save_teacher, teacher_meta_fields, teacher_sha256
from vdd_ros.teacher.ddpm import DDPMTeacher
from vdd_ros.teacher.network import NetworkConfig

torch.set_num_threads(1)


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
    )
    save_teacher(teacher, meta, root / "teacher")
    return root


def _cfg(root, **kw) -> DistillConfig:
    base = DistillConfig(
        teacher=str(root / "teacher"),
        dataset=str(root / "demos.safetensors"),
        output=str(root / kw.pop("name", "out")),
        hidden=16,
        trunk_blocks=1,
        iterations=4,
        batch_size=8,
        eval_every=2,
        eval_episodes=2,
        final_eval_episodes=2,
        checkpoint_every=2,
        torch_threads=1,
        device="cpu",
    )
    return dataclasses.replace(base, **kw)


def test_params_file_matches_the_config_schema():
    cfg = load_params_file("config/distill_avoiding.yaml")
    assert cfg.method == "vdd" and cfg.num_experts == 8


def test_params_file_rejects_unknown_keys(tmp_path):
    (tmp_path / "p.yaml").write_text("/**:\n  ros__parameters:\n    iterashuns: 3\n")
    with pytest.raises(ConfigError, match="iterashuns"):
        load_params_file(tmp_path / "p.yaml")


@pytest.mark.parametrize("method", ["vdd", "em"])
def test_exports_policy_with_full_contract(inputs, method):
    cfg = _cfg(inputs, name=method, method=method)
    summary = run_distillation(cfg)
    assert summary["status"] == "done" and [e["iteration"] for e in summary["evals"]] == [2, 4]
    assert 0.0 <= summary["eval"]["success_rate"] <= 1.0
    path = inputs / method / "policy.onnx"
    assert summary["sha256"] == file_sha256(path)
    model = onnx.load(str(path))
    contract = PolicyContract.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert contract.task == TASK_NAME and contract.obs_names == OBS_NAMES and contract.created_utc
    assert contract.dataset_sha256 == dataset_sha256(inputs / "demos.safetensors")
    assert contract.teacher_sha256 == (teacher_sha256(inputs / "teacher") if method == "vdd" else "")
    assert contract.training["method"] == method and contract.training["iterations"] == 4
    assert json.loads((inputs / method / "summary.json").read_text())["sha256"] == summary["sha256"]


def test_student_layout_parameters_reach_the_network(inputs):
    cfg = _cfg(inputs, name="layout", activation="silu", hidden=32, trunk_blocks=1, head_hidden=16, eval_every=0)
    run_distillation(cfg)
    model = onnx.load(str(inputs / "layout" / "policy.onnx"))
    contract = PolicyContract.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    layout = {k: contract.training["moe"][k] for k in ("activation", "hidden", "trunk_blocks", "head_hidden")}
    assert layout == {"activation": "silu", "hidden": 32, "trunk_blocks": 1, "head_hidden": 16}
    ops = {n.op_type for n in model.graph.node}
    assert "Sigmoid" in ops and "Tanh" not in ops  # SiLU in the trunk and heads, no Mish left


def test_stop_then_resume(inputs):
    cfg = _cfg(inputs, name="resume", eval_every=0, final_eval_episodes=0)
    checks = itertools.count()
    stopped = run_distillation(cfg, should_stop=lambda: next(checks) >= 2)  # polled once per iteration
    assert stopped["status"] == "stopped" and stopped["iteration"] == 2
    events = []
    done = run_distillation(cfg, on_progress=events.append)
    assert done["status"] == "done" and {"event": "resumed", "iteration": 2} in events
    with pytest.raises(DistillError, match="different configuration"):
        run_distillation(dataclasses.replace(cfg, lr=0.1))


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


def test_student_states_are_collected_and_survive_resume(inputs):
    """With student_states > 0 the evaluation rollouts feed the state buffer, which the checkpoint keeps."""
    cfg = _cfg(inputs, name="student", iterations=6, student_states=0.5, student_state_capacity=40)
    checks = itertools.count()
    stopped = run_distillation(cfg, should_stop=lambda: next(checks) >= 3)  # after the eval at 2
    assert stopped["status"] == "stopped"
    state = json.loads((inputs / "student" / "checkpoint" / "state.json").read_text())
    first = state["extra"]["evals"][0]["student_states"]
    assert 0 < first <= 40
    done = run_distillation(cfg)
    counts = [e["student_states"] for e in done["evals"]]
    assert done["status"] == "done" and counts[0] == first and counts[-1] == 40  # capacity-bounded, grows
