"""The controller against a hostile or careless client, over real DDS with real files.

Each test reproduces one reported failure: crafted contracts, a policy that fails only on
real inputs, a slow load, a policy too slow for the rate, unchecked parameters, a refused
start's second traceback, unknown parameter names, non-atomic parameter sets, huge and
malformed observations, bad stamps, Ctrl-C. (Corrupt distillation checkpoints:
``test_distill_checkpoints.py``; the contract fuzzing: ``test_contract.py``.)
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys

import pytest
from builtin_interfaces.msg import Time
from conftest import RosHarness
from hostile_policies import expert_out_of_range_beyond, slow_policy, with_contract
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from test_controller import OBS, ControllerClient, start_controller
from test_distill_run import inputs  # noqa: F401  (a pytest fixture: tiny teacher and dataset)

from vdd_ros.export.random_policy import export_random_policy
from vdd_ros.harness.process import executable_path, ros_params


@pytest.fixture
def policy_a(tmp_path: pathlib.Path) -> str:
    path = str(tmp_path / "a.onnx")
    export_random_policy(path, policy_id="policy-a")
    return path


def _set(key: str, value: object):
    def edit(contract: dict) -> dict:
        if isinstance(value, tuple):  # (field, index-or-key, item)
            contract[key][value[0]] = value[1]
        else:
            contract[key] = value
        return contract

    return edit


def test_crafted_contracts_are_rejected_and_the_controller_keeps_serving(start_node, ros, policy_a, tmp_path):
    crafted = {
        "obs_names as an integer": with_contract(tmp_path / "c1.onnx", _set("obs_names", 7)),
        "normaliser mean of the wrong length": with_contract(
            tmp_path / "c2.onnx", _set("obs_normalizer", ("mean", [0.0]))
        ),
        "control_period_s as a string": with_contract(tmp_path / "c3.onnx", _set("control_period_s", "fast")),
    }
    node = start_controller(start_node, policy_a, "crafted")
    client = ControllerClient(ros, "crafted")
    client.wait_actions(20, what=f"first actions; log:\n{node.log()}")
    for what, path in crafted.items():
        result = client.set_policy(path)
        assert not result.ok and "contract" in result.reason, (what, result.reason)
        client.wait_actions(10)
        assert client.actions[-1].policy_id == "policy-a", what
    status = client.wait_status()
    assert status.rejected_swaps == 3 and status.policy_id == "policy-a" and node.alive()


def test_a_policy_failing_on_real_inputs_is_contained_until_a_good_swap(start_node, ros, policy_a, tmp_path):
    from vdd_ros_msgs.msg import PolicyAction, PolicyStatus

    hostile = expert_out_of_range_beyond(tmp_path / "h.onnx", threshold=5.0, policy_id="hostile")
    node = start_controller(start_node, policy_a, "contained")
    client = ControllerClient(ros, "contained")
    client.wait_actions(20, what=f"first actions; log:\n{node.log()}")
    assert client.set_policy(hostile).ok  # every vetting probe lies within mean +/- 3 std
    client.wait_last(lambda a: a.policy_id == "hostile" and a.source == PolicyAction.SOURCE_POLICY, "hostile actions")
    client.next_obs = [10.0] * 4  # a real input beyond the probes: expert index 100
    client.wait_last(lambda a: a.source == PolicyAction.SOURCE_ZERO, "the safe action")
    status = client.wait_status(until=lambda s: s.state == PolicyStatus.STATE_ERROR, what="an error status")
    assert status.state == PolicyStatus.STATE_ERROR and "expert index 100" in status.message, status.message
    assert status.tick_errors >= 1
    client.next_obs = OBS  # latched: a policy that failed once does not drive again by itself
    client.wait_actions(100)
    assert {a.source for a in client.actions[-30:]} == {PolicyAction.SOURCE_ZERO}
    assert client.set_policy(policy_a).ok  # a good swap recovers
    client.wait_last(lambda a: a.source == PolicyAction.SOURCE_POLICY and a.policy_id == "policy-a", "recovery")
    seqs = [a.sequence for a in client.actions]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the loop never stopped publishing
    running = client.wait_status(until=lambda s: s.state == PolicyStatus.STATE_RUNNING, what="a running status")
    assert running.policy_id == "policy-a" and node.alive()


def test_a_slow_load_does_not_starve_observations(start_node, ros, policy_a, tmp_path):
    """300 MB to read, hash and parse: observations keep flowing while the parameter call waits."""
    big = str(tmp_path / "big.onnx")
    export_random_policy(big, policy_id="big", ballast_mb=300)
    node = start_controller(start_node, policy_a, "slowload", "-p", "stale_timeout_s:=1.0")
    client = ControllerClient(ros, "slowload")
    client.wait_actions(50, what=f"first actions; log:\n{node.log()}")
    before = client.wait_status()
    start = len(client.actions)
    assert client.set_policy(big).ok
    during = client.actions[start:]
    after = client.wait_status()
    assert after.stale_observations == before.stale_observations  # a blocked executor gave >1 s stale
    answered = {(a.observation_stamp.sec, a.observation_stamp.nanosec) for a in during}
    seconds = (during[-1].header.stamp.sec - during[0].header.stamp.sec) + 1
    assert len(answered) >= 10 * seconds, (len(answered), seconds)  # fed at 200 Hz; blocked: one stamp
    assert "loaded and vetted" in node.log()


def test_a_policy_too_slow_for_the_rate_is_rejected_with_the_figure(start_node, ros, policy_a, tmp_path):
    slow = slow_policy(tmp_path / "slow.onnx", width=400)  # ~5 ms per inference against 2 ms at 500 Hz
    node = start_controller(start_node, policy_a, "tooslow")
    client = ControllerClient(ros, "tooslow")
    client.wait_actions(20, what=f"first actions; log:\n{node.log()}")
    result = client.set_policy(slow)
    assert not result.ok
    assert "exceeds the budget of 2.000 ms" in result.reason and "inference p99" in result.reason, result.reason


def test_atomic_sets_leave_nothing_staged(start_node, ros, policy_a, tmp_path):
    b = str(tmp_path / "b.onnx")
    export_random_policy(b, policy_id="policy-b", seed=1)
    node = start_controller(start_node, policy_a, "atomic")
    client = ControllerClient(ros, "atomic")
    client.wait_actions(20, what=f"first actions; log:\n{node.log()}")
    refused = client.set_params(Parameter("policy_path", value=b), Parameter("seed", value=7))
    assert not refused.ok and "read-only" in refused.reason
    refused = client.set_params(Parameter("policy_path", value=b), Parameter("sampling_mode", value="bogus"))
    assert not refused.ok and "sampling_mode" in refused.reason
    assert client.set_params(Parameter("sampling_mode", value="greedy")).ok
    client.wait_actions(50)
    assert {a.policy_id for a in client.actions[-30:]} == {"policy-a"}
    future = client.params.describe_parameters(["stale_timeout_s", "seed", "policy_path"])
    ros.spin_until(future.done, 10.0, "describe_parameters")
    stale, seed, path = future.result().descriptors  # what `ros2 param describe` shows
    assert stale.read_only and stale.floating_point_range[0].from_value == 0.001
    assert seed.read_only and seed.integer_range[0].to_value == 2**31 - 1
    assert not path.read_only
    status = client.wait_status()
    assert status.policy_path == policy_a and status.sampling_mode == "greedy"
    assert status.policy_swaps == 0 and status.rejected_swaps == 0  # only policy_path vetting counts


def _joint_state(names: list[str], positions: list[float], stamp: Time) -> JointState:
    msg = JointState(name=names, position=positions)
    msg.header.stamp = stamp
    return msg


def test_huge_malformed_and_badly_stamped_observations(start_node, ros: RosHarness, policy_a):
    from vdd_ros_msgs.msg import PolicyAction

    ns = "observations"
    node = start_controller(
        start_node,
        policy_a,
        ns,
        "-p",
        "observation_type:=joint_state",
        "-p",
        "stale_timeout_s:=5.0",
        "-p",
        "observation_reliability:=reliable",  # a best-effort 3.5 MB sample may never arrive at all
    )
    client = ControllerClient(ros, ns, joint_state=True)
    names = [f"obs_{i}" for i in range(4)]
    clock = ros.node.get_clock()
    client.wait_actions(50, what=f"first actions; log:\n{node.log()}")
    client.feeding = False  # one message at a time, each counted before the next
    base = client.wait_status()

    def send(msg: JointState, counter: str) -> None:
        before = getattr(client.status[-1], counter)
        client.obs_pub.publish(msg)  # the feeding publisher: already matched (a new one may not be yet)
        ros.spin_until(lambda: getattr(client.status[-1], counter) > before, 20.0, f"{counter} to count it")

    def now() -> Time:
        return clock.now().to_msg()

    huge = [f"joint_{i}" for i in range(200_000)]
    send(_joint_state(huge, [0.0] * len(huge), now()), "oversized_observations")  # ~3.5 MB: never decoded
    send(_joint_state(names, [0.1] * 7, now()), "invalid_observations")  # 4 names, 7 positions
    send(_joint_state(["obs_0", "obs_1", "obs_2", "elbow"], [0.1] * 4, now()), "invalid_observations")
    send(_joint_state(names, list(OBS), Time(sec=now().sec + 30, nanosec=0)), "future_stamps")
    last = now()
    client.obs_pub.publish(_joint_state(names, list(OBS), last))  # accepted
    send(_joint_state(names, list(OBS), last), "duplicate_stamps")
    send(_joint_state(names, list(OBS), Time(sec=last.sec - 5, nanosec=0)), "old_stamps")
    client.feeding = True
    client.wait_last(lambda a: a.source == PolicyAction.SOURCE_POLICY, "policy actions")
    status = client.wait_status()
    counted = {
        k: getattr(status, k) - getattr(base, k)
        for k in ("oversized_observations", "invalid_observations", "future_stamps", "duplicate_stamps", "old_stamps")
    }
    assert counted == {
        "oversized_observations": 1,
        "invalid_observations": 2,
        "future_stamps": 1,
        "duplicate_stamps": 1,
        "old_stamps": 1,
    }
    assert status.stale_observations == base.stale_observations and node.alive()
    assert node.stop() == 0 and "Traceback" not in node.log()  # Ctrl-C: a clean end


REFUSED_STARTS = {
    "NaN clamp": (["-p", "action_min:=[.nan, .nan]", "-p", "action_max:=[1.0, 1.0]"], "action_min"),
    "NaN stale timeout": (["-p", "stale_timeout_s:=.nan"], "stale_timeout_s"),
    "negative stale timeout": (["-p", "stale_timeout_s:=-1.0"], "stale_timeout_s"),
    "zero status rate": (["-p", "status_rate_hz:=0.0"], "status_rate_hz"),
    "absurd control rate": (["-p", "control_rate_hz:=1e12"], "control_rate_hz"),
    "min above max": (["-p", "action_min:=[0.1, 0.1]", "-p", "action_max:=[-0.1, 0.1]"], "action_max"),
    "zero outside the clamp": (["-p", "action_min:=[0.1, 0.1]", "-p", "action_max:=[0.2, 0.2]"], "zero"),
    "typo in a name": (["-p", "control_rate_hzz:=50.0"], "did you mean 'control_rate_hz'"),
    "missing policy": (["-p", "policy_path:=/nonexistent/p.onnx"], "does not exist"),
}


@pytest.mark.parametrize("case", list(REFUSED_STARTS))
def test_refused_start_says_why_in_one_line(start_node, tmp_path, case):
    args, needle = REFUSED_STARTS[case]
    policy = str(tmp_path / "a.onnx")
    export_random_policy(policy)
    node = start_node("controller", ["-p", f"policy_path:={policy}", "-p", "observation_type:=array", *args])
    node.proc.wait(60)
    log = node.log()
    assert node.proc.returncode == 2, log
    refusals = [line for line in log.splitlines() if "refused to start" in line]
    assert len(refusals) == 1 and needle in refusals[0], log
    assert "Traceback" not in log, log


def test_malformed_params_file_is_refused_in_one_line(start_node, tmp_path):
    params = tmp_path / "broken.yaml"
    params.write_text("/**:\n  ros__parameters:\n    control_rate_hz: [unclosed\n")
    node = start_node("controller", ["--params-file", str(params)])
    node.proc.wait(60)
    log = node.log()
    assert node.proc.returncode == 2 and "refused to start: bad ROS arguments" in log and "Traceback" not in log, log


def test_a_one_dimensional_clamp_at_zero_is_a_real_bound(start_node, ros, tmp_path):
    """[0.0] also stands for "no clamp" in the declaration; set explicitly it must clamp."""
    policy = str(tmp_path / "one_d.onnx")
    export_random_policy(policy, policy_id="one-d", act_dim=1, act_scale=0.05)
    node = start_controller(
        start_node,
        policy,
        "oned",
        "-p",
        "action_min:=[0.0]",
        "-p",
        "action_max:=[0.001]",
        "-p",
        "sampling_mode:=sample",
    )
    client = ControllerClient(ros, "oned")
    client.wait_actions(200, what=f"actions; log:\n{node.log()}")
    values = [a.action[0] for a in client.actions]
    assert min(values) >= 0.0 and max(values) <= 0.001 + 1e-9, (min(values), max(values))


def test_distill_refuses_a_misspelt_parameter(start_node):
    node = start_node("distill", ["-p", "train.iteratons:=5"])
    node.proc.wait(120)
    log = node.log()
    assert node.proc.returncode == 2 and "did you mean 'train.iterations'" in log and "Traceback" not in log, log


def test_params_file_typo_is_refused(start_node, tmp_path):
    params = tmp_path / "controller.yaml"
    params.write_text("/**:\n  ros__parameters:\n    control_rate_hzz: 50.0\n")
    node = start_node("controller", ["--params-file", str(params)])
    node.proc.wait(60)
    assert node.proc.returncode == 2 and "unknown parameter 'control_rate_hzz'" in node.log(), node.log()


@pytest.mark.parametrize("executable", ["controller", "avoiding_sim", "distill"])
def test_every_node_answers_help(executable: str):
    out = subprocess.run(
        [sys.executable, str(executable_path(executable)), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "usage: ros2 run vdd_ros" in out.stdout and "parameters:" in out.stdout


def _tiny_job(root: pathlib.Path, tmp_path: pathlib.Path, **settings: object) -> dict[str, object]:
    """distill parameters of a seconds-long job on the tiny teacher and dataset, plus ``settings``."""
    return {
        "teacher": root / "teacher",
        "dataset": root / "demos.safetensors",
        "output": tmp_path / "out",
        "moe.hidden": 16,
        "moe.trunk_blocks": 1,
        "train.batch_size": 8,
        "torch_threads": 1,
        "device": "cpu",
        **settings,
    }


def test_ctrl_c_stops_distill_after_its_last_progress(start_node, ros: RosHarness, inputs, tmp_path):  # noqa: F811
    """SIGINT mid-training: checkpoint saved, "stopped" published while the context is up, no traceback."""
    from vdd_ros_msgs.msg import DistillProgress

    progress: list[DistillProgress] = []
    ros.node.create_subscription(DistillProgress, "/vdd_distill/progress", progress.append, 100)
    settings = _tiny_job(inputs, tmp_path, **{"train.iterations": 1_000_000, "eval.every": 1_000_000})
    node = start_node("distill", ros_params({**settings, "checkpoint_every": 1_000_000}))
    ros.spin_until(lambda: any(p.phase == "training" for p in progress), 120.0, f"training; log:\n{node.log()}")
    node.proc.send_signal(signal.SIGINT)
    ros.spin_until(lambda: node.proc.poll() is not None, 120.0, f"distill to exit; log:\n{node.log()[-3000:]}")
    ros.spin_until(lambda: progress[-1].phase == "stopped", 10.0, f"the 'stopped' message; log:\n{node.log()}")
    assert node.proc.returncode == 130 and "Traceback" not in node.log(), node.log()
    assert (tmp_path / "out" / "checkpoint" / "state.json").is_file()  # run again to resume


def test_distill_deploys_its_policy_to_a_running_controller(start_node, ros: RosHarness, inputs, tmp_path):  # noqa: F811
    """deploy_to: the finished policy goes through the controller's vetting (the one set_policy_path client)."""
    shipped = str(pathlib.Path(__file__).resolve().parents[1] / "policies" / "avoiding_vdd.onnx")
    client = ControllerClient(ros, "deploy")
    start_controller(start_node, shipped, "deploy")
    client.wait_actions(5)
    job = {"train.iterations": 20, "eval.every": 0, "eval.final_episodes": 0}
    settings = _tiny_job(inputs, tmp_path, **job, policy_id="deployed", deploy_to="/deploy/vdd_controller")
    node = start_node("distill", ros_params(settings))
    ros.spin_until(lambda: node.proc.poll() is not None, 180.0, f"distill to finish; log:\n{node.log()}")
    assert node.proc.returncode == 0, node.log()
    client.wait_last(lambda a: a.policy_id == "deployed", "actions of the deployed policy")
    assert client.wait_status().policy_path == str(tmp_path / "out" / "policy.onnx")

