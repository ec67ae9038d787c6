"""Import a LeRobot dataset folder (codebase v2.0, v2.1 or v3.0) into one validated .safetensors demonstration file.

Example: import_lerobot dataset=~/lerobot/pusht output=runs/demos/pusht.safetensors
Numeric features become observation and action columns; image and video features are skipped.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from collections.abc import Sequence

from vdd_ros.cli.common import ToolError, require_dir, run_tool
from vdd_ros.tasks.registry import get_task, task_names
from vdd_ros.util.config import ConfigError, knob


@dataclasses.dataclass(frozen=True)
class ImportLeRobotConfig:
    """One LeRobot dataset folder -> one demonstration file."""

    dataset: str = knob("", "the LeRobot dataset's root folder (holds meta/info.json and data/)")
    output: str = knob("runs/demos/lerobot.safetensors", "the .safetensors file to write")
    observations: tuple[str, ...] = knob(
        (), "observation features, concatenated in this order; empty = observation.state (+ environment_state)"
    )
    action: str = knob("action", "the action feature")
    task: str = knob("", "registered task the demonstrations belong to (its widths must match), or empty")

    def check(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset must name a LeRobot dataset folder")
        require_dir(str(pathlib.Path(self.dataset).expanduser()), "dataset")
        if not self.output.endswith(".safetensors"):
            raise ConfigError(f"output must name a .safetensors file, got {self.output!r}")
        if not self.action:
            raise ConfigError("action must name a feature")
        if self.task and self.task not in task_names():
            raise ConfigError(f"unknown task {self.task!r}; known tasks: {', '.join(task_names())} (or empty)")


def run(cfg: ImportLeRobotConfig) -> int:
    from vdd_ros.data.dataset import DatasetError, dataset_sha256, load_dataset, save_dataset
    from vdd_ros.data.import_report import report_lines
    from vdd_ros.data.lerobot_import import LeRobotImportError, import_lerobot

    t0 = time.monotonic()
    root = pathlib.Path(cfg.dataset).expanduser()
    try:
        imported = import_lerobot(root, cfg.observations, cfg.action, cfg.task)
    except LeRobotImportError as exc:
        raise ToolError(str(exc)) from exc
    ds = imported.dataset
    if cfg.task:
        task = get_task(cfg.task)
        widths = (len(ds.obs_names), len(ds.act_names))
        if widths != (len(task.obs_names), len(task.act_names)):
            raise ToolError(
                f"task {cfg.task!r} has {len(task.obs_names)} observation and {len(task.act_names)} action columns, "
                f"the dataset {widths[0]} and {widths[1]}"
            )
    for line in report_lines(imported):
        print(line)
    try:
        save_dataset(ds, cfg.output)
        load_dataset(cfg.output)  # prove the file just written passes full validation
    except DatasetError as exc:
        raise ToolError(str(exc)) from exc
    print(f"wrote {cfg.output} (sha256 {dataset_sha256(cfg.output)[:16]}...) in {time.monotonic() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("import_lerobot", __doc__, ImportLeRobotConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
