"""Distil a teacher into an ONNX mixture of experts without ROS: the ``distill`` node's job, offline.

Same settings and YAML as the node (``config/distill_avoiding.yaml``, a ROS 2 parameter file);
trains (resuming from ``<output>/checkpoint``), exports ``<output>/policy.onnx`` and evaluates it.
Ctrl-C saves a checkpoint and exits with status 130; running again continues.
Example: distill_offline config/distill_avoiding.yaml output=runs/distill_vdd train.iterations=500

Data parallel on N GPUs (or N CPU processes): torchrun --nproc-per-node N $(which distill_offline)
CONFIG.yaml ...; train.batch_size is the global batch and must be divisible by N; rank 0 writes,
evaluates and prints (docs/distill.md, "Several GPUs and machines").
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Sequence

from vdd_ros.cli.common import EXIT_INTERRUPTED, ToolError, narrow, run_tool
from vdd_ros.pipeline.distill_config import DistillJobConfig, check_config


@dataclasses.dataclass(frozen=True)
class DistillOfflineConfig(DistillJobConfig):
    """The distillation job's settings, checked before anything is loaded or created."""

    def check(self) -> None:
        check_config(self)
        from vdd_ros.util.distributed import launched_world, per_rank_batch  # torch: not for --help

        per_rank_batch(self.train.batch_size, launched_world())


def run(cfg: DistillOfflineConfig) -> int:
    from vdd_ros.pipeline.distill_job import DistillError, run_distillation
    from vdd_ros.util.progress import printer

    stop = threading.Event()  # Ctrl-C: finish the step, save the checkpoint, exit 130 (every rank at once)
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        summary = run_distillation(narrow(cfg, DistillJobConfig), on_progress=printer(), should_stop=stop.is_set)
    except DistillError as exc:
        raise ToolError(str(exc)) from exc
    if "rank" not in summary:  # the other ranks of a data-parallel run stay quiet
        shown = {k: v for k, v in summary.items() if k not in ("evals", "train_curve")}
        print(json.dumps(shown, indent=1, default=float))
    return 0 if summary["status"] == "done" else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("distill_offline", __doc__, DistillOfflineConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
