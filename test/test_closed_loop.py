"""The whole loop over DDS: controller + avoiding_sim processes with the shipped policy."""

from __future__ import annotations

import pathlib

from conftest import REPO, RosHarness

from vdd_ros.nodes.avoiding_sim import RESULT_QOS
from vdd_ros.harness.loop_eval import run_ros_loop

SHIPPED = REPO / "policies" / "avoiding_vdd.onnx"


def test_lockstep_loop_with_the_shipped_policy_succeeds(tmp_path: pathlib.Path) -> None:
    # The policy succeeds ~0.87 of the time; >= 6 of 12 fails by chance with p < 0.001.
    result = run_ros_loop(str(SHIPPED), episodes=12, log_dir=str(tmp_path), timeout_s=240.0)
    assert result.episodes == 12
    assert result.success_rate >= 6 / 12, result
    assert result.obs_to_action_p50_ms < 50.0  # loose sanity bound; figures live in bench_loop


def test_default_policy_drives_the_real_time_sim_to_success(start_node, ros: RosHarness) -> None:
    """No policy argument: the controller serves the installed default policy (real-time sim)."""
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
    assert sum(r.success for r in results) >= 1, [(r.success, r.steps, r.late_actions) for r in results]
