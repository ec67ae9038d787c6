"""Offline distillation as a ROS node: ``ros2 run vdd_ros distill --ros-args --params-file ...``.

Parameters are the settings of ``DistillJobConfig`` under their dotted names (read-only,
``-p train.iterations:=3000``) plus ``deploy_to``. Training runs in a worker thread and
reports on ``~/progress`` (vdd_ros_msgs/DistillProgress) and in the log; Ctrl-C stops it at
the next step with a checkpoint, and starting the node again resumes. When done, the
exported policy can be pushed to a running controller.
"""

from __future__ import annotations

import math
import os
import signal
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from vdd_ros_msgs.msg import DistillProgress

from vdd_ros.nodes.policy_client import polling_waiter, set_policy_path
from vdd_ros.nodes.shared import (
    ParamSpec,
    StartupError,
    declare_parameters,
    init_or_refuse,
    print_refusal,
    wants_help,
)
from vdd_ros.pipeline.distill_config import LIMITS, DistillError, DistillJobConfig, check_config
from vdd_ros.util.config import ConfigError, help_table, load_config, settings
from vdd_ros.util.progress import EvalResult, Event, Notice, TrainProgress, describe


def _spec(name: str, default: object, help_text: str) -> ParamSpec:
    low, high = LIMITS.get(name, (None, None))
    return ParamSpec(default, help_text, low, high) if high is not None else ParamSpec(default, help_text)


PARAMS: dict[str, ParamSpec] = {
    **{s.name: _spec(s.name, s.default, s.help) for s in settings(DistillJobConfig)},
    "deploy_to": ParamSpec("", "controller node to hot-swap the exported policy into when done, e.g. /vdd_controller"),
}


class DistillNode(Node):
    """Owns one distillation job; exits when it ends."""

    def __init__(self) -> None:
        super().__init__("vdd_distill")
        values = declare_parameters(self, PARAMS)
        self.deploy_to = str(values.pop("deploy_to"))
        self.config = load_config(DistillJobConfig, overrides=values)
        check_config(self.config)
        self._pub = self.create_publisher(DistillProgress, "~/progress", 10)
        self._stop = threading.Event()
        self.exit_code = 0
        self.summary: dict | None = None
        self.done = threading.Event()
        self._last_eval = (math.nan, math.nan)  # success rate, entropy
        self._worker = threading.Thread(target=self._run, name="distill", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        self._worker.join()

    def _publish(self, phase: str, message: str = "", iteration: int = 0, stats: dict | None = None) -> None:
        stats = stats or {}
        msg = DistillProgress(phase=phase, message=message)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.iteration = iteration
        msg.total_iterations = self.config.train.iterations
        msg.expert_loss = float(stats.get("expert_loss", math.nan))
        msg.gating_loss = float(stats.get("gating_loss", math.nan))
        msg.learning_rate = float(stats.get("lr", math.nan))
        msg.eval_success_rate, msg.eval_entropy = (float(v) for v in self._last_eval)
        self._pub.publish(msg)

    def _on_progress(self, event: Event) -> None:
        log = self.get_logger()
        (log.warning if isinstance(event, Notice) else log.info)(describe(event))
        if isinstance(event, TrainProgress):
            self._publish("training", iteration=event.iteration, stats=event.stats)
        elif isinstance(event, EvalResult):
            self._last_eval = (event.success_rate, event.entropy)
            self._publish("evaluating", iteration=event.iteration)

    def _run(self) -> None:
        log = self.get_logger()
        try:
            log.info(f"distilling {self.config.teacher} on {self.config.dataset} -> {self.config.output}")
            from vdd_ros.pipeline.distill_job import run_distillation  # torch: not for --help

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
        # The main thread spins this node, so the client waits by polling rather than spinning here.
        ok, reason = set_policy_path(self, self.deploy_to, path, wait=polling_waiter)
        if ok:
            self.get_logger().info(f"deployed to {self.deploy_to}: policy_path = {path}")
        else:
            self.get_logger().error(f"deploy_to {self.deploy_to!r}: {reason or 'rejected the policy'}")
            self.exit_code = 3


def print_help() -> None:
    """``--help``: the settings table shared with the docs and the offline CLI, plus ``deploy_to``."""
    print("usage: ros2 run vdd_ros distill [--ros-args -p NAME:=VALUE ... --params-file FILE]\n")
    print(__doc__.strip() + "\n\nparameters:")
    print(help_table(DistillJobConfig))
    print(f"  deploy_to  str = ''\n  {'':9}  {PARAMS['deploy_to'].description}")


def main(args: list[str] | None = None) -> None:
    if wants_help(args):
        print_help()
        return
    # Ctrl-C and SIGTERM are handled here, not by rclpy: the worker must save its checkpoint
    # and publish "stopped" while the context is still up, then the node shuts down. The handler
    # only sets a flag: an exception raised wherever the main thread happens to be (measured under
    # load: while the executor was still being set up) skipped the save and hung the exit.
    interrupted = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: interrupted.set())
    init_or_refuse(args, "distill", signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    try:
        node = DistillNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not node.done.is_set() and not interrupted.is_set():
            executor.spin_once(timeout_sec=0.1)
        if not node.done.is_set():
            node.get_logger().info("interrupted: saving a checkpoint, run again to resume")
            node.stop()  # a second Ctrl-C only sets the flag again: the save is never cut short
            code = 130
        executor.spin_once(timeout_sec=0.1)  # flush the last progress message
        code = code or node.exit_code
    except (ConfigError, DistillError, StartupError) as exc:
        print_refusal("distill", exc)
        code = 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
