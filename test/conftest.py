"""Shared fixtures: isolated ROS environment, in-test rclpy context, node subprocesses.

Nodes are started from the colcon install (``lib/vdd_ros/<exe>``, found through the
ament index) with ``sys.executable`` and the inherited environment, so the ROS-wheel
bootstrap and the per-run ROS_DOMAIN_ID apply; they are stopped by PID.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable, Iterator

import pytest

from vdd_ros.harness.process import NodeProcess

REPO = pathlib.Path(__file__).resolve().parents[1]


def _require_isolated_ros() -> None:
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST" or "ROS_DOMAIN_ID" not in os.environ:
        pytest.fail("ROS tests need ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID: run `make test`")


@pytest.fixture
def start_node(tmp_path: pathlib.Path) -> Iterator[Callable[..., NodeProcess]]:
    """Factory: ``start_node("controller", ["-p", "x:=1"])``; everything started is stopped."""
    _require_isolated_ros()
    started: list[NodeProcess] = []

    def start(executable: str, ros_args: list[str] | None = None) -> NodeProcess:
        node = NodeProcess(executable, ros_args or [], tmp_path / f"{executable}-{len(started)}.log")
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


class RosHarness:
    """An rclpy context and node owned by one test, spun on demand."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Spin until ``predicate()``; fail the test with ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.01)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


@pytest.fixture
def ros(request: pytest.FixtureRequest) -> Iterator[RosHarness]:
    _require_isolated_ros()
    harness = RosHarness("test_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40])
    yield harness
    harness.close()
