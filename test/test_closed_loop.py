"""The whole loop over DDS: controller + task_sim processes with the shipped policy."""

from __future__ import annotations

import pathlib

from conftest import REPO, RosHarness

from vdd_ros.harness.loop_eval import run_ros_loop
from vdd_ros.nodes.task_sim import RESULT_QOS
from vdd_ros.runtime.onnx_policy import OnnxPolicy
from vdd_ros.tasks.rollout import run_rollouts

SHIPPED = REPO / "policies" / "avoiding_vdd.onnx"


def test_lockstep_loop_reproduces_the_in_process_rollout(tmp_path: pathlib.Path) -> None:
    """Greedy sampling and no tracking noise make both deterministic: DDS must not change a single step."""
    loop = run_ros_loop(str(SHIPPED), "avoiding", episodes=3, sampling_mode="greedy", log_dir=str(tmp_path))
    local = run_rollouts(OnnxPolicy(str(SHIPPED), mode="greedy"), "avoiding", episodes=3)
    assert loop.task == "avoiding" and loop.late_actions == 0
    assert loop.successes == [True] * 3 and local.success_rate == 1.0
    assert loop.modes == local.modes.tolist()
    assert loop.steps == [len(t) - 1 for t in local.trajectories]


def test_lockstep_loop_with_the_shipped_policy_succeeds(tmp_path: pathlib.Path) -> None:
    # In-process the policy succeeds in 465 of 480 rollouts. The controller seeds its noise (seed 0), so
    # these 12 episodes repeat run to run; for a fresh draw <= 8 of 12 would have p < 0.001.
    result = run_ros_loop(str(SHIPPED), episodes=12, log_dir=str(tmp_path), timeout_s=240.0)
    assert result.episodes == 12 and sum(result.successes) == round(12 * result.success_rate)
    assert result.success_rate >= 9 / 12, result
    assert sum(result.mode_counts) == sum(m >= 0 and ok for m, ok in zip(result.modes, result.successes, strict=True))
    assert len({m for m, ok in zip(result.modes, result.successes, strict=True) if ok}) >= 2  # mean mode is multi-modal
    assert result.obs_to_action_p50_ms < 50.0  # loose sanity bound; figures live in bench_loop


def test_default_policy_drives_the_real_time_sim_to_success(start_node, ros: RosHarness) -> None:
    """No policy argument: the controller serves the installed default policy; the sim runs as ``avoiding_sim``."""
    from vdd_ros_msgs.msg import EpisodeResult, PolicyAction

    results: list[EpisodeResult] = []
    actions: list[PolicyAction] = []
    ros.node.create_subscription(EpisodeResult, "/rt/episode_result", results.append, RESULT_QOS)
    ros.node.create_subscription(PolicyAction, "/rt/policy_action", actions.append, 10)
    controller = start_node("controller", ["-r", "__ns:=/rt", "-p", "control_rate_hz:=200.0"])
    sim = start_node("avoiding_sim", ["-r", "__ns:=/rt", "-p", "episodes:=4"])
    ros.spin_until(
        lambda: len(results) >= 4,
        60.0,
        f"four real-time episodes; controller log:\n{controller.log()[-1500:]}\nsim log:\n{sim.log()[-800:]}",
    )
    assert actions and actions[-1].policy_id.startswith("avoiding")
    outcomes = [(r.task, r.success, r.failed, r.mode, r.steps, r.late_actions) for r in results]
    assert all(r.task == "avoiding" for r in results), outcomes
    # ~0.97 per episode in-process, and the seeded controller repeats these episodes unless actions come late
    assert sum(r.success for r in results) >= 3, outcomes
    assert all(0 <= r.mode < 24 for r in results if r.success), outcomes


def test_task_sim_refuses_an_unknown_task(start_node) -> None:
    node = start_node("task_sim", ["-p", "task:=pushin"])
    node.proc.wait(60)
    log = node.log()
    assert node.proc.returncode == 2 and "unknown task 'pushin'; known tasks: avoiding" in log, log
    assert "Traceback" not in log, log


def test_a_chunked_policy_drives_the_pushing_simulator(start_node, ros: RosHarness, tmp_path: pathlib.Path) -> None:
    """Pushing through the registry, a policy of 8-action chunks executed 4 at a time, over DDS."""
    from vdd_ros_msgs.msg import EpisodeResult

    from vdd_ros.export.random_policy import export_random_policy
    from vdd_ros.harness.process import ros_params
    from vdd_ros.tasks.registry import get_task

    pushing = get_task("pushing")
    path = str(tmp_path / "chunked.onnx")
    export_random_policy(path, obs_dim=pushing.obs_dim, act_chunk=8, act_exec=4, control_period_s=0.035)
    results: list[EpisodeResult] = []  # transient-local: delivered even if this reader matches late
    ros.node.create_subscription(EpisodeResult, "/push/episode_result", results.append, RESULT_QOS)
    controller_params = {
        "policy_path": path,
        "observation_names": list(pushing.obs_names),
        "control_rate_hz": 500.0,
        "latency_budget_fraction": 1.0,
        "stale_timeout_s": 1.0,
        "action_min": [-0.015, -0.015],
        "action_max": [0.015, 0.015],
    }
    controller = start_node("controller", ["-r", "__ns:=/push", *ros_params(controller_params)])
    sim_params = {"task": "pushing", "lockstep": True, "episodes": 1}
    sim = start_node("task_sim", ["-r", "__ns:=/push", *ros_params(sim_params)])
    ros.spin_until(
        lambda: len(results) >= 1,
        120.0,
        f"a pushing episode; controller log:\n{controller.log()[-1500:]}\nsim log:\n{sim.log()[-800:]}",
    )
    (result,) = results
    # every step answered in time: the controller published one act_dim command per observation
    assert result.task == "pushing" and result.late_actions == 0
    assert 1 <= result.steps <= pushing.max_steps
