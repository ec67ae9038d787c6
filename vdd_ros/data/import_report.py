"""What every importer (LeRobot, rosbag2) shares: per-episode arrays -> DemoDataset, and its short report.

Imported demonstrations have no behaviour labels (-1) and record where they came from, so a
trained policy can be traced back to the recording; the report is the few lines a person
checks before spending hours training on the file.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

import numpy as np

from vdd_ros.data.dataset import DemoDataset


@dataclasses.dataclass(frozen=True)
class Imported:
    """An imported dataset, one line per thing left out (feature, topic) and why, and other remarks."""

    dataset: DemoDataset
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def imported_dataset(
    observations: Sequence[np.ndarray],
    actions: Sequence[np.ndarray],
    obs_names: Sequence[str],
    act_names: Sequence[str],
    control_period_s: float,
    task: str,
    generator: str,
    source: str,
    **provenance: Any,
) -> DemoDataset:
    """A DemoDataset of unlabelled episodes whose provenance names the importer, the source and the time."""
    return DemoDataset(
        observations=[np.asarray(o, dtype=np.float32) for o in observations],
        actions=[np.asarray(a, dtype=np.float32) for a in actions],
        obs_names=tuple(obs_names),
        act_names=tuple(act_names),
        control_period_s=float(control_period_s),
        mode_labels=np.full(len(observations), -1, dtype=np.int64),
        task=task,
        provenance={
            "generator": generator,
            "source": source,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **provenance,
        },
    )


def report_lines(imported: Imported) -> list[str]:
    """Episodes, frames, rate, widths with names, what was skipped and any notes: one short line each."""
    ds = imported.dataset
    lengths = [len(a) for a in ds.actions]
    period = ds.control_period_s
    lines = [
        f"episodes {len(lengths)}, frames {sum(lengths)}, length min/mean/max "
        f"{min(lengths)}/{np.mean(lengths):.1f}/{max(lengths)}",
        f"rate {1.0 / period:.4g} Hz (control_period_s {period:.6g})",
        f"observations {len(ds.obs_names)}: {', '.join(ds.obs_names)}",
        f"actions {len(ds.act_names)}: {', '.join(ds.act_names)}",
    ]
    return lines + [f"skipped {line}" for line in imported.skipped] + [f"note: {line}" for line in imported.notes]
