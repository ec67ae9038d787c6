"""Distil a teacher into an ONNX mixture of experts without ROS: the ``distill`` node's job, offline.

Same settings and YAML as the node (``config/distill_avoiding.yaml``, a ROS 2 parameter file);
trains (resuming from ``<output>/checkpoint``), exports ``<output>/policy.onnx`` and evaluates it.
Ctrl-C saves a checkpoint and exits with status 130; running again continues.
Example: distill_offline config/distill_avoiding.yaml output=runs/distill_vdd train.iterations=500
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


def run(cfg: DistillOfflineConfig) -> int:
    from vdd_ros.pipeline.distill_job import DistillError, run_distillation
    from vdd_ros.util.progress import printer

    stop = threading.Event()  # Ctrl-C: finish the step, save the checkpoint, exit 130
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        summary = run_distillation(narrow(cfg, DistillJobConfig), on_progress=printer(), should_stop=stop.is_set)
    except DistillError as exc:
        raise ToolError(str(exc)) from exc
    print(json.dumps({k: v for k, v in summary.items() if k != "evals"}, indent=1, default=float))
    return 0 if summary["status"] == "done" else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("distill_offline", __doc__, DistillOfflineConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
