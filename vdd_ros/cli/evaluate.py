"""Evaluate a policy on its task (Avoiding): success rate, behaviour entropy and a trajectory plot.

Give ``policy`` (an exported ONNX policy) or ``teacher`` (a checkpoint directory or teacher .yaml). By default
the in-process evaluation runs vectorised rollouts (480, seed 0); ``ros=true`` measures the
same ONNX policy through controller + task_sim over DDS and adds loop latency. Writes
``<output>/<tag>.json`` (and ``.png``) only, never next to the policy.
Example: evaluate policy=policies/avoiding_vdd.onnx output=/tmp/eval
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from vdd_ros.cli.common import ToolError, output_dir, require_dir, require_file, require_positive, run_tool
from vdd_ros.tasks.base import ROLLOUTS_PER_CONTEXT
from vdd_ros.tasks.registry import task_names
from vdd_ros.util.config import ConfigError, knob

if TYPE_CHECKING:
    from vdd_ros.tasks.policy import Policy


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """What to evaluate, how, and where the report goes."""

    policy: str = knob("", "exported ONNX policy to evaluate (give this or teacher)")
    teacher: str = knob("", "teacher checkpoint directory or teacher .yaml to evaluate (give this or policy)")
    steps: int = knob(0, "teacher denoising steps (0: the teacher's own)")
    sampler: str = knob("", "teacher sampler ('': the teacher's own)")
    act_exec: int = knob(0, "teacher: actions of each sampled chunk executed before the next (0: half the chunk)")
    mode: Literal["mean", "sample", "greedy"] = knob("mean", "MoE sampling mode of an ONNX policy")
    task: str = knob("", "task to roll out on ('': the task the policy or teacher was trained on)")
    episodes: int = knob(480, "number of rollouts")
    seed: int = knob(0, "rollout seed")
    rollouts_per_context: int = knob(
        ROLLOUTS_PER_CONTEXT, "consecutive rollouts sharing an initial state (per-context metrics; in process only)"
    )
    ros: bool = knob(False, "run the ONNX policy through controller + task_sim processes over DDS")
    rate: float = knob(500.0, "controller rate with ros=true [Hz]")
    output: str = knob("", "output directory ('': runs/eval/<policy or teacher name>)")

    def check(self) -> None:
        if bool(self.policy) == bool(self.teacher):
            raise ConfigError("give exactly one of policy=FILE.onnx or teacher=DIR")
        if self.policy:
            require_file(self.policy, "policy")
        else:
            if not pathlib.Path(self.teacher).is_file():  # a teacher .yaml (external network), else a checkpoint
                require_dir(self.teacher, "teacher")
            if self.ros:
                raise ConfigError("ros=true serves an ONNX policy: give policy=FILE.onnx")
        if self.task and self.task not in task_names():
            raise ConfigError(f"unknown task {self.task!r}; known tasks: {', '.join(task_names())}")
        require_positive(
            {"episodes": self.episodes, "rate": self.rate, "rollouts_per_context": self.rollouts_per_context}
        )
        if self.ros and self.rollouts_per_context != ROLLOUTS_PER_CONTEXT:
            raise ConfigError("rollouts_per_context applies to in-process rollouts; the ROS loop keeps the simulator's")
        if self.steps < 0 or self.act_exec < 0:
            raise ConfigError(f"steps and act_exec must be >= 0, got {self.steps} and {self.act_exec}")
        if self.policy and self.act_exec:
            raise ConfigError("act_exec sets a teacher's execution; a policy executes its contract's act_exec")

    @property
    def source(self) -> pathlib.Path:
        return pathlib.Path(self.policy or self.teacher)

    @property
    def out_dir(self) -> pathlib.Path:
        name = self.source.stem if self.source.is_file() else self.source.resolve().name
        return pathlib.Path(self.output or pathlib.Path("runs", "eval", name))

    @property
    def tag(self) -> str:
        return "ros_loop" if self.ros else f"eval_{self.mode if self.policy else 'teacher'}"


def _open(cfg: EvaluateConfig) -> Policy:
    """The policy, or a one-line ToolError for a file that is not a usable policy/checkpoint."""
    from vdd_ros.export.contract import ContractError
    from vdd_ros.pipeline.evaluate import open_policy
    from vdd_ros.teacher.checkpoint import TeacherCheckpointError

    try:
        return open_policy(cfg.policy, cfg.teacher, cfg.mode, cfg.seed, cfg.steps, cfg.sampler, cfg.act_exec)
    except (ContractError, TeacherCheckpointError, ValueError) as exc:
        raise ToolError(str(exc)) from exc


def run(cfg: EvaluateConfig) -> int:
    from vdd_ros.pipeline.evaluate import evaluate_policy, trained_task
    from vdd_ros.util.files import atomic_write_json
    from vdd_ros.util.progress import printer

    policy = _open(cfg)  # also for ros=true: a bad file fails here, in one line, before any process starts
    task = cfg.task or trained_task(policy)
    out = output_dir(str(cfg.out_dir))
    report_path = out / f"{cfg.tag}.json"
    if cfg.ros:
        from vdd_ros.harness.loop_eval import run_ros_loop

        loop = run_ros_loop(
            cfg.policy,
            task=task,
            episodes=cfg.episodes,
            control_rate_hz=cfg.rate,
            sampling_mode=cfg.mode,
            seed=cfg.seed,
            log_dir=str(out),
            on_progress=printer(),
        )
        report = {"policy": str(cfg.source), "ros_loop": True, **loop.to_json_dict()}
    else:
        plot = report_path.with_suffix(".png")
        result = evaluate_policy(
            policy,
            task,
            cfg.episodes,
            cfg.seed,
            plot,
            on_progress=printer(),
            rollouts_per_context=cfg.rollouts_per_context,
        )
        report = {"policy": policy.name, "source": str(cfg.source), **result.to_json_dict(), "plot": str(plot)}
    atomic_write_json(report_path, report, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "mode_counts"}, indent=2))
    print(f"wrote {report_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("evaluate", __doc__, EvaluateConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
