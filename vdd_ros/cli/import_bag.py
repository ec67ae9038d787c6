"""Import rosbag2 recordings (MCAP or sqlite3) as one demonstration .safetensors file, no code needed.

The mapping (the YAML file, then key=value) says which topics and fields are the observation
columns and the action, the control period, how samples are aligned to ticks and where episodes
start. Writes the dataset, prints a report (episodes, steps, each topic's rate, filled and unused
samples) and saves a PNG of the columns next to the output.
Example: import_bag config/import_bag_avoiding.yaml bags=[rosbag2_2026_01_01] output=runs/demos/robot.safetensors
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Sequence

from vdd_ros.cli.common import ToolError, narrow, run_tool
from vdd_ros.data.bag.config import BagMapping
from vdd_ros.util.config import ConfigError, knob


@dataclasses.dataclass(frozen=True)
class ImportBagConfig(BagMapping):
    """The mapping plus which bags to read and where to write."""

    bags: tuple[str, ...] = knob((), "rosbag2 recordings: folders with metadata.yaml, or single .mcap / .db3 files")
    output: str = knob("runs/demos/imported.safetensors", "the .safetensors file to write (a .png goes next to it)")

    def check(self) -> None:
        if not self.bags:
            raise ConfigError("bags is empty: give bags=[path, ...]")
        for bag in self.bags:
            if not pathlib.Path(bag).exists():
                raise ConfigError(f"bag {bag} does not exist")
        if not self.output.endswith(".safetensors"):
            raise ConfigError(f"output must name a .safetensors file, got {self.output!r}")
        super().check()
        if self.task:
            self._check_task()

    def _check_task(self) -> None:
        """A dataset for a registered task must have its columns, or evaluation would feed it the wrong inputs."""
        from vdd_ros.tasks.registry import get_task, task_names

        if self.task not in task_names():
            raise ConfigError(f"unknown task {self.task!r}; known tasks: {', '.join(task_names())}")
        task = get_task(self.task)
        for what, ours, theirs in (
            ("observation", self.obs_names, task.obs_names),
            ("action", self.action.names, task.act_names),
        ):
            if tuple(ours) != tuple(theirs):
                raise ConfigError(
                    f"task {task.name!r} needs {what} names {list(theirs)}, the mapping gives {list(ours)}"
                )


def run(cfg: ImportBagConfig) -> int:
    from vdd_ros.data.bag.importer import import_bags
    from vdd_ros.data.bag.reader import BagError
    from vdd_ros.data.dataset import DatasetError, dataset_sha256, save_dataset
    from vdd_ros.data.dataset_plot import plot_dataset

    try:
        result = import_bags(cfg.bags, narrow(cfg, BagMapping), log=lambda line: print(line, flush=True))
        save_dataset(result.imported.dataset, cfg.output)
    except (BagError, DatasetError) as exc:
        raise ToolError(str(exc)) from None
    figure = pathlib.Path(cfg.output).with_suffix(".png")
    plot_dataset(result.imported.dataset, figure, title=pathlib.Path(cfg.output).name)
    print("\n".join(result.report()))
    print(f"wrote {cfg.output} (sha256 {dataset_sha256(cfg.output)[:16]}...) and {figure}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("import_bag", __doc__, ImportBagConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
