"""Typed progress events: what long jobs report, shared by the CLI tools, the nodes and the demo.

A job calls ``on_progress(event)`` with one of these; ``describe`` turns any of them into the
one line a person reads, so the distill node, ``demo`` and ``evaluate`` print the same text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class TrainProgress:
    """Training reached ``iteration`` of ``iterations``; ``stats`` are the step's scalar diagnostics."""

    iteration: int
    iterations: int
    stats: dict[str, float]


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """A rollout evaluation finished. ``final`` marks the one whose policy is published."""

    iteration: int
    success_rate: float
    entropy: float
    episodes: int
    final: bool = False
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RolloutProgress:
    """``done`` of ``total`` episodes of an evaluation have finished."""

    done: int
    total: int
    successes: int


@dataclasses.dataclass(frozen=True)
class Resumed:
    iteration: int


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop the job (e.g. a teacher/data mismatch)."""

    message: str


Event = TrainProgress | EvalResult | RolloutProgress | Resumed | Notice
OnProgress = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The default ``on_progress``."""


def describe(event: Event) -> str:
    """One human-readable line per event."""
    match event:
        case TrainProgress(iteration, iterations, stats):
            fields = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            return f"[{iteration}/{iterations}] {fields}"
        case EvalResult(iteration, success, entropy, episodes, final):
            kind = "final_eval" if final else "eval"
            return f"{kind} @ {iteration}: success {success:.3f}, entropy {entropy:.3f} over {episodes} rollouts"
        case RolloutProgress(done, total, successes):
            return f"rollouts {done}/{total}: {successes} successes so far"
        case Resumed(iteration):
            return f"resumed from the checkpoint at iteration {iteration}"
        case Notice(message):
            return f"warning: {message}"
    raise TypeError(f"not a progress event: {event!r}")


def printer(prefix: str = "") -> OnProgress:
    """An ``on_progress`` that prints each event's line, flushed (long jobs run under pipes and logs)."""

    def show(event: Event) -> None:
        print(prefix + describe(event), flush=True)

    return show
