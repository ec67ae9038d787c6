"""Start the vdd_ros controller, optionally with a task simulator beside it.

ros2 launch vdd_ros controller.launch.py use_sim:=true
ros2 launch vdd_ros controller.launch.py use_sim:=true task:=pushing policy:=runs/demo_pushing/distill_vdd/policy.onnx
ros2 launch vdd_ros controller.launch.py policy:=/path/to/policy.onnx namespace:=arm
ros2 launch vdd_ros controller.launch.py policy:=P.onnx observation_topic:=/joint_states \
    command_topic:=/forward_position_controller/commands       # a robot's own topics

Pairing rule: with use_sim:=true the controller runs with sync_to_observations: true (one action per
observation; fixed-phase ticks can lock just behind the sim's steps and make every action late);
with use_sim:=false the params_file decides. If the controller or the simulator exits (e.g. a refused
start), the whole launch shuts down.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.action import Action
from launch.actions import DeclareLaunchArgument, LogInfo, Shutdown
from launch.condition import Condition
from launch.conditions import IfCondition, UnlessCondition
from launch.events.process import ProcessExited
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

# Overrides the params_file only in the simulator pairing (dicts after the file take precedence).
SIM_PAIRING_PARAMS = {"sync_to_observations": True}


def _end_launch(event: ProcessExited, context: LaunchContext) -> list[Action] | None:
    """A node's on_exit: shut the whole launch down (nothing to add if it is already ending)."""
    if context.is_shutdown:  # Ctrl-C or another shutdown stopped the controller
        return None
    reason = f"{event.action.name} exited with code {event.returncode}; shutting the launch down"
    return [LogInfo(msg=reason), Shutdown(reason=reason)]


def _controller(parameters: list, condition: Condition) -> Node:
    """The controller node; its exit (refused start, crash) ends the whole launch."""
    return Node(
        package="vdd_ros",
        executable="controller",
        name="vdd_controller",
        namespace=LaunchConfiguration("namespace"),
        parameters=parameters,
        remappings=[
            ("observation", LaunchConfiguration("observation_topic")),
            ("command", LaunchConfiguration("command_topic")),
        ],
        output="screen",
        emulate_tty=True,
        condition=condition,
        on_exit=_end_launch,
    )


def generate_launch_description() -> LaunchDescription:
    """Launch arguments, the controller (one of two variants, by use_sim) and the optional simulator."""
    share = get_package_share_directory("vdd_ros")
    policy = LaunchConfiguration("policy")
    params_file = LaunchConfiguration("params_file")
    sim_params_file = LaunchConfiguration("sim_params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim = LaunchConfiguration("use_sim")
    controller_params = [params_file, {"policy_path": policy}]
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
                description="simulator parameters",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
            DeclareLaunchArgument(
                "observation_topic",
                default_value="observation",
                description="the controller's observation input (a robot's e.g. /joint_states)",
            ),
            DeclareLaunchArgument(
                "command_topic",
                default_value="command",
                description="the controller's Float64MultiArray command output (e.g. a forward command controller's)",
            ),
            DeclareLaunchArgument(
                "use_sim",
                default_value="false",
                description="also start a task simulator (the controller then ticks on its observations)",
            ),
            DeclareLaunchArgument(
                "task",
                default_value="avoiding",
                description="the simulated task with use_sim:=true (overrides sim_params_file's); pass a policy of it",
            ),
            _controller(controller_params, UnlessCondition(use_sim)),
            _controller([*controller_params, SIM_PAIRING_PARAMS], IfCondition(use_sim)),
            Node(
                package="vdd_ros",
                executable="task_sim",
                name="task_sim",
                namespace=namespace,
                parameters=[sim_params_file, {"task": LaunchConfiguration("task")}],
                output="screen",
                condition=IfCondition(use_sim),
                on_exit=_end_launch,
            ),
        ]
    )
