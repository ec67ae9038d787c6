"""Training settings of the distillation trainers, importable without torch."""

from __future__ import annotations

import dataclasses
from typing import Literal

from vdd_ros.util.config import knob


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the VDD and the EM trainer share: run length, batches, Adam, state jitter."""

    iterations: int = knob(6000, "training iterations (VDD: expert_steps expert + gating_steps gating updates each)")
    batch_size: int = knob(128, "states (VDD) or (state, action) pairs (EM) per update")
    lr: float = knob(1e-3, "Adam learning rate of the experts and the gating")
    lr_decay: bool = knob(True, "decay the learning rate linearly to 0 over the whole run")
    obs_noise: float = knob(
        -1.0,
        "std of the Gaussian jitter on the normalised states trained on; < 0 = the value the teacher "
        "was trained with (recorded in its checkpoint)",
    )
    start_fraction: float = knob(
        0.0,
        "fraction of each batch (VDD: expert and gating batches) drawn from the first start_steps windows of each "
        "demonstration, where the demonstrator picks its mode: a few windows among hundreds otherwise",
    )
    start_steps: int = knob(4, "how many windows from each demonstration's start start_fraction draws from")


@dataclasses.dataclass(frozen=True)
class VDDConfig:
    """What only VDD has (the shared run settings are ``TrainConfig``); noise levels in the teacher's units."""

    samples_per_expert: int = knob(2, "V, reparameterised samples per expert and state")
    noise_low: float = knob(
        -1.0, "lowest teacher noise level of the score (DDPM: step t, EDM: sigma); < 0 = the teacher's default"
    )
    noise_high: float = knob(-1.0, "highest teacher noise level of the score; < 0 = the teacher's default")
    noise_schedule: Literal["uniform", "anneal"] = knob(
        "uniform",
        "uniform: every level drawn uniformly in [noise_low, noise_high] all run; anneal: the upper end moves "
        "linearly from noise_high down to noise_low over the first anneal_fraction of the iterations "
        "(DDPM: rounded to whole steps)",
    )
    anneal_fraction: float = knob(
        0.8, "fraction of the iterations over which anneal lowers the upper end (then the level is noise_low)"
    )
    expert_weighting: Literal["gating", "uniform"] = knob(
        "gating",
        "weight of each expert's objective in a state: gating = sg(q(z|s)) (the paper); uniform = 1/Z, so an "
        "expert the learned gating ignores in a state still learns there, and its log q~ term moves it to an "
        "uncovered mode (ambiguous starts otherwise collapse onto one mode)",
    )
    expert_steps: int = knob(2, "expert updates per iteration, each on a fresh batch of states")
    gating_steps: int = knob(1, "gating updates per iteration on fresh (state, action) pairs (gating learned only)")
    student_states: float = knob(
        0.0,
        "fraction of each expert batch drawn from the windows the student visited in its evaluation rollouts "
        "(teacher-labelled, DAgger-style); 0 = dataset states only",
    )
    student_state_capacity: int = knob(50000, "newest student windows kept for student_states")
