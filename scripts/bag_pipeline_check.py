"""The "your robot" path end to end, from rosbag2 recordings: record -> import_bag -> teacher -> distil -> evaluate.

Record: K controller + task_sim pairs run in real time (35 ms steps), each in its own
ROS_DOMAIN_ID with loopback discovery, each with a ``bag_record`` process writing an MCAP bag
of /observation, /command, /episode_start and /episode_result, until M episodes in total. The
demonstrator is a policy (the shipped student, sampling mode mean), not a person. The
simulator's verdicts are in the bags; ``--keep success`` (default) trains only on the episodes
that reached the goal, as one keeps a robot's good demonstrations. Then the shipped tools, each
as a person would run it; every stage's output and log go under ``--out``, and a stage whose
output exists is skipped (rerun after a failure without recording again).

usage: scripts/bag_pipeline_check.py [--out runs/bag_pipeline] [--pairs 8] [--episodes 1200] ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vdd_ros.harness.process import NodeProcess, ros_params  # noqa: E402

TOPICS = [
    "/observation:sensor_msgs/msg/JointState",
    "/command:std_msgs/msg/Float64MultiArray",
    "/episode_start:std_msgs/msg/Header",
    "/episode_result:vdd_ros_msgs/msg/EpisodeResult",
]
# answer every observation once; a tick of its own only after 1.5 s without one, so a simulator
# stalled by the busy machine gets no command that no step used
CONTROLLER = {
    "sync_to_observations": True,
    "control_rate_hz": 1.0,
    "stale_timeout_s": 2.0,
    "latency_budget_fraction": 1.0,
    "sampling_mode": "mean",
}
MAX_ACTION = 0.03  # Avoiding's per-step clip of the desired-position delta


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


@contextlib.contextmanager
def domain(domain_id: int):
    """Children started inside see this ROS_DOMAIN_ID (and loopback-only discovery)."""
    saved = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["ROS_DOMAIN_ID"]
        else:
            os.environ["ROS_DOMAIN_ID"] = saved


def wait_for(path: pathlib.Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {path}:\n{path.read_text()[-2000:]}")
        time.sleep(0.1)


def record(args: argparse.Namespace, out: pathlib.Path) -> dict:
    """K pairs with one recorder each; returns what was recorded."""
    bags_dir = out / "bags"
    bags_dir.mkdir(parents=True, exist_ok=True)
    per_pair = [args.episodes // args.pairs + (i < args.episodes % args.pairs) for i in range(args.pairs)]
    recorders, nodes = [], []
    policy = str((REPO / args.policy).resolve())
    started = time.monotonic()
    try:
        for i, n in enumerate(per_pair):
            with domain(args.domain_base + i):
                rec_log = bags_dir / f"pair{i}_record.log"
                cmd = [sys.executable, "-m", "vdd_ros.harness.bag_record", "-o", str(bags_dir / f"pair{i}")]
                cmd += [*TOPICS, "--stop-topic", "/episode_result", "--stop-count", str(n)]
                with open(rec_log, "w") as f:
                    recorders.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), rec_log))
                wait_for(rec_log, "recording /episode_result", recorders[-1][0], 120)
                sim = {"task": "avoiding", "lockstep": False, "episodes": n, "seed": i}
                nodes.append(NodeProcess("task_sim", ros_params(sim), bags_dir / f"pair{i}_task_sim.log"))
                for topic in ("/observation", "/episode_start", "/episode_result"):
                    wait_for(rec_log, f"matched {topic}", recorders[-1][0], 120)
                ctl = {**CONTROLLER, "policy_path": policy, "seed": i}
                nodes.append(NodeProcess("controller", ros_params(ctl), bags_dir / f"pair{i}_controller.log"))
            log(f"pair {i}: domain {args.domain_base + i}, {n} episodes")
        last = 0.0
        while any(p.poll() is None for p, _ in recorders):
            time.sleep(2.0)
            for node in nodes:
                if not node.alive():
                    raise RuntimeError(f"{node.log_path.name} exited early:\n{node.log()[-2000:]}")
            if time.monotonic() - last > 60:
                last = time.monotonic()
                done = sum(n.log().count("]: episode ") for n in nodes if "task_sim" in n.log_path.name)
                log(f"recorded {done}/{args.episodes} episodes in {time.monotonic() - started:.0f} s")
        failed = [str(log_path) for p, log_path in recorders if p.returncode != 0]
        if failed:
            raise RuntimeError(f"recorder(s) failed: {failed}")
    finally:
        for node in nodes:
            node.stop()
        for p, _ in recorders:
            if p.poll() is None:
                p.kill()
    late = [int(x.split("late actions ")[1]) for n in nodes for x in n.log().splitlines() if "late actions" in x]
    return {
        "pairs": args.pairs,
        "episodes": args.episodes,
        "wall_s": round(time.monotonic() - started, 1),
        "late_actions_total": int(sum(late)),
        "episodes_with_late_actions": int(sum(x > 0 for x in late)),
        "recorders": [rec_log.read_text().strip().splitlines()[-1] for _, rec_log in recorders],
    }


def episode_results(bag: pathlib.Path) -> list:
    """The simulator's verdicts, read back from the bag (EpisodeResult's definition is stored in it)."""
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == "/episode_result"]
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]


def aligned_fraction(ds) -> float:
    """Avoiding: rows where the next desired position is this one plus the clipped command (pairing check)."""
    ok = [
        np.abs(np.diff(o[:, :2], axis=0) - np.clip(a[:-1], -MAX_ACTION, MAX_ACTION)).max(axis=1) < 1e-5
        for o, a in zip(ds.observations, ds.actions, strict=True)
    ]
    return float(np.concatenate(ok).mean())


def select(bags: list[pathlib.Path], imported: pathlib.Path, output: pathlib.Path, keep: str) -> dict:
    """Keep every episode, or those the simulator reported successful (matched per bag, in order)."""
    from vdd_ros.data.dataset import DemoDataset, load_dataset, save_dataset

    ds = load_dataset(imported)
    origin = ds.provenance["episodes_from"]
    keep_mask, stats = [], {"bags_matched": 0, "bags_unmatched": []}
    successes = failures = 0
    for bag in bags:
        rows = [k for k, where in enumerate(origin) if where.startswith(f"{bag} ")]
        results = episode_results(bag)
        successes += sum(r.success for r in results)
        failures += sum(not r.success for r in results)
        if len(rows) == len(results):
            stats["bags_matched"] += 1
            steps = np.array([len(ds.actions[k]) for k in rows]) - np.array([r.steps for r in results])
            stats.setdefault("length_minus_steps", []).extend(steps.tolist())
            keep_mask += [(k, keep == "all" or r.success) for k, r in zip(rows, results, strict=True)]
        else:  # cannot tell which episode is which: keep them all, and say so
            stats["bags_unmatched"].append(f"{bag}: {len(rows)} imported, {len(results)} results")
            keep_mask += [(k, True) for k in rows]
    chosen = sorted(k for k, kept in keep_mask if kept)
    diffs = np.array(stats.pop("length_minus_steps", [0]))
    subset = DemoDataset(
        observations=[ds.observations[k] for k in chosen],
        actions=[ds.actions[k] for k in chosen],
        obs_names=ds.obs_names,
        act_names=ds.act_names,
        control_period_s=ds.control_period_s,
        mode_labels=ds.mode_labels[chosen],
        task=ds.task,
        provenance={
            **ds.provenance,
            "selected": f"keep={keep} by /episode_result",
            "episodes_from": [origin[k] for k in chosen],
        },
    )
    save_dataset(subset, output)
    return {
        "recorded_successes": int(successes),
        "recorded_failures": int(failures),
        "imported_episodes": ds.num_episodes,
        "imported_rows": int(sum(len(a) for a in ds.actions)),
        "kept_episodes": subset.num_episodes,
        "kept_rows": int(sum(len(a) for a in subset.actions)),
        "rows_aligned_fraction": round(aligned_fraction(ds), 4),
        "length_minus_steps_exact": float(np.mean(diffs == 0)),
        "length_minus_steps_max_abs": int(np.abs(diffs).max()),
        **stats,
    }


def tool(name: str, argv: list[str], log_path: pathlib.Path) -> None:
    """Run one shipped tool, its output shown and kept."""
    cmd = [sys.executable, "-m", f"vdd_ros.cli.{name}", *argv]
    log(f"$ {name} {' '.join(argv)}")
    with open(log_path, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            f.write(line)
            f.flush()
            if not line.startswith(("  step", "step ")):
                print(f"    {line}", end="", flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); log: {log_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bag_pipeline")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=1200)
    parser.add_argument("--domain-base", type=int, default=161, help="pair i uses ROS_DOMAIN_ID base + i")
    parser.add_argument("--policy", default="policies/avoiding_vdd.onnx", help="the demonstrator")
    parser.add_argument("--keep", choices=["success", "all"], default="success")
    parser.add_argument(
        "--import-args", default="", help="extra key=value for import_bag (e.g. align.max_staleness_s=0.5)"
    )
    parser.add_argument("--teacher-args", default="", help="extra key=value for train_teacher (e.g. iterations=4000)")
    parser.add_argument("--distill-args", default="", help="extra key=value for distill_offline")
    parser.add_argument("--ros-episodes", type=int, default=24)
    args = parser.parse_args()
    if not 1 <= args.pairs <= 64 or args.domain_base <= 101 or args.domain_base + args.pairs - 1 > 232:
        parser.error("domains must lie in 102..232 (the tests use 1..101)")
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}

    def stage(name: str, done: pathlib.Path, run) -> None:
        if done.exists():
            log(f"{name}: {done} exists, skipped")
            return
        t0 = time.monotonic()
        result = run()
        times[name] = round(time.monotonic() - t0, 1)
        if result is not None:
            summary[name] = result
        summary["wall_s"] = {**summary.get("wall_s", {}), **times}
        summary["load_average"] = {**summary.get("load_average", {}), name: os.getloadavg()}
        summary_path.write_text(json.dumps(summary, indent=2))
        log(f"{name}: {times[name]:.0f} s")

    bags = [out / "bags" / f"pair{i}" for i in range(args.pairs)]
    demos_all, demos = out / "demos_all.safetensors", out / "demos.safetensors"
    teacher, student = out / "teacher", out / "student"
    stage("record", bags[-1], lambda: record(args, out))
    stage(
        "import",
        demos_all,
        lambda: tool(
            "import_bag",
            [
                "config/import_bag_avoiding.yaml",
                f"bags=[{','.join(map(str, bags))}]",
                f"output={demos_all}",
                "episodes.drop_short=true",
                *args.import_args.split(),
            ],
            out / "import_bag.log",
        ),
    )
    stage("select", demos, lambda: select(bags, demos_all, demos, args.keep))
    stage(
        "teacher",
        teacher / "teacher.json",
        lambda: tool(
            "train_teacher",
            ["config/teacher_avoiding.yaml", f"dataset={demos}", f"output={teacher}", *args.teacher_args.split()],
            out / "train_teacher.log",
        ),
    )
    stage(
        "distill",
        student / "policy.onnx",
        lambda: tool(
            "distill_offline",
            [
                "config/distill_avoiding.yaml",
                f"teacher={teacher}",
                f"dataset={demos}",
                f"output={student}",
                *args.distill_args.split(),
            ],
            out / "distill_offline.log",
        ),
    )
    evals = out / "eval"
    for name, argv in (
        ("eval_student_ros", [f"policy={student / 'policy.onnx'}", "ros=true", f"episodes={args.ros_episodes}"]),
        ("eval_student", [f"policy={student / 'policy.onnx'}", "episodes=480"]),
        ("eval_teacher", [f"teacher={teacher}", "episodes=480"]),
    ):
        folder = evals / name
        stage(
            name,
            folder,
            lambda argv=argv, folder=folder, name=name: tool(
                "evaluate", [*argv, f"output={folder}"], out / f"{name}.log"
            ),
        )
    for name in ("eval_student_ros", "eval_student", "eval_teacher"):
        reports = list((evals / name).glob("*.json"))
        if reports:
            report = json.loads(reports[0].read_text())
            summary[name] = {k: report[k] for k in ("episodes", "success_rate", "entropy") if k in report}
    summary_path.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
