"""The distillation job's configuration: the job's own fields nesting its components' configs.

Importable without torch, so ``distill_offline --help`` and the ``distill`` node's parameter
table cost no framework import. ``config/distill_avoiding.yaml`` and the table in
``docs/distill.md`` equal these defaults (test_distill_config.py).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Literal

from vdd_ros.distill.config import TrainConfig, VDDConfig
from vdd_ros.moe.config import MoEConfig
from vdd_ros.util.config import ConfigError, flatten, knob


class DistillError(ValueError):
    """The inputs of a distillation job are unusable (corrupt/mismatched teacher or dataset, stale checkpoint)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Rollouts of the exported graph itself (what is evaluated is what ships); registered tasks only."""

    every: int = knob(1000, "iterations between evaluations that select the published checkpoint; 0 = none")
    episodes: int = knob(240, "rollouts per periodic evaluation")
    final_episodes: int = knob(480, "rollouts of the final evaluation of the published policy; 0 = none")
    mode: Literal["mean", "sample", "greedy"] = knob(
        "mean", "how the evaluated policy acts (runtime sampling_mode); mean: z ~ q(z|s), output mu_z (the paper)"
    )


@dataclasses.dataclass(frozen=True)
class DistillJobConfig:
    """One distillation job. Negative teacher-dependent values (obs_noise, noise range) mean "the teacher's"."""

    teacher: str = knob(
        "runs/teacher_ddpm", "teacher checkpoint folder (model.safetensors + teacher.json), or a teacher .yaml"
    )
    dataset: str = knob("runs/demos/avoiding.safetensors", "demonstration file whose states are distilled on")
    output: str = knob("runs/distill_vdd", "output folder: checkpoint/, best/, policy.onnx, summary.json")
    method: Literal["vdd", "em"] = knob(
        "vdd", "vdd, or em: the same MoE fitted to the demonstrations by maximum likelihood (baseline)"
    )
    seed: int = knob(0, "seed of the initial weights and of the training batches")
    device: str = knob("auto", "torch device; auto = CUDA when available, else CPU")
    torch_threads: int = knob(0, "CPU threads for torch; 0 = one per core other processes leave idle, re-checked")
    policy_id: str = knob("", "name stored in the policy contract; empty = <task>-<method>-<UTC time>")
    act_exec: int = knob(
        0,
        "actions of each predicted chunk the runtime executes before it plans the next (1..the teacher's act_chunk); "
        "0 = half the chunk, rounded up",
    )
    checkpoint_every: int = knob(250, "iterations between checkpoints (also saved at each evaluation and on stop)")
    moe: MoEConfig = dataclasses.field(default_factory=MoEConfig)  # student architecture
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)  # shared by VDD and EM
    vdd: VDDConfig = dataclasses.field(default_factory=VDDConfig)  # VDD only
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


# Inclusive bounds of numeric settings (high None = unbounded); the node declares the bounded ones as ROS ranges.
LIMITS: dict[str, tuple[float, float | None]] = {
    "torch_threads": (0, None),
    "act_exec": (0, None),
    "checkpoint_every": (0, None),
    "moe.num_experts": (1, None),
    "moe.hidden": (1, None),
    "moe.trunk_blocks": (0, None),
    "moe.head_hidden": (1, None),
    "moe.gating_hidden": (1, None),
    "moe.gating_blocks": (0, None),
    "moe.min_std": (0.0, None),
    "moe.mean_init_bound": (0.0, None),
    "moe.velocity_gain": (0.0, None),
    "train.iterations": (1, None),
    "train.batch_size": (1, None),
    "train.start_fraction": (0.0, 1.0),
    "train.start_steps": (1, None),
    "vdd.samples_per_expert": (1, None),
    "vdd.expert_steps": (1, None),
    "vdd.gating_steps": (0, None),
    "vdd.anneal_fraction": (0.0, 1.0),
    "vdd.student_states": (0.0, 1.0),
    "vdd.student_state_capacity": (0, None),
    "eval.every": (0, None),
    "eval.episodes": (1, None),
    "eval.final_episodes": (0, None),
}


def check_config(cfg: DistillJobConfig) -> None:
    """Every check that needs no teacher: ranges, device, input paths. Raises ConfigError (one line)."""
    values = flatten(cfg)
    for name, (low, high) in LIMITS.items():
        value = values[name]
        if value < low or (high is not None and value > high):
            bound = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
            raise ConfigError(f"{name} must be {bound}, got {value}")
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be finite, got {value}")
    if cfg.train.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {cfg.train.lr}")
    if cfg.moe.init_std <= cfg.moe.min_std:
        raise ConfigError(f"moe.init_std ({cfg.moe.init_std}) must exceed moe.min_std ({cfg.moe.min_std})")
    if min(cfg.vdd.noise_low, cfg.vdd.noise_high) >= 0 and cfg.vdd.noise_low > cfg.vdd.noise_high:
        raise ConfigError(f"vdd.noise_low ({cfg.vdd.noise_low}) exceeds vdd.noise_high ({cfg.vdd.noise_high})")
    from vdd_ros.util.torch_setup import resolve_device  # loads torch: only when a job is really checked

    try:
        resolve_device(cfg.device)
    except RuntimeError as exc:
        raise ConfigError(f"device {cfg.device!r}: {exc}") from None
    from vdd_ros.teacher.checkpoint import is_teacher_yaml

    yaml_file = is_teacher_yaml(cfg.teacher)  # an external network (docs/teacher.md) rather than a checkpoint
    if not (pathlib.Path(cfg.teacher).is_file() if yaml_file else pathlib.Path(cfg.teacher).is_dir()):
        raise ConfigError(f"teacher {cfg.teacher!r} is not a {'file' if yaml_file else 'folder'}")
    if not pathlib.Path(cfg.dataset).is_file():
        raise ConfigError(f"dataset {cfg.dataset!r} is not a file")
    if pathlib.Path(cfg.output).exists() and not pathlib.Path(cfg.output).is_dir():
        raise ConfigError(f"output {cfg.output!r} exists and is not a folder")
