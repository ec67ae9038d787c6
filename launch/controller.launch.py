"""Start the vdd_ros controller, optionally with the Avoiding simulator beside it.

ros2 launch vdd_ros controller.launch.py use_sim:=true
ros2 launch vdd_ros controller.launch.py policy:=/path/to/policy.onnx namespace:=arm
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("vdd_ros")
    policy = LaunchConfiguration("policy")
    params_file = LaunchConfiguration("params_file")
    sim_params_file = LaunchConfiguration("sim_params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim = LaunchConfiguration("use_sim")
    return LaunchDescription(
        [
            DeclareLaunchArgument("policy", default_value="", description="ONNX policy; empty = shipped default"),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "controller.yaml"),
                description="controller parameters",
            ),
            DeclareLaunchArgument(
                "sim_params_file",
                default_value=os.path.join(share, "config", "avoiding_sim.yaml"),
                description="avoiding_sim parameters",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
            DeclareLaunchArgument("use_sim", default_value="false", description="also start avoiding_sim"),
            Node(
                package="vdd_ros",
                executable="controller",
                name="vdd_controller",
                namespace=namespace,
                parameters=[params_file, {"policy_path": policy}],
                output="screen",
                emulate_tty=True,
            ),
            Node(
                package="vdd_ros",
                executable="avoiding_sim",
                name="avoiding_sim",
                namespace=namespace,
                parameters=[sim_params_file],
                output="screen",
                condition=IfCondition(use_sim),
            ),
        ]
    )
