"""Teacher training loop: AdamW + EMA + LR schedule, periodic eval/checkpoints, exact resume.

The loop is data-agnostic (``TrainData`` holds raw windows and their provenance) so tests
can train on synthetic data; ``load_train_data`` builds it from a demonstration file. The
resumable state goes through the same verified checkpoint store as distillation
(``vdd_ros.util.checkpoint``): a damaged newest state falls back to the previous one.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import pathlib
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from vdd_ros.data.dataset import content_sha256, dataset_sha256, load_dataset, make_windows
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.data.shape import PolicyShape
from vdd_ros.teacher.base import TrainableTeacher
from vdd_ros.teacher.checkpoint import TeacherCheckpointError, TeacherMeta, save_teacher, teacher_meta_fields
from vdd_ros.teacher.config import STATE_DIR, TeacherTrainConfig
from vdd_ros.teacher.registry import get_family
from vdd_ros.util.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    UnusableCheckpointError,
    shape_mismatch,
)
from vdd_ros.util.config import to_dict
from vdd_ros.util.optim import checked_step, lr_factor, optimizer_tensors, restore_optimizer, set_lr
from vdd_ros.util.progress import EvalResult, Notice, OnProgress, Resumed, TrainProgress, ignore
from vdd_ros.util.torch_setup import TorchThreads, resolve_device, rng_state, set_rng_state

EVAL_LOG = "eval.jsonl"
PROGRESS_EVERY = 100  # steps between TrainProgress events
_GROUPS = ("model", "ema", "optim")  # tensor groups of a training checkpoint
_OPTIMIZER = "adamw"

Evaluate = Callable[[TrainableTeacher, TeacherMeta], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Raw training windows plus what the checkpoint must record about them."""

    obs: np.ndarray  # (N, T, obs_dim)
    actions: np.ndarray  # (N, H, act_dim)
    obs_norm: Normalizer
    act_norm: Normalizer
    obs_names: tuple[str, ...]
    act_names: tuple[str, ...]
    control_period_s: float
    task: str
    dataset_sha256: str = ""
    dataset_content_sha256: str = ""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int
    loss: float
    interrupted: bool
    seconds: float
    output: pathlib.Path


def load_train_data(cfg: TeacherTrainConfig) -> TrainData:
    """Windows from the demonstration file; normalisers fit on the per-step data."""
    ds = load_dataset(cfg.dataset)
    obs, act = make_windows(ds, cfg.obs_window, cfg.act_chunk)
    return TrainData(
        obs=obs,
        actions=act,
        obs_norm=Normalizer.fit(np.concatenate(ds.observations)),
        act_norm=Normalizer.fit(np.concatenate(ds.actions)),
        obs_names=tuple(ds.obs_names),
        act_names=tuple(ds.act_names),
        control_period_s=float(ds.control_period_s),
        task=ds.task,
        dataset_sha256=dataset_sha256(cfg.dataset),
        dataset_content_sha256=content_sha256(ds),
    )


def new_teacher(cfg: TeacherTrainConfig, data: TrainData) -> TrainableTeacher:
    """An untrained teacher of ``cfg.family`` sized for ``data``."""
    shape = PolicyShape(data.obs.shape[-1], data.actions.shape[-1], cfg.obs_window, cfg.act_chunk)
    return get_family(cfg.family).build(shape, cfg.network, cfg.diffusion)


def make_meta(cfg: TeacherTrainConfig, data: TrainData, teacher: TrainableTeacher, info: dict[str, Any]) -> TeacherMeta:
    return TeacherMeta(
        **teacher_meta_fields(teacher),
        obs_names=data.obs_names,
        act_names=data.act_names,
        control_period_s=data.control_period_s,
        task=data.task,
        obs_normalizer=data.obs_norm.to_dict(),
        act_normalizer=data.act_norm.to_dict(),
        dataset_sha256=data.dataset_sha256,
        dataset_content_sha256=data.dataset_content_sha256,
        training={"config": to_dict(cfg), **info},
        created_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def state_store(output: str | pathlib.Path) -> CheckpointStore:
    """The resumable training state of the teacher in ``output`` (``<output>/training_state``)."""
    return CheckpointStore(pathlib.Path(output) / STATE_DIR, _GROUPS, {"optimizers": dict, "extra": dict})


@contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a flag the loop polls, so it can save and exit cleanly."""
    received: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, _frame: received.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _Run:
    """The live objects of one training run and their conversion to and from a checkpoint."""

    def __init__(self, cfg: TeacherTrainConfig, data: TrainData, obs: torch.Tensor, device: torch.device) -> None:
        self.device = device
        self.teacher = new_teacher(cfg, data).to(device)
        self.teacher.fit_inputs(obs, data.obs_norm)
        self.ema = copy.deepcopy(self.teacher).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.teacher.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def tensors(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """The checkpoint's tensor groups (weights, EMA, AdamW moments + RNG) and optimizer JSON."""
        moments, meta = optimizer_tensors(_OPTIMIZER, self.opt)
        rng = {f"rng.{k}": v for k, v in rng_state(self.device).items()}
        groups = {"model": self.teacher.state_dict(), "ema": self.ema.state_dict(), "optim": moments | rng}
        return groups, {_OPTIMIZER: meta}

    def apply(self, checkpoint: Checkpoint) -> None:
        """Load a verified checkpoint; one that does not fit this run raises UnusableCheckpointError."""
        for group, module in (("model", self.teacher), ("ema", self.ema)):
            mismatch = shape_mismatch(module.state_dict(), checkpoint.tensors[group])
            if mismatch:
                raise UnusableCheckpointError(checkpoint.file(group), f"does not fit this teacher ({mismatch})")
        optim = checkpoint.tensors["optim"]
        try:
            self.teacher.load_state_dict(checkpoint.tensors["model"])
            self.ema.load_state_dict(checkpoint.tensors["ema"])
            restore_optimizer(_OPTIMIZER, self.opt, optim, checkpoint.fields["optimizers"][_OPTIMIZER])
            set_rng_state({k.removeprefix("rng."): v for k, v in optim.items() if k.startswith("rng.")}, self.device)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise UnusableCheckpointError(
                checkpoint.path, f"does not fit this run ({type(exc).__name__}: {exc})"
            ) from None


def _resume(run: _Run, store: CheckpointStore, on_progress: OnProgress) -> Checkpoint:
    try:
        checkpoint = store.load(run.apply)
    except CheckpointError as exc:
        raise TeacherCheckpointError(str(exc)) from exc
    if checkpoint is None:
        raise TeacherCheckpointError(f"nothing to resume in {store.directory}")
    for skipped in store.skipped:
        on_progress(Notice(f"skipped unusable checkpoint {skipped}; resumed from an older one"))
    on_progress(Resumed(checkpoint.iteration))
    return checkpoint


def train_teacher(
    cfg: TeacherTrainConfig,
    data: TrainData,
    output: str | pathlib.Path | None = None,
    resume: bool = False,
    evaluate: Evaluate | None = None,
    stop_after: int | None = None,
    on_progress: OnProgress = ignore,
) -> TrainResult:
    """Train to ``cfg.iterations`` (or stop early after ``stop_after`` steps, as an interruption).

    Writes the EMA teacher to ``output`` (model.safetensors + teacher.json), the resumable
    state to ``output/training_state`` and evaluation results to ``output/eval.jsonl``. With
    ``evaluate``, ``output`` holds the EMA teacher with the best evaluation ``score`` so far
    (checkpoint selection by rollouts, as VDD and D3IL do); without, the latest one.
    SIGINT/SIGTERM stop the loop after the current step with a committed checkpoint.
    A non-finite loss raises NonFiniteError, keeping the last good checkpoint.
    """
    output = pathlib.Path(output or cfg.output)
    device = resolve_device(cfg.device)
    threads = TorchThreads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    obs = torch.from_numpy(data.obs_norm.normalize(data.obs)).to(device)
    run = _Run(cfg, data, obs, device)
    teacher, ema, opt = run.teacher, run.ema, run.opt
    store = state_store(output)
    step, elapsed, best = 0, 0.0, None
    selecting = evaluate is not None and cfg.eval_every > 0
    if resume:
        checkpoint = _resume(run, store, on_progress)
        extra = checkpoint.fields["extra"]
        step, elapsed, best = checkpoint.iteration, float(extra.get("seconds", 0.0)), extra.get("best")
    act = torch.from_numpy(data.act_norm.normalize(data.actions)).to(device)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, step + stop_after)
    loss_avg, start = float("nan"), time.monotonic() - elapsed

    def info() -> dict[str, Any]:
        return {"step": step, "loss": loss_avg, "seconds": time.monotonic() - start}

    def checkpoint() -> None:
        if not selecting or best is None:
            save_teacher(ema, make_meta(cfg, data, ema, info()), output)
        groups, optimizers = run.tensors()
        store.save(step, groups, {"optimizers": optimizers, "extra": {**info(), "best": best}})

    teacher.train()
    with _stop_on_signals() as signals:
        while step < end and not signals:
            threads.adapt()
            lr = cfg.lr * lr_factor(step, cfg.iterations, cfg.lr_schedule, cfg.warmup)
            set_lr([opt], lr)
            idx = torch.randint(0, obs.shape[0], (cfg.batch_size,), device=device)
            obs_batch = obs[idx]
            if cfg.obs_noise > 0:
                obs_batch = obs_batch + cfg.obs_noise * torch.randn_like(obs_batch)
            value = checked_step(opt, teacher.loss(obs_batch, act[idx]), "teacher", step)
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), teacher.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)
            step += 1
            loss_avg = value if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * value
            if step % PROGRESS_EVERY == 0 or step == end:
                on_progress(TrainProgress(step, cfg.iterations, {"loss": loss_avg, "lr": lr}))
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
            if selecting and (step % cfg.eval_every == 0 or step == cfg.iterations):
                result = evaluate(ema.eval(), make_meta(cfg, data, ema, {}))
                _log_eval(output, step, result)
                on_progress(_eval_event(step, cfg.eval_episodes, result))
                if best is None or result["score"] > best["score"]:
                    best = {"step": step, **result}
                    save_teacher(ema, make_meta(cfg, data, ema, {**info(), "eval": result}), output)
    checkpoint()
    return TrainResult(step, loss_avg, step < cfg.iterations, time.monotonic() - start, output)


def _eval_event(step: int, episodes: int, result: dict[str, float]) -> EvalResult:
    nan = float("nan")
    return EvalResult(step, result.get("success_rate", nan), result.get("entropy", nan), episodes, details=result)


def _log_eval(output: pathlib.Path, step: int, result: dict[str, float]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with (output / EVAL_LOG).open("a") as f:
        f.write(json.dumps({"step": step, **result}) + "\n")
