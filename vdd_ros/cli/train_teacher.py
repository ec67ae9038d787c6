"""Train a diffusion teacher (DDPM or EDM) on a demonstration file into ``output``.

SIGINT/SIGTERM save the training state and exit with status 130; ``resume=true`` continues.
Example: train_teacher config/teacher_avoiding.yaml iterations=2000 output=runs/teacher_ddpm
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Sequence

from vdd_ros.cli.common import (
    EXIT_INTERRUPTED,
    ToolError,
    narrow,
    require_dir,
    require_file,
    run_tool,
)
from vdd_ros.teacher.config import STATE_DIR, TeacherTrainConfig
from vdd_ros.util.config import knob


@dataclasses.dataclass(frozen=True)
class TrainTeacherConfig(TeacherTrainConfig):
    """The teacher's training settings plus what only this tool decides."""

    resume: bool = knob(False, "continue from <output>/training_state (which must exist)")

    def check(self) -> None:
        require_file(self.dataset, "dataset")  # counts and ranges: TeacherTrainConfig checks its own
        if self.resume:
            require_dir(str(pathlib.Path(self.output, STATE_DIR)), "resume=true: training state")


def run(cfg: TrainTeacherConfig) -> int:
    from vdd_ros.data.dataset import DatasetError
    from vdd_ros.pipeline.evaluate import rollout_evaluator
    from vdd_ros.tasks.registry import task_names
    from vdd_ros.teacher.checkpoint import TeacherCheckpointError
    from vdd_ros.teacher.train import load_train_data, train_teacher
    from vdd_ros.util.progress import printer

    train_cfg = narrow(cfg, TeacherTrainConfig)
    try:
        data = load_train_data(train_cfg)
        evaluate = rollout_evaluator(data.task, cfg.eval_episodes, cfg.seed) if data.task in task_names() else None
        result = train_teacher(
            train_cfg, data, cfg.output, resume=cfg.resume, evaluate=evaluate, on_progress=printer()
        )
    except (DatasetError, TeacherCheckpointError) as exc:
        raise ToolError(str(exc)) from exc
    state = "interrupted (resume=true continues)" if result.interrupted else "done"
    print(f"{state}: step {result.step}, loss {result.loss:.4f}, {result.seconds:.0f} s -> {result.output}")
    return EXIT_INTERRUPTED if result.interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("train_teacher", __doc__, TrainTeacherConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
