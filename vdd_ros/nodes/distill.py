"""Offline distillation as a ROS node: ``ros2 run vdd_ros distill --ros-args --params-file ...``.

Parameters are the fields of ``DistillConfig`` (read-only) plus ``deploy_to``. Training
runs in a worker thread and reports on ``~/progress`` (vdd_ros_msgs/DistillProgress) and
in the log; Ctrl-C stops it at the next step with a checkpoint, and starting the node
again resumes. When done, the exported policy can be pushed to a running controller.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.signals import SignalHandlerOptions
from vdd_ros_msgs.msg import DistillProgress

from vdd_ros.util.config import ConfigError, from_dict
from vdd_ros.pipeline.distill_job import DistillConfig, DistillError, describe_eval, run_distillation
from vdd_ros.nodes.shared import (
    ParamSpec,
    StartupError,
    declare_parameters,
    init_or_refuse,
    print_help,
    print_refusal,
    wants_help,
)

PARAMS: dict[str, ParamSpec] = {
    **{
        f.name: ParamSpec(f.default, "DistillConfig field (docs/distill.md)")
        for f in dataclasses.fields(DistillConfig)
    },
    "deploy_to": ParamSpec("", "controller node to hot-swap the exported policy into when done, e.g. /vdd_controller"),
}


class DistillNode(Node):
    """Owns one distillation job; exits when it ends."""

    def __init__(self) -> None:
        super().__init__("vdd_distill")
        values = declare_parameters(self, PARAMS)
        self.deploy_to = values.pop("deploy_to")
        self.config = from_dict(DistillConfig, values, where="distill parameters")
        self._pub = self.create_publisher(DistillProgress, "~/progress", 10)
        self._stop = threading.Event()
        self.exit_code = 0
        self.summary: dict | None = None
        self.done = threading.Event()
        self._last = {"success_rate": math.nan, "entropy": math.nan}
        self._worker = threading.Thread(target=self._run, name="distill", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        self._worker.join()

    def _publish(self, phase: str, message: str = "", **values: float) -> None:
        msg = DistillProgress(phase=phase, message=message)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.iteration = int(values.get("iteration", 0))
        msg.total_iterations = self.config.iterations
        msg.expert_loss = float(values.get("expert_loss", math.nan))
        msg.gating_loss = float(values.get("gating_loss", math.nan))
        msg.learning_rate = float(values.get("lr", math.nan))
        msg.eval_success_rate = float(self._last["success_rate"])
        msg.eval_entropy = float(self._last["entropy"])
        self._pub.publish(msg)

    def _on_progress(self, event: dict) -> None:
        kind = event.get("event")
        log = self.get_logger()
        if kind == "train":
            self._publish("training", **{k: v for k, v in event.items() if isinstance(v, (int, float))})
            if event["iteration"] % 50 == 0 or event["iteration"] == event.get("iterations"):
                log.info(
                    f"iteration {event['iteration']}/{self.config.iterations} "
                    f"expert_loss {event.get('expert_loss', math.nan):.4g}"
                )
        elif kind in ("eval", "final_eval"):
            self._last = {"success_rate": event["success_rate"], "entropy": event["entropy"]}
            log.info(describe_eval(event))
            self._publish("evaluating", iteration=event["iteration"])
        else:
            log.info(str(event))

    def _run(self) -> None:
        log = self.get_logger()
        try:
            log.info(f"distilling {self.config.teacher} on {self.config.dataset} -> {self.config.output}")
            self.summary = run_distillation(self.config, self._on_progress, self._stop.is_set)
            if self.summary["status"] != "done":
                log.warning(f"stopped at iteration {self.summary['iteration']}; run again to resume")
                self._publish("stopped", iteration=self.summary["iteration"])
            else:
                log.info(f"exported {self.summary['policy']} (sha256 {self.summary['sha256'][:12]})")
                self._publish("done", self.summary["policy"], iteration=self.summary["iteration"])
                if self.deploy_to:
                    self._deploy(os.path.abspath(self.summary["policy"]))
        except (ConfigError, DistillError) as exc:
            log.error(str(exc))
            self._publish("error", str(exc))
            self.exit_code = 2
        except Exception as exc:
            log.error(f"distillation failed: {exc!r}")
            self._publish("error", repr(exc))
            self.exit_code = 1
        finally:
            self.done.set()

    def _deploy(self, path: str) -> None:
        client = AsyncParameterClient(self, self.deploy_to)
        if not client.wait_for_services(10.0):
            self.get_logger().error(f"deploy_to: no parameter service for {self.deploy_to!r}")
            self.exit_code = 3
            return
        future = client.set_parameters([Parameter("policy_path", value=path)])
        event = threading.Event()
        future.add_done_callback(lambda _: event.set())
        if not event.wait(300.0):  # vetting a large policy (or building an engine) can take a while
            self.get_logger().error(f"deploy_to: {self.deploy_to!r} did not answer")
            self.exit_code = 3
            return
        result = future.result().results[0]
        if result.successful:
            self.get_logger().info(f"deployed to {self.deploy_to}: policy_path = {path}")
        else:
            self.get_logger().error(f"deploy_to {self.deploy_to!r} rejected the policy: {result.reason}")
            self.exit_code = 3


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: list[str] | None = None) -> None:
    if wants_help(args):
        print_help("distill", __doc__, PARAMS)
        return
    # Ctrl-C and SIGTERM are handled here, not by rclpy: the worker must save its checkpoint
    # and publish "stopped" while the context is still up, then the node shuts down.
    init_or_refuse(args, "distill", signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    code = 0
    try:
        node = DistillNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not node.done.is_set():
                executor.spin_once(timeout_sec=0.1)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the save short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            node.get_logger().info("interrupted: saving a checkpoint, run again to resume")
            node.stop()
            code = 130
        executor.spin_once(timeout_sec=0.1)  # flush the last progress message
        code = code or node.exit_code
    except (ConfigError, DistillError, StartupError) as exc:
        print_refusal("distill", exc)
        code = 2
    except KeyboardInterrupt:  # during start-up: nothing to save
        code = 130
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
