"""Teacher training settings, importable without torch (``train_teacher --help`` reads them).

Constructing a ``TeacherTrainConfig`` checks it, which loads the family registry (and torch).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from vdd_ros.util.config import knob

STATE_DIR = "training_state"  # resumable training state inside the output folder

# Lower bounds of the integer settings, checked before any work.
_MINIMUM = {"obs_window": 1, "act_chunk": 1, "iterations": 1, "batch_size": 1, "warmup": 0}
_MINIMUM |= {"eval_every": 0, "eval_episodes": 1, "checkpoint_every": 0, "torch_threads": 0}


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The denoiser: a residual MLP over the flat chunk, or a 1-D temporal U-Net over its time axis.

    Teacher files written before ``kind`` existed lack it and load as ``mlp``.
    """

    kind: Literal["mlp", "unet1d"] = knob(
        "mlp",
        "mlp: residual MLP over the flattened chunk; unet1d: 1-D convolutional U-Net over the chunk's time axis "
        "with FiLM conditioning (Diffusion Policy, Chi et al. 2023)",
    )
    width: int = knob(256, "hidden width of the residual MLP (unet1d: of the conditioning MLP)")
    blocks: int = knob(3, "residual blocks (mlp)")
    emb_dim: int = knob(32, "sinusoidal features encoding the noise level (even)")
    layer_norm: bool = knob(True, "pre-norm LayerNorm in every block (mlp)")
    unet_channels: tuple[int, ...] = knob(
        (64, 128, 256), "unet1d: channels per level; the time axis halves between consecutive levels"
    )
    unet_kernel: int = knob(5, "unet1d: temporal kernel size of every convolution (odd)")
    unet_groups: int = knob(8, "unet1d: GroupNorm groups (must divide every entry of unet_channels)")
    obs_deltas: bool = knob(
        False,
        "also feed the window's successive differences scaled to unit std (a buffer fitted on the training "
        "windows): the motion of z-scored positions is otherwise too small for the net to resolve (T >= 2)",
    )
    obs_differences: tuple[tuple[int, int], ...] = knob(
        (),
        "observation index pairs [a, b]: also feed o[a] - o[b] in the data's units, standardised on the training "
        "windows, for every window step (e.g. block minus pusher position: the geometry a push depends on)",
    )

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "unet1d"):
            raise ValueError(f"network.kind must be mlp or unet1d, got {self.kind!r}")
        if self.width < 1 or self.blocks < 0 or self.emb_dim < 2 or self.emb_dim % 2:
            raise ValueError("network needs width >= 1, blocks >= 0 and an even emb_dim >= 2")
        channels, groups = self.unet_channels, self.unet_groups
        if not channels or groups < 1 or any(c < 1 or c % groups for c in channels):
            raise ValueError(f"network.unet_channels must be non-empty multiples of unet_groups = {groups} (>= 1)")
        if self.unet_kernel < 1 or self.unet_kernel % 2 == 0:
            raise ValueError(f"network.unet_kernel must be odd and >= 1, got {self.unet_kernel}")
        if any(len(p) != 2 or min(p) < 0 or p[0] == p[1] for p in self.obs_differences):
            pairs = self.obs_differences
            raise ValueError(f"network.obs_differences: need pairs [a, b] of distinct indices, got {pairs}")


@dataclasses.dataclass(frozen=True)
class TeacherTrainConfig:
    """One YAML file per teacher (config/teacher_avoiding*.yaml); checked on construction."""

    family: str = knob("ddpm", "teacher family, a name in vdd_ros.teacher.registry (built in: ddpm, edm)")
    dataset: str = knob("runs/demos/avoiding.safetensors", "demonstration file to train on")
    output: str = knob("runs/teacher_ddpm", "output folder: model.safetensors, teacher.json, training_state/")
    obs_window: int = knob(5, "T, observations per window (>= 1)")
    act_chunk: int = knob(1, "H, actions per predicted chunk (>= 1)")
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)  # kind and size of the denoiser
    # After construction an instance of the family's config dataclass (teacher.registry).
    diffusion: object = knob(
        None, "the family's settings (DDPMConfig / EDMConfig, docs/teacher.md); omitted keys take its defaults"
    )
    iterations: int = knob(20000, "optimizer steps (>= 1)")
    batch_size: int = knob(256, "windows per step (>= 1)")
    lr: float = knob(1e-3, "peak AdamW learning rate (> 0)")
    weight_decay: float = knob(1e-4, "AdamW weight decay (>= 0)")
    warmup: int = knob(500, "steps of linear learning-rate warm-up (>= 0)")
    lr_schedule: Literal["cosine", "linear", "constant"] = knob(
        "cosine", "learning rate after warm-up: cosine or linear decay reaching 0 at the last step, or constant"
    )
    ema_decay: float = knob(0.999, "decay of the exponential moving average of the weights that is saved, in [0, 1)")
    obs_noise: float = knob(
        0.0,
        "std of Gaussian noise on the normalised observation windows of each batch (>= 0): scripted demos are so "
        "smooth that the next action is almost a function of the exact window; the noise stops the teacher from "
        "keying on sub-millimetre detail closed-loop rollouts do not reproduce",
    )
    eval_every: int = knob(0, "steps between rollout evaluations that select the saved EMA teacher; 0 = none")
    eval_episodes: int = knob(48, "rollouts per evaluation (>= 1)")
    checkpoint_every: int = knob(2000, "steps between resumable checkpoints; 0 = only at the end or on a stop")
    seed: int = knob(0, "seed of the initial weights and of the batches")
    device: str = knob("auto", "torch device; auto = CUDA when available, else CPU")
    torch_threads: int = knob(0, "CPU threads for torch; 0 = one per core other processes leave idle, re-checked")

    def __post_init__(self) -> None:
        import torch  # validation only: --help reads the fields without loading torch

        from vdd_ros.teacher.registry import get_family

        family = get_family(self.family)  # UnknownFamilyError names the known ones
        if self.diffusion is None or isinstance(self.diffusion, dict):
            object.__setattr__(self, "diffusion", family.parse_config(self.diffusion or {}, "diffusion"))
        elif not isinstance(self.diffusion, family.config):
            raise ValueError(f"diffusion: family {self.family!r} takes a {family.config.__name__}")
        for name, low in _MINIMUM.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.obs_noise >= 0 and 0 <= self.ema_decay < 1):
            raise ValueError("need lr > 0, weight_decay >= 0, obs_noise >= 0 and 0 <= ema_decay < 1")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as exc:
                raise ValueError(f"device {self.device!r}: {exc}") from None
