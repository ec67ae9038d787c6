"""Evaluate a policy on the Avoiding task: success rate, behaviour entropy, trajectory plot.

  evaluate --policy runs/distill/policy.onnx [--mode mean|sample|greedy]
  evaluate --teacher runs/teacher_ddpm [--steps 8] [--sampler ddim]
  evaluate --policy P.onnx --ros --episodes 48      # through controller + avoiding_sim over DDS

In-process evaluation runs vectorised rollouts (default 480, seed 0); ``--ros`` measures
the same policy through the real ROS loop and adds loop latency.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from vdd_ros.tasks.policy import Policy


def _policy(args: argparse.Namespace) -> Policy:
    if args.policy:
        from vdd_ros.runtime.onnx_policy import OnnxPolicy

        return OnnxPolicy(args.policy, mode=args.mode, seed=args.seed)
    from vdd_ros.teacher.policy import TeacherPolicy

    return TeacherPolicy.from_checkpoint(args.teacher, steps=args.steps, sampler=args.sampler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy", help="exported ONNX policy")
    src.add_argument("--teacher", help="teacher checkpoint directory")
    ap.add_argument("--steps", type=int, default=None, help="teacher denoising steps (default: its own)")
    ap.add_argument("--sampler", default=None, help="teacher sampler (default: its own)")
    ap.add_argument("--mode", default="mean", choices=("mean", "sample", "greedy"), help="MoE sampling mode")
    ap.add_argument("--episodes", type=int, default=480)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ros", action="store_true", help="run through controller + avoiding_sim over DDS")
    ap.add_argument("--rate", type=float, default=500.0, help="controller rate for --ros [Hz]")
    ap.add_argument("--out", default=None, help="JSON output (default: next to the policy)")
    ap.add_argument("--plot", default=None, help="trajectory PNG (default: next to the JSON)")
    args = ap.parse_args(argv)

    source = pathlib.Path(args.policy or args.teacher)
    default_dir = source.parent if args.policy else source
    tag = "ros_loop" if args.ros else f"eval_{args.mode if args.policy else 'teacher'}"
    out = pathlib.Path(args.out or default_dir / f"{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.ros:
        if not args.policy:
            ap.error("--ros serves an ONNX policy: give --policy")
        from vdd_ros.harness.loop_eval import run_ros_loop

        loop = run_ros_loop(
            args.policy, episodes=args.episodes, control_rate_hz=args.rate, sampling_mode=args.mode, seed=args.seed
        )
        report = {"policy": str(source), "ros_loop": True, **loop.to_json_dict()}
    else:
        from vdd_ros.tasks.rollout import plot_trajectories, run_rollouts

        policy = _policy(args)
        result = run_rollouts(policy, episodes=args.episodes, seed=args.seed, progress=True)
        plot = pathlib.Path(args.plot or out.with_suffix(".png"))
        plot_trajectories(
            result, plot, title=f"{policy.name}: success {result.success_rate:.2f}, entropy {result.entropy:.2f}"
        )
        report = {"policy": policy.name, "source": str(source), **result.to_json_dict(), "plot": str(plot)}
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "mode_counts"}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
