"""Collect scripted Avoiding demonstrations into one validated .safetensors file.

Usage: python -m vdd_ros.cli.collect_demos --episodes 1200 --out runs/demos/avoiding.safetensors
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np

from vdd_ros.util.config import load_config, to_dict
from vdd_ros.data.dataset import DemoDataset, dataset_sha256, load_dataset, save_dataset
from vdd_ros.tasks.avoiding import ACT_NAMES, CONTROL_PERIOD_S, NUM_PATHS, OBS_NAMES, TASK_NAME
from vdd_ros.tasks.expert import ExpertConfig, balanced_paths, generate_demos, skewed_path_distribution
from vdd_ros.tasks.metrics import behaviour_entropy, path_histogram

_CHUNK = 60  # demos per progress line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="collect_demos", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1200, help="number of demonstrations")
    parser.add_argument("--out", default="runs/demos/avoiding.safetensors", help="output .safetensors file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--path-distribution", choices=("uniform", "skewed"), default="uniform")
    parser.add_argument("--config", default=None, help="optional YAML with an 'expert' section (ExpertConfig)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    config = ExpertConfig() if args.config is None else load_config(ExpertConfig, args.config, section="expert")
    probs = np.full(NUM_PATHS, 1.0 / NUM_PATHS) if args.path_distribution == "uniform" else skewed_path_distribution()
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()
    labels = balanced_paths(args.episodes, rng, probs)
    demos = []
    while len(demos) < args.episodes:
        demos += generate_demos(labels[len(demos) : len(demos) + _CHUNK], rng, config)
        print(f"collected {len(demos)}/{args.episodes} demos ({time.monotonic() - t0:.1f} s)", flush=True)

    ds = DemoDataset(
        observations=[d.observations for d in demos],
        actions=[d.actions for d in demos],
        obs_names=OBS_NAMES,
        act_names=ACT_NAMES,
        control_period_s=CONTROL_PERIOD_S,
        mode_labels=labels,
        task=TASK_NAME,
        provenance={
            "generator": "vdd_ros.tasks.expert",
            "seed": args.seed,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "path_distribution_name": args.path_distribution,
            "path_distribution": [float(p) for p in probs],
            "expert_config": to_dict(config),
        },
    )
    save_dataset(ds, args.out)
    load_dataset(args.out)  # prove the file we just wrote passes full validation

    counts = path_histogram(labels)
    lengths = [len(d.actions) for d in demos]
    print(f"wrote {args.out} (sha256 {dataset_sha256(args.out)[:16]}...)")
    print(
        f"episodes {len(demos)}, steps {sum(lengths)}, length min/mean/max {min(lengths)}/{np.mean(lengths):.1f}/"
        f"{max(lengths)}"
    )
    print(f"demo entropy {behaviour_entropy(counts):.4f}; path histogram {counts.tolist()}")
    print(f"done in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
