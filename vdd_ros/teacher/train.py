"""Teacher training loop: AdamW + EMA + LR decay, periodic eval/checkpoints, exact resume.

The loop is data-agnostic (``TrainData`` holds raw windows and their provenance) so tests
can train on synthetic data; ``load_train_data`` builds it from a demonstration file.
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
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from vdd_ros.util.config import to_dict
from vdd_ros.data.dataset import dataset_sha256, load_dataset, make_windows
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.teacher.base import DiffusionTeacher
from vdd_ros.teacher.checkpoint import (
    TeacherMeta,
    TrainingState,
    load_training_state,
    save_teacher,
    save_training_state,
)
from vdd_ros.teacher.ddpm import DDPMConfig, DDPMTeacher
from vdd_ros.teacher.edm import EDMConfig, EDMTeacher
from vdd_ros.teacher.network import NetworkConfig

STATE_DIR = "training_state"
EVAL_LOG = "eval.jsonl"


@dataclasses.dataclass(frozen=True)
class TeacherTrainConfig:
    """One YAML file per teacher (config/teacher_avoiding*.yaml)."""

    family: Literal["ddpm", "edm"] = "ddpm"
    dataset: str = "runs/demos/avoiding.safetensors"
    out: str = "runs/teacher_ddpm"
    obs_window: int = 5
    act_chunk: int = 1
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    ddpm: DDPMConfig = dataclasses.field(default_factory=DDPMConfig)
    edm: EDMConfig = dataclasses.field(default_factory=EDMConfig)
    iterations: int = 20000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 500
    lr_schedule: Literal["cosine", "linear"] = "cosine"
    ema_decay: float = 0.999
    # Std of Gaussian noise added to the normalised observation windows of each batch.
    # Scripted demos are so smooth that the next action is almost a function of the exact
    # window; the noise stops the teacher from keying on sub-millimetre detail that closed
    # loop rollouts do not reproduce, and keeps the branch choice stochastic.
    obs_noise: float = 0.0
    eval_every: int = 0  # 0: no periodic rollouts
    eval_episodes: int = 48
    checkpoint_every: int = 2000
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 2  # 0 keeps torch's default


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


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int
    loss: float
    interrupted: bool
    seconds: float
    out: pathlib.Path


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
    )


def resolve_device(name: str) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def lr_factor(cfg: TeacherTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine or linear decay to zero at ``cfg.iterations``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min((step - cfg.warmup) / max(cfg.iterations - cfg.warmup, 1), 1.0)
    return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.lr_schedule == "cosine" else 1 - progress


def make_meta(cfg: TeacherTrainConfig, data: TrainData, teacher: DiffusionTeacher, info: dict[str, Any]) -> TeacherMeta:
    return TeacherMeta(
        family=cfg.family,
        network=dataclasses.asdict(teacher.network_config),
        diffusion=dataclasses.asdict(teacher.config),
        obs_window=cfg.obs_window,
        act_chunk=cfg.act_chunk,
        obs_dim=data.obs.shape[-1],
        act_dim=data.actions.shape[-1],
        obs_names=data.obs_names,
        act_names=data.act_names,
        control_period_s=data.control_period_s,
        task=data.task,
        obs_normalizer=data.obs_norm.to_dict(),
        act_normalizer=data.act_norm.to_dict(),
        dataset_sha256=data.dataset_sha256,
        training={"config": to_dict(cfg), **info},
        created_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


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


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_teacher(
    cfg: TeacherTrainConfig,
    data: TrainData,
    out: str | pathlib.Path | None = None,
    resume: bool = False,
    evaluate: Callable[[DiffusionTeacher, TeacherMeta], dict[str, float]] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train to ``cfg.iterations`` (or stop early after ``stop_after`` steps, as an interruption).

    Writes the EMA teacher to ``out`` (model.safetensors + teacher.json), the resumable
    state to ``out/training_state`` and evaluation results to ``out/eval.jsonl``. With
    ``evaluate``, ``out`` holds the EMA teacher with the best evaluation ``score`` so far
    (checkpoint selection by rollouts, as VDD and D3IL do); without, the latest one.
    """
    out = pathlib.Path(out or cfg.out)
    device = resolve_device(cfg.device)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    teacher = _new_teacher(cfg, data).to(device)
    ema = copy.deepcopy(teacher).requires_grad_(False)
    opt = torch.optim.AdamW(teacher.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed, best = 0, 0.0, None
    selecting = evaluate is not None and cfg.eval_every > 0
    if resume:
        state = load_training_state(out / STATE_DIR)
        teacher.load_state_dict(state.model)
        ema.load_state_dict(state.ema)
        opt.load_state_dict(state.optimizer)
        _set_rng_state(state.rng, device)
        step, elapsed, best = state.step, float(state.info.get("seconds", 0.0)), state.info.get("best")
    obs = torch.from_numpy(data.obs_norm.normalize(data.obs)).to(device)
    act = torch.from_numpy(data.act_norm.normalize(data.actions)).to(device)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, step + stop_after)
    loss_avg, start = float("nan"), time.monotonic() - elapsed

    def info() -> dict[str, Any]:
        return {"step": step, "loss": loss_avg, "seconds": time.monotonic() - start}

    def checkpoint() -> None:
        if not selecting or best is None:
            save_teacher(ema, make_meta(cfg, data, ema, info()), out)
        rng = _rng_state(device)
        save_training_state(
            TrainingState(
                teacher.state_dict(), ema.state_dict(), opt.state_dict(), step, rng, {**info(), "best": best}
            ),
            out / STATE_DIR,
        )

    teacher.train()
    with _stop_on_signals() as signals, tqdm(total=cfg.iterations, initial=step, desc=f"teacher-{cfg.family}") as bar:
        while step < end and not signals:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, step)
            idx = torch.randint(0, obs.shape[0], (cfg.batch_size,), device=device)
            obs_batch = obs[idx]
            if cfg.obs_noise > 0:
                obs_batch = obs_batch + cfg.obs_noise * torch.randn_like(obs_batch)
            loss = teacher.loss(obs_batch, act[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), teacher.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)
            step += 1
            value = loss.item()
            loss_avg = value if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * value
            bar.update(1)
            if step % 100 == 0:
                bar.set_postfix(loss=f"{loss_avg:.4f}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
            if selecting and (step % cfg.eval_every == 0 or step == cfg.iterations):
                result = evaluate(ema.eval(), make_meta(cfg, data, ema, {}))
                _log_eval(out, step, result, bar)
                if best is None or result["score"] > best["score"]:
                    best = {"step": step, **result}
                    save_teacher(ema, make_meta(cfg, data, ema, {**info(), "eval": result}), out)
    checkpoint()
    return TrainResult(step, loss_avg, step < cfg.iterations, time.monotonic() - start, out)


def _new_teacher(cfg: TeacherTrainConfig, data: TrainData) -> DiffusionTeacher:
    dims = (data.obs.shape[-1], data.actions.shape[-1], cfg.obs_window, cfg.act_chunk, cfg.network)
    return DDPMTeacher(*dims, cfg.ddpm) if cfg.family == "ddpm" else EDMTeacher(*dims, cfg.edm)


def _log_eval(out: pathlib.Path, step: int, result: dict[str, float], bar: tqdm) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / EVAL_LOG).open("a") as f:
        f.write(json.dumps({"step": step, **result}) + "\n")
    bar.write(f"step {step}: " + ", ".join(f"{k}={v:.3f}" for k, v in result.items()))
