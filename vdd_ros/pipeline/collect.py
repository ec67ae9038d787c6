"""A task's scripted expert -> one validated demonstration file (``collect_demos``, ``demo``)."""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import time
from collections.abc import Callable

import numpy as np

from vdd_ros.data.dataset import DemoDataset, load_dataset, save_dataset
from vdd_ros.tasks.avoiding.expert import ExpertConfig
from vdd_ros.tasks.base import NO_MODE
from vdd_ros.tasks.modes import balanced_labels
from vdd_ros.tasks.registry import get_task, task_names
from vdd_ros.util.config import ConfigError, knob, to_dict

_CHUNK = 60  # demos per log line


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """One demonstration file."""

    task: str = knob("avoiding", "registered task whose scripted expert demonstrates")
    episodes: int = knob(1200, "number of demonstrations (mode labels balanced to the distribution)")
    output: str = knob("runs/demos/avoiding.safetensors", "the .safetensors file to write")
    seed: int = knob(0, "seed of the mode labels and of the expert's variations")
    mode_distribution: str = knob(
        "uniform", "how often each mode is shown: a name the task offers (Avoiding: skewed; Pushing: preferred)"
    )
    expert: ExpertConfig = dataclasses.field(default_factory=ExpertConfig)  # the Avoiding expert's variations

    def check(self) -> None:
        if self.task not in task_names():
            raise ConfigError(f"unknown task {self.task!r}; known tasks: {', '.join(task_names())}")
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if not self.output:
            raise ConfigError("output must name a .safetensors file")
        offered = get_task(self.task).mode_distributions()
        if self.mode_distribution not in offered:
            raise ConfigError(f"mode_distribution must be one of {sorted(offered)}, got {self.mode_distribution!r}")
        if get_task(self.task).expert_config_type not in (ExpertConfig, None) and self.expert != ExpertConfig():
            raise ConfigError(f"expert.* set the Avoiding expert; task {self.task!r} runs its own expert's defaults")


def collect_demos(cfg: CollectConfig, log: Callable[[str], None] = lambda _: None) -> DemoDataset:
    """Generate (a ``log`` line per chunk), write ``cfg.output`` and read it back through full validation."""
    task = get_task(cfg.task)
    probs = task.mode_distributions()[cfg.mode_distribution]
    rng = np.random.default_rng(cfg.seed)
    t0 = time.monotonic()
    # None: state-dependent preferences, so the expert picks each mode once it sees the start state
    labels = np.full(cfg.episodes, NO_MODE) if probs is None else balanced_labels(cfg.episodes, probs, rng)
    expert = cfg.expert if task.expert_config_type in (ExpertConfig, None) else task.expert_config_type()
    demos = []
    while len(demos) < cfg.episodes:
        demos += task.generate_demos(labels[len(demos) : len(demos) + _CHUNK], rng, expert)
        log(f"collected {len(demos)}/{cfg.episodes} demos ({time.monotonic() - t0:.1f} s)")
    ds = DemoDataset(
        observations=[d.observations for d in demos],
        actions=[d.actions for d in demos],
        obs_names=task.obs_names,
        act_names=task.act_names,
        control_period_s=task.control_period_s,
        mode_labels=np.array([d.mode for d in demos], dtype=np.int64),
        task=task.name,
        provenance={
            "generator": f"vdd_ros.tasks.{task.name} scripted expert",
            "seed": cfg.seed,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "path_distribution_name": cfg.mode_distribution,
            "path_distribution": None if probs is None else [float(p) for p in probs],
            "expert_config": to_dict(expert),
        },
    )
    pathlib.Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    save_dataset(ds, cfg.output)
    return load_dataset(cfg.output)  # prove the file just written passes full validation
