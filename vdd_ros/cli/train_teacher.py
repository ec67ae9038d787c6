"""Train a diffusion teacher from a YAML config.

    python -m vdd_ros.cli.train_teacher --config config/teacher_avoiding.yaml [--out DIR]
        [--iterations N] [--resume]

SIGINT/SIGTERM save the training state and exit (code 130); ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

from vdd_ros.util.config import ConfigError, load_config
from vdd_ros.data.dataset import DatasetError
from vdd_ros.tasks.avoiding import TASK_NAME
from vdd_ros.tasks.rollout import run_rollouts
from vdd_ros.teacher.base import DiffusionTeacher
from vdd_ros.teacher.checkpoint import TeacherCheckpointError, TeacherMeta
from vdd_ros.teacher.policy import TeacherPolicy
from vdd_ros.teacher.train import STATE_DIR, TeacherTrainConfig, load_train_data, train_teacher

EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_teacher", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, type=pathlib.Path, help="YAML file (TeacherTrainConfig)")
    p.add_argument("--out", type=pathlib.Path, help="output directory (default: config 'out')")
    p.add_argument("--iterations", type=int, help="override the configured number of iterations")
    p.add_argument("--resume", action="store_true", help="continue from OUT/training_state")
    return p


def rollout_evaluator(episodes: int, seed: int):
    """Periodic model selection signal: a few rollouts of the EMA teacher at default steps."""

    def evaluate(teacher: DiffusionTeacher, meta: TeacherMeta) -> dict[str, float]:
        result = run_rollouts(
            TeacherPolicy(teacher, meta, device=str(next(teacher.parameters()).device)), episodes, seed
        )
        teacher.train(False)
        return {"success_rate": result.success_rate, "entropy": result.entropy, "score": result.score}

    return evaluate


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(TeacherTrainConfig, args.config)
        if args.iterations is not None:
            cfg = dataclasses.replace(cfg, iterations=args.iterations)
        out = args.out or pathlib.Path(cfg.out)
        if args.resume and not (out / STATE_DIR).is_dir():
            print(f"error: nothing to resume in {out / STATE_DIR}", file=sys.stderr)
            return 2
        data = load_train_data(cfg)
        evaluate = rollout_evaluator(cfg.eval_episodes, cfg.seed) if data.task == TASK_NAME else None
        result = train_teacher(cfg, data, out, resume=args.resume, evaluate=evaluate)
    except (ConfigError, DatasetError, TeacherCheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{'interrupted' if result.interrupted else 'done'}: step {result.step}, loss {result.loss:.4f}, "
        f"{result.seconds:.0f} s -> {result.out}"
    )
    return EXIT_INTERRUPTED if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
