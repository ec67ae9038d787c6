"""Rollout evaluation of a policy on a task: the one path behind every quality figure.

``evaluate``, ``demo`` and ``bench`` open their policies with ``open_policy`` and score them
with ``evaluate_policy``; teacher training selects checkpoints with ``rollout_evaluator``.
Sharing the path keeps the numbers comparable across tools (same seed handling, same plot).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from vdd_ros.tasks.base import ROLLOUTS_PER_CONTEXT, Task
from vdd_ros.tasks.policy import Policy
from vdd_ros.tasks.registry import get_task, task_names
from vdd_ros.tasks.rollout import RolloutResult, run_rollouts
from vdd_ros.teacher.base import Teacher
from vdd_ros.teacher.checkpoint import TeacherMeta, load_teacher
from vdd_ros.teacher.policy import TeacherPolicy
from vdd_ros.util.progress import OnProgress, ignore


def open_policy(
    policy: str = "",
    teacher: str = "",
    mode: str = "mean",
    seed: int = 0,
    steps: int = 0,
    sampler: str = "",
    act_exec: int = 0,
) -> Policy:
    """An exported ONNX policy (``policy``, sampled in ``mode``) or a teacher (checkpoint folder or .yaml).

    A teacher executes ``act_exec`` actions of each sampled chunk (0: half the chunk); a policy, its contract's.
    """
    if policy:
        from vdd_ros.runtime.onnx_policy import OnnxPolicy

        return OnnxPolicy(policy, mode=mode, seed=seed)
    net, meta = load_teacher(teacher, sampler=sampler or None)
    bounds = get_task(meta.task).action_bounds if meta.task in task_names() else None
    return TeacherPolicy(net, meta, steps=steps or None, action_bounds=bounds, act_exec=act_exec or None)


def trained_task(policy: Policy) -> str:
    """The task a teacher checkpoint or exported policy was trained on ('' when it does not say)."""
    if isinstance(policy, TeacherPolicy):
        return policy.meta.task
    return policy.loaded.contract.task


def evaluate_policy(
    policy: Policy,
    task: Task | str,
    episodes: int = 480,
    seed: int = 0,
    plot: str | os.PathLike[str] | None = None,
    label: str = "",
    on_progress: OnProgress = ignore,
    rollouts_per_context: int = ROLLOUTS_PER_CONTEXT,
) -> RolloutResult:
    """``episodes`` rollouts from ``seed``; with ``plot``, a trajectory PNG titled with ``label`` and the scores."""
    result = run_rollouts(
        policy, task, episodes=episodes, seed=seed, on_progress=on_progress, rollouts_per_context=rollouts_per_context
    )
    if plot is not None:
        result.plot(plot, f"{label or policy.name}: success {result.success_rate:.2f}, entropy {result.entropy:.2f}")
    return result


def rollout_evaluator(task: Task | str, episodes: int, seed: int) -> Callable[[Teacher, TeacherMeta], dict[str, float]]:
    """Teacher training's periodic model selection signal: rollouts of the EMA teacher at its default steps."""

    def evaluate(teacher: Teacher, meta: TeacherMeta) -> dict[str, float]:
        device = str(next(teacher.parameters()).device)
        policy = TeacherPolicy(teacher, meta, device=device, action_bounds=get_task(task).action_bounds)
        result = run_rollouts(policy, task, episodes=episodes, seed=seed)
        teacher.train(False)
        return {"success_rate": result.success_rate, "entropy": result.entropy, "score": result.score}

    return evaluate
