"""Collect a task's scripted demonstrations (Avoiding by default) into one validated .safetensors file.

Example: collect_demos episodes=1200 output=runs/demos/avoiding.safetensors
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from vdd_ros.cli.common import run_tool
from vdd_ros.pipeline.collect import CollectConfig, collect_demos


def run(cfg: CollectConfig) -> int:
    import numpy as np

    from vdd_ros.data.dataset import dataset_sha256
    from vdd_ros.tasks.metrics import behaviour_entropy, mode_histogram
    from vdd_ros.tasks.registry import get_task

    t0 = time.monotonic()
    ds = collect_demos(cfg, log=lambda line: print(line, flush=True))
    counts = mode_histogram(ds.mode_labels, get_task(cfg.task).num_modes)
    lengths = [len(a) for a in ds.actions]
    print(f"wrote {cfg.output} (sha256 {dataset_sha256(cfg.output)[:16]}...)")
    print(
        f"episodes {len(lengths)}, steps {sum(lengths)}, length min/mean/max {min(lengths)}/{np.mean(lengths):.1f}/"
        f"{max(lengths)}"
    )
    print(f"demo entropy {behaviour_entropy(counts):.4f}; mode histogram {counts.tolist()}")
    print(f"done in {time.monotonic() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("collect_demos", __doc__, CollectConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
