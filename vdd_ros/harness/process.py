"""Start this package's node executables as child processes and stop them by PID.

Used by the ROS-loop evaluation, the demo and the tests. Children run with
``sys.executable`` and the inherited environment (the ROS wheels' bootstrap, the
caller's ROS_DOMAIN_ID and loopback-only discovery).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Mapping

from ament_index_python.packages import get_package_prefix


def executable_path(name: str) -> pathlib.Path:
    """The installed executable ``lib/vdd_ros/<name>``."""
    exe = pathlib.Path(get_package_prefix("vdd_ros")) / "lib" / "vdd_ros" / name
    if not exe.exists():
        raise FileNotFoundError(f"{exe} is not installed; run `make setup` (colcon build)")
    return exe


def _ros_value(value: object) -> str:
    """A value as ``-p name:=value`` parses it (YAML): booleans lower-case, lists in brackets."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_ros_value(v) for v in value) + "]"
    return str(value)


def ros_params(params: Mapping[str, object]) -> list[str]:
    """``-p name:=value`` arguments for every entry of ``params`` (the one place they are spelled)."""
    return [arg for name, value in params.items() for arg in ("-p", f"{name}:={_ros_value(value)}")]


class NodeProcess:
    """A node executable running in its own process group, logging to a file."""

    def __init__(self, executable: str, ros_args: list[str], log_path: str | os.PathLike[str]) -> None:
        self.log_path = pathlib.Path(log_path)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, str(executable_path(executable)), "--ros-args", *ros_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (graceful shutdown), then SIGKILL to the group; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode
