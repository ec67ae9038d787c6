"""The built package: ament index, installed files, messages over real Fast DDS."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from conftest import REPO, RosHarness


def test_installed_package_is_found_through_the_ament_index() -> None:
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    share = pathlib.Path(get_package_share_directory("vdd_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "controller.launch.py").is_file()
    for cfg in (REPO / "config").glob("*.yaml"):
        assert (share / "config" / cfg.name).is_file(), cfg.name
    assert pathlib.Path(get_package_share_directory("vdd_ros_msgs"), "msg", "PolicyAction.msg").is_file()
    lib = pathlib.Path(get_package_prefix("vdd_ros"), "lib", "vdd_ros")
    for exe in ("controller", "avoiding_sim", "distill"):
        assert os.access(lib / exe, os.X_OK), exe


def test_policy_action_two_processes_every_field(ros: RosHarness, tmp_path: pathlib.Path) -> None:
    from vdd_ros_msgs.msg import PolicyAction

    got: list[PolicyAction] = []
    ros.node.create_subscription(PolicyAction, "peer_actions", got.append, 10)
    log = open(tmp_path / "peer.log", "w")  # noqa: SIM115
    peer = subprocess.Popen([sys.executable, str(REPO / "test" / "ros_peer_publisher.py")], stdout=log, stderr=log)
    try:
        ros.spin_until(lambda: len(got) >= 3, 20.0, "PolicyAction from the peer process")
    finally:
        peer.terminate()
        peer.wait(10)
        log.close()
    msg = got[-1]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, "world")
    assert (msg.observation_stamp.sec, msg.observation_stamp.nanosec) == (11, 999)
    assert list(msg.action) == [0.25, -0.5]
    assert list(msg.action_names) == ["delta_x", "delta_y"]
    assert msg.expert_index == 3
    assert msg.expert_probability == 0.125
    assert msg.policy_id == "peer-policy"
    assert msg.policy_sha256_short == "0123456789ab"
    assert msg.source == PolicyAction.SOURCE_HOLD
    assert [m.sequence for m in got] == list(range(got[0].sequence, got[0].sequence + len(got)))


def test_policy_status_fields_exist() -> None:
    from vdd_ros_msgs.msg import PolicyStatus

    fields = PolicyStatus.get_fields_and_field_types()
    for name in (
        "policy_id",
        "policy_sha256",
        "execution_provider",
        "provider_fallback",
        "sampling_mode",
        "control_rate_target_hz",
        "control_rate_achieved_hz",
        "inference_latency_p50_ms",
        "inference_latency_p99_ms",
        "inference_latency_max_ms",
        "tick_overruns",
        "stale_observations",
        "invalid_observations",
        "tick_errors",
        "oversized_observations",
        "future_stamps",
        "old_stamps",
        "duplicate_stamps",
        "state",
        "message",
    ):
        assert name in fields, name
    # the serving core's states are the message's constants
    from vdd_ros.runtime.serving import State

    constants = {k[len("STATE_"):]: v for k, v in vars(PolicyStatus).items() if k.startswith("STATE_")}
    assert constants == {s.name: s.value for s in State}
