"""The distillation job: teacher + demonstrations -> trained MoE -> ONNX policy (+ rollout metrics).

An orchestrator only: check the configuration and the inputs, build the trainer, alternate
training and rollout evaluation (which selects the published checkpoint), export, summarise.
Every check runs before anything is written, so a bad setting costs one line and no folder.

Output folder layout (nothing is written outside it):
  checkpoint/        resumable trainer state (see ``vdd_ros.distill.trainer``)
  best/              MoE weights with the best periodic rollout score (tasks in the registry only)
  policy.onnx        the exported policy, with ``policy.onnx.sha256``
  summary.json       final metrics, timings and provenance

Entry points: the ``distill`` node (``-p train.iterations:=3000``) and the offline CLI; both
fill a ``DistillJobConfig`` with ``vdd_ros.util.config``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the job runs data parallel, one process per device
(``vdd_ros.util.distributed``): ``train.batch_size`` is the global batch, split evenly; every
rank trains on its own batches with gradients averaged (``MoETrainer``); rank 0 alone writes,
evaluates and exports, and hands each evaluation to the others so that all keep the same
history. Every rank reads the checkpoint from ``output`` (shared by all machines).
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vdd_ros.data.dataset import DatasetError, content_sha256, dataset_sha256, episode_steps, load_dataset, make_windows
from vdd_ros.distill.em_baseline import EMTrainer
from vdd_ros.distill.trainer import MoETrainer
from vdd_ros.distill.vdd import VDDTrainer
from vdd_ros.export.contract import PolicyContract
from vdd_ros.export.onnx_export import export_policy, weights_path
from vdd_ros.moe.policy import GaussianMoE
from vdd_ros.pipeline.distill_config import DistillError, DistillJobConfig, check_config
from vdd_ros.runtime.onnx_policy import OnnxPolicy
from vdd_ros.tasks.base import Task
from vdd_ros.tasks.registry import UnknownTaskError, get_task
from vdd_ros.tasks.rollout import run_rollouts
from vdd_ros.teacher.base import Teacher
from vdd_ros.teacher.checkpoint import TeacherCheckpointError, TeacherMeta, load_teacher, teacher_sha256
from vdd_ros.util import distributed
from vdd_ros.util.checkpoint import CheckpointError
from vdd_ros.util.config import ConfigError, flatten, to_dict
from vdd_ros.util.files import atomic_write_json
from vdd_ros.util.progress import EvalResult, Notice, OnProgress, Resumed, TrainProgress, ignore
from vdd_ros.util.torch_setup import TorchThreads

EVAL_SEED = 0  # rollout seed of every evaluation (D3IL protocol), whatever the training seed


def teacher_obs_noise(meta: TeacherMeta) -> float | None:
    """The state jitter the teacher was trained with, if its checkpoint records one."""
    value = meta.training.get("config", {}).get("obs_noise")
    return None if value is None else float(value)


@dataclasses.dataclass
class _Inputs:
    cfg: DistillJobConfig  # with the teacher-dependent values resolved
    teacher: Teacher
    meta: TeacherMeta
    obs: torch.Tensor  # (N, T, obs_dim), normalised
    actions: torch.Tensor  # (N, H, act_dim), normalised
    steps: torch.Tensor  # (N,) each window's step within its demonstration
    teacher_sha: str
    dataset_sha: str
    task_name: str
    task: Task | None  # None: not a registered task, so no rollout evaluation
    notices: list[str]


def _resolve(cfg: DistillJobConfig, teacher: Teacher, meta: TeacherMeta) -> tuple[DistillJobConfig, list[str]]:
    """Fill in the teacher's obs_noise and check the noise range against the teacher family."""
    notices = []
    recorded = teacher_obs_noise(meta)
    obs_noise = cfg.train.obs_noise
    if obs_noise < 0:
        if recorded is None:
            notices.append("the teacher records no obs_noise; distilling without state jitter")
        obs_noise = recorded or 0.0
    elif recorded is not None and obs_noise != recorded:
        notices.append(f"train.obs_noise {obs_noise:g} differs from the {recorded:g} the teacher was trained with")
    if cfg.method == "vdd":
        bounds = [None if x < 0 else x for x in (cfg.vdd.noise_low, cfg.vdd.noise_high)]
        try:
            teacher.check_noise_range(*bounds)
        except ValueError as exc:
            raise ConfigError(f"vdd.noise_low/noise_high for this {meta.family} teacher: {exc}") from None
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, obs_noise=obs_noise)), notices


def _load_inputs(cfg: DistillJobConfig, device: torch.device) -> _Inputs:
    """Load and cross-check teacher and dataset; any defect raises DistillError naming the file."""
    try:
        teacher, meta = load_teacher(cfg.teacher, device=str(device))
        teacher_sha = teacher_sha256(cfg.teacher)
    except TeacherCheckpointError as exc:
        raise DistillError(f"teacher {cfg.teacher}: {exc}") from exc
    cfg, notices = _resolve(cfg, teacher, meta)
    try:
        ds = load_dataset(cfg.dataset)
        data_sha = dataset_sha256(cfg.dataset)
    except DatasetError as exc:
        raise DistillError(f"dataset: {exc}") from exc
    if cfg.act_exec > meta.act_chunk:
        raise DistillError(f"act_exec {cfg.act_exec} exceeds the teacher's chunk of {meta.act_chunk} actions")
    if (ds.obs_names, ds.act_names) != (meta.obs_names, meta.act_names):
        raise DistillError(
            f"dataset {cfg.dataset} has columns {ds.obs_names}/{ds.act_names} but the teacher expects "
            f"{meta.obs_names}/{meta.act_names}"
        )
    if meta.dataset_content_sha256:  # the data itself, whatever the file's provenance (e.g. creation time) says
        if meta.dataset_content_sha256 != content_sha256(ds):
            notices.append(f"teacher was trained on other demonstrations than {cfg.dataset} (content digests differ)")
    elif meta.dataset_sha256 and meta.dataset_sha256 != data_sha:
        notices.append(f"teacher was trained on dataset {meta.dataset_sha256[:12]}, distilling on {data_sha[:12]}")
    task_name = ds.task or meta.task
    try:
        task = get_task(task_name) if task_name else None
    except UnknownTaskError:
        task = None
    obs, act = make_windows(ds, meta.obs_window, meta.act_chunk)
    obs_t = torch.from_numpy(meta.obs_norm.normalize(obs))
    act_t = torch.from_numpy(meta.act_norm.normalize(act))
    steps = torch.from_numpy(episode_steps(ds))
    return _Inputs(cfg, teacher, meta, obs_t, act_t, steps, teacher_sha, data_sha, task_name, task, notices)


def _make_trainer(inputs: _Inputs, device: torch.device, batch_size: int) -> MoETrainer:
    """The trainer of this process, drawing ``batch_size`` (its share of the global batch) per update."""
    cfg = inputs.cfg
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    moe = GaussianMoE(inputs.teacher.shape, cfg.moe)
    moe.fit_delta_scale(inputs.obs)
    train = dataclasses.replace(cfg.train, batch_size=batch_size)
    if cfg.method == "em":
        return EMTrainer(moe, inputs.obs, inputs.actions, train, cfg.seed, device, inputs.steps)
    return VDDTrainer(
        moe, inputs.teacher, inputs.obs, inputs.actions, train, cfg.vdd, cfg.seed, device, episode_steps=inputs.steps
    )


def _contract(inputs: _Inputs, moe: GaussianMoE, iteration: int) -> PolicyContract:
    cfg, meta = inputs.cfg, inputs.meta
    now = datetime.datetime.now(datetime.UTC)
    # Provenance without machine paths (the file ships to robots): inputs are named by their
    # sha256 fields and the folder names, the output folder not at all.
    settings = {k: v for k, v in to_dict(cfg).items() if k != "output"}
    settings.update(teacher=pathlib.Path(cfg.teacher).name, dataset=pathlib.Path(cfg.dataset).name)
    training = {
        **settings,
        "moe": moe.describe(),
        "iterations_done": iteration,
        "teacher_family": meta.family,
    }
    return PolicyContract(
        policy_id=cfg.policy_id or f"{inputs.task_name or 'policy'}-{cfg.method}-{now:%Y%m%dT%H%M%SZ}",
        obs_dim=meta.obs_dim,
        act_dim=meta.act_dim,
        obs_window=meta.obs_window,
        act_chunk=meta.act_chunk,
        act_exec=cfg.act_exec or moe.shape.default_act_exec,
        num_experts=moe.config.num_experts,
        control_period_s=meta.control_period_s,
        obs_names=meta.obs_names,
        act_names=meta.act_names,
        obs_normalizer=meta.obs_normalizer,
        act_normalizer=meta.act_normalizer,
        task=inputs.task_name,
        covariance=moe.config.covariance,
        teacher_sha256=inputs.teacher_sha if cfg.method == "vdd" else "",
        dataset_sha256=inputs.dataset_sha,
        training=training,
        created_utc=now.isoformat(timespec="seconds"),
    )


def _evaluate(
    inputs: _Inputs,
    task: Task,
    moe: GaussianMoE,
    iteration: int,
    episodes: int,
    path: pathlib.Path,
    report: OnProgress,
    collect_states: bool = False,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Export ``moe`` to ``path`` and roll the exported graph out: what is evaluated is what ships.

    With ``collect_states`` also returns the raw observation windows of the rollouts (each
    window once: a finished episode's frozen state is not repeated).
    """
    export_policy(moe, _contract(inputs, moe, iteration), inputs.meta.obs_norm, inputs.meta.act_norm, path)
    policy = OnnxPolicy(str(path), mode=inputs.cfg.eval.mode, seed=EVAL_SEED)
    if collect_states:
        policy.visited = []
    result = run_rollouts(policy, task, episodes=episodes, seed=EVAL_SEED, on_progress=report)
    states = None
    if policy.visited:
        steps = np.stack(policy.visited)  # (L, B, T, obs_dim)
        moved = np.concatenate([np.ones_like(steps[:1, :, 0, 0], bool), np.any(steps[1:] != steps[:-1], axis=(2, 3))])
        states = steps[moved]
    return {"iteration": iteration, **result.to_json_dict()}, states


def _eval_event(ev: dict[str, Any], final: bool = False) -> EvalResult:
    return EvalResult(ev["iteration"], ev["success_rate"], ev["entropy"], ev["episodes"], final, ev)


def _train_event(stats: dict[str, float]) -> TrainProgress:
    rest = {k: v for k, v in stats.items() if k not in ("iteration", "iterations")}
    return TrainProgress(int(stats["iteration"]), int(stats["iterations"]), rest)


def run_distillation(
    cfg: DistillJobConfig,
    on_progress: OnProgress = ignore,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train (resuming from ``<output>/checkpoint``), export ``<output>/policy.onnx``, evaluate on the task.

    Returns the summary also written to ``<output>/summary.json``; ``status`` is "done" or
    "stopped" (checkpoint saved, nothing exported); ``train_curve`` holds the mean losses of
    each progress window. Raises ConfigError for bad settings and DistillError for unusable
    inputs, both before anything is written, and NonFiniteError if training diverges (the
    last good checkpoint is kept). Data parallel (see the module doc), only rank 0 reports
    and writes; the other ranks return ``{"status", "iteration", "rank", ...}``, and a lost
    rank fails the others with DistillError within the process group's timeout.
    """
    start = time.monotonic()
    check_config(cfg)
    threads = TorchThreads(cfg.torch_threads)
    device = distributed.device_for_rank(cfg.device)
    with distributed.session(device):
        try:
            return _run(cfg, device, on_progress if distributed.is_main() else ignore, should_stop, start, threads)
        except distributed.PeerLostError as exc:
            raise DistillError(
                f"{exc}; the last checkpoint in {pathlib.Path(cfg.output) / 'checkpoint'} is kept: "
                "run the same command again to resume"
            ) from exc


def _run(
    cfg: DistillJobConfig,
    device: torch.device,
    report: OnProgress,
    should_stop: Callable[[], bool] | None,
    start: float,
    threads: TorchThreads,
) -> dict[str, Any]:
    """``run_distillation`` in this process, one of ``distributed.world_size()``."""
    batch_size = distributed.per_rank_batch(cfg.train.batch_size, distributed.world_size())
    main = distributed.is_main()
    inputs = _load_inputs(cfg, device)
    cfg = inputs.cfg
    out = pathlib.Path(cfg.output)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    for notice in inputs.notices:
        report(Notice(notice))

    trainer = _make_trainer(inputs, device, batch_size)
    fingerprint = {k: v for k, v in flatten(cfg).items() if k not in ("device", "torch_threads")}
    ckpt = out / "checkpoint"
    try:
        resumed = trainer.load_checkpoint(ckpt)
    except CheckpointError as exc:
        raise DistillError(str(exc)) from exc
    if trainer.skipped_checkpoints:
        skipped = "; ".join(trainer.skipped_checkpoints)
        report(Notice(f"skipped unusable checkpoint {skipped}; resumed from an older one"))
    if resumed:
        if trainer.extra.get("config") != fingerprint:
            raise DistillError(f"{ckpt} was written by a different configuration; remove it or choose another output")
        report(Resumed(trainer.iteration))
    else:
        trainer.extra = {"config": fingerprint, "evals": [], "best": None}
    _same_start(trainer, ckpt)
    curve = trainer.extra.setdefault("curve", [])  # mean losses per progress window, kept across resumes

    def on_train(stats: dict[str, float]) -> None:
        threads.adapt()
        curve.append({k: v for k, v in stats.items() if k != "iterations"})
        report(_train_event(stats))

    iterations, every = cfg.train.iterations, cfg.eval.every
    task = inputs.task if every > 0 else None
    candidate = out / ".candidate.onnx"
    while trainer.iteration < iterations:
        until = (trainer.iteration // every + 1) * every if task is not None else iterations
        finished = trainer.run(
            ckpt,
            cfg.checkpoint_every,
            until=until,
            on_progress=on_train,
            should_stop=should_stop,
        )
        if not finished:
            return _finish(out, {"status": "stopped", "iteration": trainer.iteration}, start)
        if task is not None:
            collect = cfg.method == "vdd" and cfg.vdd.student_states > 0
            result = None
            if main:  # the other ranks wait here for rank 0's rollouts
                result = _evaluate(
                    inputs, task, trainer.moe, trainer.iteration, cfg.eval.episodes, candidate, report, collect
                )
            ev, visited = distributed.broadcast_object(result)
            if visited is not None:
                states = torch.from_numpy(inputs.meta.obs_norm.normalize(visited))
                trainer.add_student_states(states, cfg.vdd.student_state_capacity)
                ev["student_states"] = int(trainer.student_obs.shape[0])
            report(_eval_event(ev))
            trainer.extra["evals"].append(ev)
            best = trainer.extra["best"]
            if best is None or ev["score"] > best["score"]:
                if main:
                    trainer.moe.save(out / "best")
                trainer.extra["best"] = ev
            trainer.save_checkpoint(ckpt)  # commits the eval history together with the weights
    _same_end(trainer)
    if not main:
        return _finish(out, {"status": "done", "iteration": trainer.iteration}, start)
    for leftover in (candidate, weights_path(candidate)):
        leftover.unlink(missing_ok=True)
        pathlib.Path(f"{leftover}.sha256").unlink(missing_ok=True)

    train_s = time.monotonic() - start
    moe = trainer.moe
    chosen = trainer.iteration
    if trainer.extra.get("best") is not None:
        moe = GaussianMoE.load(out / "best")
        chosen = trainer.extra["best"]["iteration"]
    summary: dict[str, Any] = {"status": "done", "iteration": trainer.iteration, "selected_iteration": chosen}
    summary.update(_publish(inputs, moe, chosen, out / "policy.onnx", report))
    summary.update(
        train_seconds=round(train_s, 1),
        evals=trainer.extra.get("evals", []),
        train_curve=curve,
        warnings=inputs.notices,
    )
    return _finish(out, summary, start)


def _same_start(trainer: MoETrainer, ckpt: pathlib.Path) -> None:
    """Data parallel: check that every rank resumed the same checkpoint, then copy rank 0's weights to all."""
    loaded = distributed.all_gather_object(trainer.iteration)
    if len(set(loaded)) > 1:
        raise DistillError(
            f"the processes found different checkpoints in {ckpt} (iteration by rank: {loaded}); "
            "every machine must see the same output folder"
        )
    distributed.broadcast_module(trainer.moe)


def _same_end(trainer: MoETrainer) -> None:
    """Data parallel: every rank must end with rank 0's weights (averaged gradients keep them equal)."""
    if distributed.world_size() == 1:
        return
    digests = distributed.all_gather_object(distributed.weights_digest(trainer.moe))
    if len(set(digests)) > 1:
        raise DistillError(f"the processes' weights diverged (digests by rank: {[d[:12] for d in digests]})")


def _publish(
    inputs: _Inputs, moe: GaussianMoE, iteration: int, policy_path: pathlib.Path, report: OnProgress
) -> dict[str, Any]:
    """Export ``policy.onnx``; with a task, evaluate a temporary export and publish the very same bytes."""
    episodes = inputs.cfg.eval.final_episodes
    published: dict[str, Any] = {"policy": str(policy_path)}
    if inputs.task is not None and episodes > 0:
        with tempfile.TemporaryDirectory(dir=policy_path.parent) as tmp:
            tmp_path = pathlib.Path(tmp) / "policy.onnx"
            final, _ = _evaluate(inputs, inputs.task, moe, iteration, episodes, tmp_path, report)
            published["eval"] = final
            report(_eval_event(final, final=True))
            for src, dst in ((tmp_path, policy_path), (weights_path(tmp_path), weights_path(policy_path))):
                src.replace(dst)
                pathlib.Path(f"{src}.sha256").replace(f"{dst}.sha256")
    else:
        contract = _contract(inputs, moe, iteration)
        export_policy(moe, contract, inputs.meta.obs_norm, inputs.meta.act_norm, policy_path)
    published["sha256"] = pathlib.Path(f"{policy_path}.sha256").read_text().split()[0]
    return published


def _finish(out: pathlib.Path, summary: dict[str, Any], start: float) -> dict[str, Any]:
    """Time the summary and write it (rank 0), or mark it with the rank that returns it (the others)."""
    summary["seconds"] = round(time.monotonic() - start, 1)
    if distributed.world_size() > 1:
        summary["processes"] = distributed.world_size()
    if not distributed.is_main():
        return {**summary, "rank": distributed.rank()}
    atomic_write_json(out / "summary.json", summary)
    return summary
