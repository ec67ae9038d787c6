"""Small pieces the nodes share (ROS side only)."""

from __future__ import annotations

import os

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

DEFAULT_POLICY_FILE = "avoiding_vdd.onnx"


def default_policy_path() -> str:
    """The VDD policy shipped with the package (share/vdd_ros/policies), or '' if not installed."""
    try:
        return os.path.join(get_package_share_directory("vdd_ros"), "policies", DEFAULT_POLICY_FILE)
    except PackageNotFoundError:
        return ""
