"""Shared fixtures: isolated ROS environment, in-test rclpy context, node subprocesses.

Nodes are started from the colcon install (``install/vdd_ros/lib/vdd_ros/<exe>``) with
``sys.executable`` and the inherited environment, so the ROS-wheel bootstrap and the
per-run ROS_DOMAIN_ID apply; they are stopped by PID.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
INSTALL_LIB = REPO / "install" / "vdd_ros" / "lib" / "vdd_ros"


def _require_isolated_ros() -> None:
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST" or "ROS_DOMAIN_ID" not in os.environ:
        pytest.fail("ROS tests need ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID: run `make test`")


class NodeProcess:
    """A node executable running in its own process, logging to a file."""

    def __init__(self, executable: str, ros_args: list[str], log_path: pathlib.Path) -> None:
        exe = INSTALL_LIB / executable
        if not exe.exists():
            raise FileNotFoundError(f"{exe} is not installed; run `make setup`")
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, str(exe), "--ros-args", *ros_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (graceful), then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode


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
