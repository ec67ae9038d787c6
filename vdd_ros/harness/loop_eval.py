"""Measure a policy through the real ROS loop: controller + task_sim processes over DDS.

The simulator runs in lockstep (it steps as soon as the answering action arrives), so the
policy sees exactly the inputs it would see in-process while every observation and action
crosses Fast DDS between two processes.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
import tempfile
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from vdd_ros_msgs.msg import EpisodeResult, PolicyStatus

from vdd_ros.harness.process import NodeProcess, ros_params
from vdd_ros.nodes.task_sim import RESULT_QOS
from vdd_ros.tasks.base import Task
from vdd_ros.tasks.metrics import behaviour_entropy, mode_histogram
from vdd_ros.tasks.registry import get_task
from vdd_ros.util.progress import OnProgress, RolloutProgress, ignore

_RUNS = itertools.count()


@dataclasses.dataclass
class LoopResult:
    task: str
    episodes: int
    success_rate: float
    entropy: float
    mode_counts: list[int]  # task.num_modes bins over successful episodes
    late_actions: int
    obs_to_action_p50_ms: float  # median over episodes of the per-episode median round trip
    obs_to_action_p99_ms: float  # worst per-episode p99
    inference_p50_ms: float  # from the controller's last status
    inference_p99_ms: float
    wall_s: float
    successes: list[bool]  # per episode, in order
    modes: list[int]  # per episode: the task's mode label, -1 if none
    steps: list[int]  # per episode

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_ros_loop(
    policy_path: str,
    task: Task | str = "avoiding",
    episodes: int = 24,
    control_rate_hz: float = 500.0,
    sampling_mode: str = "mean",
    seed: int = 0,
    timeout_s: float = 600.0,
    log_dir: str | None = None,
    namespace: str = "vdd_eval",
    on_progress: OnProgress = ignore,
) -> LoopResult:
    """Run ``episodes`` episodes of ``task`` through controller + simulator processes.

    ``timeout_s``: the longest wait for the next finished episode (start-up included), so a stalled
    loop fails while a long evaluation may take as long as its episodes need.
    """
    task = get_task(task)
    log_dir = log_dir or tempfile.mkdtemp(prefix="vdd_loop_")
    ns = f"/{namespace}_{os.getpid()}_{next(_RUNS)}"  # unique per call: no stale results from an earlier run
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("vdd_loop_eval", context=context)
    results: list[EpisodeResult] = []
    status: list[PolicyStatus] = []
    node.create_subscription(EpisodeResult, f"{ns}/episode_result", results.append, RESULT_QOS)
    node.create_subscription(PolicyStatus, f"{ns}/vdd_controller/status", status.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    controller_params = {
        "policy_path": os.path.abspath(policy_path),
        "control_rate_hz": control_rate_hz,
        "sampling_mode": sampling_mode,
        "seed": seed,
        "stale_timeout_s": 1.0,
        # 500 Hz here only makes lockstep evaluation fast; vetting's real-time budget is for robots
        "latency_budget_fraction": 1.0,
        "status_rate_hz": 5.0,
    }
    controller = NodeProcess(
        "controller", ["-r", f"__ns:={ns}", *ros_params(controller_params)], pathlib.Path(log_dir, "controller.log")
    )
    sim_params = {"task": task.name, "lockstep": True, "episodes": episodes, "seed": seed}
    sim = NodeProcess(
        "task_sim", ["-r", f"__ns:={ns}", *ros_params(sim_params)], pathlib.Path(log_dir, "task_sim.log")
    )
    started = time.monotonic()
    try:
        reported, last_report = 0, started
        finished, last_finished = 0, started
        while len(results) < episodes:
            executor.spin_once(timeout_sec=0.1)
            for proc in (controller, sim):
                if not proc.alive():
                    raise RuntimeError(f"{proc.log_path.stem} exited early; log:\n{proc.log()[-2000:]}")
            now = time.monotonic()
            if len(results) > finished:
                finished, last_finished = len(results), now
            elif now - last_finished > timeout_s:
                raise TimeoutError(
                    f"ROS loop: {len(results)}/{episodes} episodes, none finished in the last {timeout_s:.0f} s"
                )
            if len(results) > reported and (len(results) >= reported + max(1, episodes // 8) or now - last_report > 10):
                reported, last_report = len(results), now
                on_progress(RolloutProgress(reported, episodes, sum(r.success for r in results)))
        wall = time.monotonic() - started
    finally:
        for proc in (sim, controller):
            proc.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    if any(r.task != task.name for r in results):
        raise RuntimeError(f"the simulator ran {results[0].task!r}, not {task.name!r}")
    success = np.array([r.success for r in results])
    counts = mode_histogram(np.array([r.mode if r.success else -1 for r in results]), task.num_modes)
    measured = [st for st in status if np.isfinite(st.inference_latency_p50_ms)]  # stale windows have none
    last = measured[-1] if measured else None
    return LoopResult(
        task=task.name,
        episodes=len(results),
        success_rate=float(success.mean()),
        entropy=behaviour_entropy(counts),
        mode_counts=[int(c) for c in counts],
        late_actions=int(sum(r.late_actions for r in results)),
        obs_to_action_p50_ms=float(np.median([r.obs_to_action_p50_ms for r in results])),
        obs_to_action_p99_ms=float(max(r.obs_to_action_p99_ms for r in results)),
        inference_p50_ms=float(last.inference_latency_p50_ms) if last else float("nan"),
        inference_p99_ms=float(last.inference_latency_p99_ms) if last else float("nan"),
        wall_s=wall,
        successes=[bool(r.success) for r in results],
        modes=[int(r.mode) for r in results],
        steps=[int(r.steps) for r in results],
    )
