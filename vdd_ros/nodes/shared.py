"""Small pieces the nodes share (ROS side only)."""

from __future__ import annotations

import os
from collections.abc import Callable

import rclpy
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

DEFAULT_POLICY_FILE = "avoiding_vdd.onnx"


def default_policy_path() -> str:
    """The VDD policy shipped with the package (share/vdd_ros/policies), or '' if not installed."""
    try:
        return os.path.join(get_package_share_directory("vdd_ros"), "policies", DEFAULT_POLICY_FILE)
    except PackageNotFoundError:
        return ""


def low_overhead_executor(context: Context | None = None) -> Executor:
    """rclpy's C++ EventsExecutor where the distribution has it (Kilted), else the single-threaded one.

    For loops that call ``spin_once`` from one thread (the bench probe). Measured here: its
    ``spin()`` never fires timers, so the nodes keep the single-threaded executor.
    """
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


def spin_node(
    make_node: Callable[[], Node],
    args: list[str] | None,
    make_executor: Callable[[], Executor] = SingleThreadedExecutor,
) -> None:
    """init, build, spin until Ctrl-C or shutdown, then tear down cleanly (the nodes' ``main``)."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
