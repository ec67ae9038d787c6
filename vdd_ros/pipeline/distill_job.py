"""End-to-end distillation job: teacher + demos -> trained MoE -> ONNX policy (+ rollout metrics).

Output folder layout:
  checkpoint/        resumable trainer state (see ``vdd_ros.distill.trainer``)
  best/              MoE weights with the best periodic rollout score (Avoiding only)
  policy.onnx        the exported policy, with ``policy.onnx.sha256``
  summary.json       final metrics, timings and provenance

CLI: ``python -m vdd_ros.pipeline.distill_job --params-file config/distill_avoiding.yaml`` (ROS
parameter-file format, ``/**: {ros__parameters: {...}}``, keys = DistillConfig fields).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import yaml

from vdd_ros.util.config import ConfigError, from_dict
from vdd_ros.data.dataset import DatasetError, dataset_sha256, load_dataset, make_windows
from vdd_ros.distill.em_baseline import EMConfig, EMTrainer
from vdd_ros.distill.trainer import CheckpointError, MoETrainer
from vdd_ros.distill.vdd import VDDConfig, VDDTrainer
from vdd_ros.export.contract import PolicyContract
from vdd_ros.export.onnx_export import export_policy
from vdd_ros.moe.policy import Activation, GaussianMoE, MoEConfig
from vdd_ros.runtime.onnx_policy import OnnxPolicy
from vdd_ros.tasks.rollout import run_rollouts
from vdd_ros.teacher.checkpoint import TeacherCheckpointError, TeacherMeta, load_teacher, teacher_sha256

AVOIDING = "avoiding"


class DistillError(ValueError):
    """The inputs of a distillation job are unusable (corrupt/mismatched teacher or dataset, stale checkpoint)."""


EVAL_SEED = 0  # rollout seed of every evaluation (D3IL protocol), whatever the training seed


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """One distillation job. ROS parameters cannot be null, so a negative noise bound means "teacher default"."""

    teacher: str = "runs/teacher_ddpm"
    dataset: str = "runs/demos/avoiding.safetensors"
    output: str = "runs/distill_vdd"
    method: Literal["vdd", "em"] = "vdd"
    num_experts: int = 8
    covariance: Literal["diagonal", "full"] = "diagonal"
    activation: Activation = "mish"
    hidden: int = 256
    trunk_blocks: int = 2
    head_hidden: int = 128
    velocity_gain: float = 0.0
    gating: Literal["learned", "uniform"] = "learned"
    iterations: int = 2000
    batch_size: int = 128
    samples_per_expert: int = 2
    noise_low: float = -1.0
    noise_high: float = -1.0
    lr: float = 1e-3
    obs_noise: float = 0.0
    student_states: float = 0.0
    student_state_capacity: int = 50000
    device: str = "auto"
    torch_threads: int = 2
    seed: int = 0
    eval_every: int = 500
    eval_episodes: int = 48
    final_eval_episodes: int = 480
    eval_mode: Literal["mean", "sample", "greedy"] = "mean"
    checkpoint_every: int = 250
    policy_id: str = ""


def load_params_file(path: str | pathlib.Path) -> DistillConfig:
    """DistillConfig from a ROS 2 parameter file (the node name key may be ``/**`` or any node name)."""
    path = pathlib.Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    sections = [v["ros__parameters"] for v in data.values() if isinstance(v, dict) and "ros__parameters" in v]
    if len(sections) != 1:
        raise ConfigError(f"{path}: expected exactly one '<node>: {{ros__parameters: ...}}' section")
    return from_dict(DistillConfig, sections[0], where=str(path))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclasses.dataclass
class _Inputs:
    teacher: torch.nn.Module
    meta: TeacherMeta
    obs: torch.Tensor  # (N, T, obs_dim), normalised
    actions: torch.Tensor  # (N, H, act_dim), normalised
    teacher_sha: str
    dataset_sha: str
    task: str
    warnings: list[str]


def _load_inputs(cfg: DistillConfig, device: torch.device) -> _Inputs:
    """Load and cross-check teacher and dataset; any defect raises DistillError naming the file."""
    try:
        teacher, meta = load_teacher(cfg.teacher, device=str(device))
        teacher_sha = teacher_sha256(cfg.teacher)
    except TeacherCheckpointError as exc:
        raise DistillError(f"teacher {cfg.teacher}: {exc}") from exc
    try:
        ds = load_dataset(cfg.dataset)
        data_sha = dataset_sha256(cfg.dataset)
    except DatasetError as exc:
        raise DistillError(f"dataset: {exc}") from exc
    if (ds.obs_names, ds.act_names) != (meta.obs_names, meta.act_names):
        raise DistillError(
            f"dataset {cfg.dataset} has columns {ds.obs_names}/{ds.act_names} but the teacher expects "
            f"{meta.obs_names}/{meta.act_names}"
        )
    warnings = []
    if meta.dataset_sha256 and meta.dataset_sha256 != data_sha:
        warnings.append(f"teacher was trained on dataset {meta.dataset_sha256[:12]}, distilling on {data_sha[:12]}")
    obs, act = make_windows(ds, meta.obs_window, meta.act_chunk)
    obs_t = torch.from_numpy(meta.obs_norm.normalize(obs))
    act_t = torch.from_numpy(meta.act_norm.normalize(act))
    return _Inputs(teacher, meta, obs_t, act_t, teacher_sha, data_sha, ds.task or meta.task, warnings)


def _moe_config(cfg: DistillConfig, meta: TeacherMeta) -> MoEConfig:
    return MoEConfig(
        obs_dim=meta.obs_dim,
        act_dim=meta.act_dim,
        obs_window=meta.obs_window,
        act_chunk=meta.act_chunk,
        num_experts=cfg.num_experts,
        covariance=cfg.covariance,
        activation=cfg.activation,
        hidden=cfg.hidden,
        trunk_blocks=cfg.trunk_blocks,
        head_hidden=cfg.head_hidden,
        velocity_gain=cfg.velocity_gain,
        gating=cfg.gating,
    )


def _make_trainer(cfg: DistillConfig, inputs: _Inputs, device: torch.device) -> MoETrainer:
    torch.manual_seed(cfg.seed)
    moe = GaussianMoE(_moe_config(cfg, inputs.meta))
    moe.fit_delta_scale(inputs.obs)
    if cfg.method == "em":
        em = EMConfig(
            iterations=cfg.iterations, batch_size=cfg.batch_size, lr=cfg.lr, obs_noise=cfg.obs_noise, seed=cfg.seed
        )
        return EMTrainer(moe, inputs.obs, inputs.actions, em, device)
    vdd = VDDConfig(
        iterations=cfg.iterations,
        batch_size=cfg.batch_size,
        samples_per_expert=cfg.samples_per_expert,
        noise_low=None if cfg.noise_low < 0 else cfg.noise_low,
        noise_high=None if cfg.noise_high < 0 else cfg.noise_high,
        lr=cfg.lr,
        obs_noise=cfg.obs_noise,
        student_states=cfg.student_states,
        seed=cfg.seed,
    )
    return VDDTrainer(moe, inputs.teacher, inputs.obs, inputs.actions, vdd, device)


def _contract(cfg: DistillConfig, inputs: _Inputs, moe: GaussianMoE, iteration: int) -> PolicyContract:
    meta = inputs.meta
    now = datetime.datetime.now(datetime.UTC)
    training = {
        **dataclasses.asdict(cfg),
        "iterations_done": iteration,
        "moe": dataclasses.asdict(moe.config),
        "teacher_family": meta.family,
    }
    return PolicyContract(
        policy_id=cfg.policy_id or f"{inputs.task or 'policy'}-{cfg.method}-{now:%Y%m%dT%H%M%SZ}",
        obs_dim=meta.obs_dim,
        act_dim=meta.act_dim,
        obs_window=meta.obs_window,
        act_chunk=meta.act_chunk,
        num_experts=moe.config.num_experts,
        control_period_s=meta.control_period_s,
        obs_names=meta.obs_names,
        act_names=meta.act_names,
        obs_normalizer=meta.obs_normalizer,
        act_normalizer=meta.act_normalizer,
        task=inputs.task,
        covariance=moe.config.covariance,
        teacher_sha256=inputs.teacher_sha if cfg.method == "vdd" else "",
        dataset_sha256=inputs.dataset_sha,
        training=training,
        created_utc=now.isoformat(timespec="seconds"),
    )


def _evaluate(
    cfg: DistillConfig,
    inputs: _Inputs,
    moe: GaussianMoE,
    iteration: int,
    episodes: int,
    path: pathlib.Path,
    collect_states: bool = False,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Export ``moe`` to ``path`` and roll the exported graph out: what is evaluated is what ships.

    With ``collect_states`` also returns the raw observation windows of the rollouts (each
    window once: a finished episode's frozen state is not repeated).
    """
    export_policy(moe, _contract(cfg, inputs, moe, iteration), inputs.meta.obs_norm, inputs.meta.act_norm, path)
    policy = OnnxPolicy(str(path), mode=cfg.eval_mode, seed=EVAL_SEED)
    if collect_states:
        policy.visited = []
    result = run_rollouts(policy, episodes=episodes, seed=EVAL_SEED)
    states = None
    if policy.visited:
        steps = np.stack(policy.visited)  # (L, B, T, obs_dim)
        moved = np.concatenate([np.ones_like(steps[:1, :, 0, 0], bool), np.any(steps[1:] != steps[:-1], axis=(2, 3))])
        states = steps[moved]
    return {"iteration": iteration, **result.to_json_dict()}, states


def run_distillation(
    cfg: DistillConfig,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train (resuming from ``<output>/checkpoint``), export ``<output>/policy.onnx``, evaluate on Avoiding.

    Returns the summary also written to ``<output>/summary.json``; ``status`` is "done" or
    "stopped" (checkpoint saved, nothing exported). Raises DistillError for unusable inputs
    and NonFiniteLossError if training diverges (the last good checkpoint is kept).
    """
    start = time.monotonic()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    out = pathlib.Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    inputs = _load_inputs(cfg, device)
    report = on_progress or (lambda _: None)
    for warning in inputs.warnings:
        report({"event": "warning", "message": warning})

    trainer = _make_trainer(cfg, inputs, device)
    fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("device", "torch_threads")}
    ckpt = out / "checkpoint"
    try:
        resumed = trainer.load_checkpoint(ckpt)
    except CheckpointError as exc:
        raise DistillError(str(exc)) from exc
    if trainer.skipped_checkpoints:
        skipped = "; ".join(trainer.skipped_checkpoints)
        report({"event": "warning", "message": f"skipped unusable checkpoint {skipped}; resumed from an older one"})
    if resumed:
        if trainer.extra.get("config") != fingerprint:
            raise DistillError(f"{ckpt} was written by a different configuration; remove it or choose another output")
        report({"event": "resumed", "iteration": trainer.iteration})
    else:
        trainer.extra = {"config": fingerprint, "evals": [], "best": None}

    evaluate = cfg.eval_every > 0 and inputs.task == AVOIDING
    candidate = out / ".candidate.onnx"
    while trainer.iteration < cfg.iterations:
        until = (trainer.iteration // cfg.eval_every + 1) * cfg.eval_every if evaluate else cfg.iterations
        finished = trainer.run(
            ckpt,
            cfg.checkpoint_every,
            until=until,
            on_progress=lambda s: report({"event": "train", **s}),
            should_stop=should_stop,
        )
        if not finished:
            return _finish(out, {"status": "stopped", "iteration": trainer.iteration}, start)
        if evaluate:
            ev, visited = _evaluate(
                cfg, inputs, trainer.moe, trainer.iteration, cfg.eval_episodes, candidate, cfg.student_states > 0
            )
            if visited is not None:
                states = torch.from_numpy(inputs.meta.obs_norm.normalize(visited))
                trainer.add_student_states(states, cfg.student_state_capacity)
                ev["student_states"] = int(trainer.student_obs.shape[0])
            report({"event": "eval", **ev})
            trainer.extra["evals"].append(ev)
            best = trainer.extra["best"]
            if best is None or ev["score"] > best["score"]:
                trainer.moe.save(out / "best")
                trainer.extra["best"] = ev
            trainer.save_checkpoint(ckpt)  # commits the eval history together with the weights
    candidate.unlink(missing_ok=True)
    pathlib.Path(f"{candidate}.sha256").unlink(missing_ok=True)

    train_s = time.monotonic() - start
    moe = trainer.moe
    chosen = trainer.iteration
    if trainer.extra.get("best") is not None:
        moe = GaussianMoE.load(out / "best")
        chosen = trainer.extra["best"]["iteration"]
    policy_path = out / "policy.onnx"
    summary: dict[str, Any] = {"status": "done", "iteration": trainer.iteration, "selected_iteration": chosen}
    if inputs.task == AVOIDING and cfg.final_eval_episodes > 0:
        # Evaluate a temporary export, then publish the very same bytes under policy.onnx.
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            final, _ = _evaluate(cfg, inputs, moe, chosen, cfg.final_eval_episodes, pathlib.Path(tmp) / "policy.onnx")
            summary["eval"] = final
            report({"event": "final_eval", **final})
            pathlib.Path(tmp, "policy.onnx").replace(policy_path)
            pathlib.Path(tmp, "policy.onnx.sha256").replace(f"{policy_path}.sha256")
    else:
        export_policy(moe, _contract(cfg, inputs, moe, chosen), inputs.meta.obs_norm, inputs.meta.act_norm, policy_path)
    summary.update(
        policy=str(policy_path),
        sha256=pathlib.Path(f"{policy_path}.sha256").read_text().split()[0],
        train_seconds=round(train_s, 1),
        evals=trainer.extra.get("evals", []),
        warnings=inputs.warnings,
    )
    return _finish(out, summary, start)


def _finish(out: pathlib.Path, summary: dict[str, Any], start: float) -> dict[str, Any]:
    summary["seconds"] = round(time.monotonic() - start, 1)
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(out / "summary.json")
    return summary


def describe_eval(event: dict) -> str:
    """One line for an "eval"/"final_eval" progress event (shared by the CLI, node and demo)."""
    return (
        f"{event['event']} @ {event['iteration']}: success {event['success_rate']:.3f}, "
        f"entropy {event['entropy']:.3f} over {event['episodes']} rollouts"
    )


def _print_progress(event: dict) -> None:
    kind = event.get("event")
    if kind == "train":
        fields = " ".join(f"{k}={v:.4g}" for k, v in event.items() if isinstance(v, float))
        print(f"[{event['iteration']}/{event['iterations']}] {fields}", flush=True)
    elif kind in ("eval", "final_eval"):
        print(describe_eval(event), flush=True)
    else:
        print(json.dumps(event), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vdd_ros.pipeline.distill_job", description=__doc__.splitlines()[0])
    parser.add_argument("--params-file", required=True, help="ROS 2 parameter YAML with DistillConfig keys")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override keys (YAML values)")
    args = parser.parse_args(argv)
    try:
        cfg = load_params_file(args.params_file)
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
            overrides[key] = yaml.safe_load(value)
        cfg = from_dict(DistillConfig, {**dataclasses.asdict(cfg), **overrides}, where="--set")
        summary = run_distillation(cfg, on_progress=_print_progress)
    except (ConfigError, DistillError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "evals"}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
