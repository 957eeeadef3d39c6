"""ros2 launch occ_ros occupancy.launch.py [model:=...] [checkpoint:=...] [use_sim_time:=true] [bag:=...] [rviz:=true]

Starts what ``occ_ros.launch_description.describe`` lists (the same description ``occ-launch``
runs without ``ros2 launch``): occupancy_node with config/occupancy.yaml, optionally RViz2 with
config/occupancy.rviz and ``occ-bag-play <bag>`` (our rosbag2 player; it publishes /clock).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from occ_ros.launch_description import ARGUMENTS, describe


def _actions(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    plan = describe(values)
    actions = []
    for spec in plan.nodes:
        actions.append(Node(package=spec.package, executable=spec.executable, name=spec.name, output="screen",
                            arguments=list(spec.arguments),
                            parameters=[*spec.params_files, dict(spec.parameters)],
                            remappings=list(spec.remappings)))
    for proc in plan.processes:
        actions.append(ExecuteProcess(cmd=list(proc.cmd), name=proc.name, output="screen"))
    return actions


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                **({"choices": list(a.choices)} if a.choices else {})) for a in ARGUMENTS],
        OpaqueFunction(function=_actions),
    ])
