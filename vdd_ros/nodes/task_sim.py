"""Any registered task as a ROS node: observations out, PolicyAction in, episodes reported.

The ``task`` parameter picks the task from ``vdd_ros.tasks.registry`` (default avoiding; the
``avoiding_sim`` executable is this node under its historical name).

Two pacing modes:
  lockstep=false  a timer steps the task every step_period_s (real time); the newest action
                  answering the latest observation is applied, otherwise zero (counted late).
  lockstep=true   the task steps as soon as the action answering the latest observation
                  arrives (as fast as the loop allows); after action_timeout_s it steps with
                  zero (counted late).
Until the first answering action arrives the observation is re-sent: no episode is
wasted while the controller starts.
Lockstep makes closed-loop evaluation over DDS deterministic in its inputs and fast.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from vdd_ros_msgs.msg import EpisodeResult, PolicyAction

from vdd_ros.nodes.shared import (
    ParamSpec,
    StartupError,
    declare_parameters,
    print_help,
    spin_node,
    wants_help,
)
from vdd_ros.runtime.latency import LatencyWindow
from vdd_ros.tasks.base import StepResult
from vdd_ros.tasks.registry import UnknownTaskError, get_task

# Episode results are a log: late subscribers (an evaluator that discovers the simulator
# after the first episode) still receive every result.
RESULT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


SUMMARY = """A registered task as a ROS node: publishes 'observation' (sensor_msgs/JointState) and
'episode_start', steps on 'policy_action' (vdd_ros_msgs/PolicyAction), reports 'episode_result'."""

PARAMS: dict[str, ParamSpec] = {
    "task": ParamSpec("avoiding", "registered task to simulate"),
    "episodes": ParamSpec(0, "episodes to run; 0 = run forever", 0, 1_000_000),
    "lockstep": ParamSpec(False, "step as soon as the answering action arrives (evaluation); false = real time"),
    "step_period_s": ParamSpec(0.0, "real-time pacing (lockstep false); 0 = the task's control period", 0.0, 10.0),
    "action_timeout_s": ParamSpec(0.5, "lockstep: step with a zero action after this long", 0.001, 60.0),
    "tracking_noise": ParamSpec(0.0, "std of the task's tracking noise (task units)", 0.0, 1.0),
    "seed": ParamSpec(0, "seed of the task's randomness", 0, 2**31 - 1),
}


class TaskSimNode(Node):
    """Runs one task's episodes one after another against whatever controller answers."""

    def __init__(self, name: str = "task_sim") -> None:
        super().__init__(name)
        p = declare_parameters(self, PARAMS)
        try:
            self.task = get_task(p["task"])
        except UnknownTaskError as exc:
            raise StartupError(str(exc)) from None
        self.episodes = p["episodes"]
        self.lockstep = p["lockstep"]
        period = p["step_period_s"] or self.task.control_period_s
        self.action_timeout = p["action_timeout_s"]
        self.env = self.task.make_env(1, seed=p["seed"], tracking_noise=p["tracking_noise"])
        self._obs_pub = self.create_publisher(JointState, "observation", QoSProfile(depth=5))
        self._result_pub = self.create_publisher(EpisodeResult, "episode_result", RESULT_QOS)
        self._episode_pub = self.create_publisher(Header, "episode_start", QoSProfile(depth=10))
        self._new_episode = True
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(PolicyAction, "policy_action", self._on_action, qos)
        self._episode = 0
        self._late = 0
        self._rtt = LatencyWindow(512)
        self._answer: np.ndarray | None = None
        self._policy_id = ""
        self._obs_stamp: tuple[int, int] = (0, 0)
        self._obs_sent = time.monotonic()
        self._finished = False
        self._connected = False  # no step before the first answering action: wait for a controller
        self._announced = False  # the current episode's start went to a matched subscriber
        self._current = self.env.reset()[0]
        self._publish_obs()
        self.create_timer(0.05 if self.lockstep else period, self._on_timer)
        mode = "lockstep" if self.lockstep else f"real time ({period * 1e3:.1f} ms)"
        self.get_logger().info(f"{self.task.name} ready, {mode}, episodes={self.episodes or 'unlimited'}")

    def _publish_obs(self) -> None:
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "world"
        msg.name = list(self.task.obs_names)
        msg.position = self._current.astype(np.float64).tolist()
        self._obs_stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self._obs_sent = time.monotonic()
        self._answer = None
        if self._new_episode:  # tells the controller to start a fresh observation window
            self._episode_pub.publish(msg.header)
            self._announced = self._episode_pub.get_subscription_count() > 0
            # re-announced only until a controller first answers: a late first action mid-run must not
            # start the episode again (the controller would reset its window, a recording would split it)
            self._new_episode = not self._connected
        self._obs_pub.publish(msg)

    def _on_action(self, msg: PolicyAction) -> None:
        if self._finished or (msg.observation_stamp.sec, msg.observation_stamp.nanosec) != self._obs_stamp:
            return
        if not self._connected and not self._announced:
            return  # the controller could not see this episode's start: one arriving later would cut the episode
        if self._answer is None:
            self._rtt.add(time.monotonic() - self._obs_sent)
        self._connected = True
        self._new_episode = False
        self._answer = np.asarray(msg.action[: self.task.act_dim], dtype=np.float64)
        self._policy_id = msg.policy_id
        if self.lockstep:
            self._step()

    def _on_timer(self) -> None:
        if self._finished:
            return
        if not self._connected:
            self._publish_obs()
        elif self.lockstep:
            if time.monotonic() - self._obs_sent > self.action_timeout:
                self._step()
        else:
            self._step()

    def _step(self) -> None:
        if self._answer is None:
            self._late += 1
        action = self._answer if self._answer is not None else np.zeros(self.task.act_dim)
        result = self.env.step(action[None])
        self._current = result.obs[0]
        if result.done[0]:
            self._report(result)
            self._current = self.env.reset()[0]
            self._new_episode = True
            if self.episodes and self._episode >= self.episodes:
                self._finished = True
                self.get_logger().info(f"finished {self._episode} episodes")
                return
        self._publish_obs()

    def _report(self, result: StepResult) -> None:
        p50, p99, _ = self._rtt.summary_ms()
        msg = EpisodeResult(
            task=self.task.name,
            episode=self._episode,
            success=bool(result.success[0]),
            failed=bool(result.failed[0]),
            steps=int(result.steps[0]),
            mode=int(result.mode[0]),
            late_actions=self._late,
            obs_to_action_p50_ms=p50,
            obs_to_action_p99_ms=p99,
            policy_id=self._policy_id,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self._result_pub.publish(msg)
        self.get_logger().info(
            f"episode {self._episode}: {'success' if msg.success else 'failure'} in {msg.steps} steps, "
            f"mode {msg.mode}, late actions {self._late}"
        )
        self._episode += 1
        self._late = 0
        self._rtt.clear()


def main(args: list[str] | None = None) -> None:
    """Entry point of ``task_sim`` and of ``avoiding_sim``, which keeps that name for its node and messages."""
    executable = "avoiding_sim" if os.path.basename(sys.argv[0]) == "avoiding_sim" else "task_sim"
    if wants_help(args):
        print_help(executable, SUMMARY, PARAMS)
        return
    spin_node(lambda: TaskSimNode(executable), args, executable=executable)


if __name__ == "__main__":
    main()
