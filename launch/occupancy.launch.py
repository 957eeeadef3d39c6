"""ros2 launch occ_ros occupancy.launch.py [model:=...] [checkpoint:=...] [bag:=...] [rate:=1.0] [loop:=true]
[input_qos:=auto|sensor_data|reliable] [use_sim_time:=auto|true|false] [rviz:=true] [namespace:=/robot1]
[output_ns:=...] [managed:=true] [image_topic:=...] ...

Starts what ``occ_ros.launch_description.describe`` lists (the same description ``occ-launch``
runs without ``ros2 launch``): occupancy_node with config/occupancy.yaml (``managed:=true``: as a
lifecycle node, to be configured and activated), optionally RViz2 with config/occupancy.rviz (or a
copy on the launched topics) and ``occ-bag-play <bag>`` (our rosbag2 player; it publishes /clock, waits
until the node's inputs are subscribed, and exits once every played LiDAR frame is predicted;
its exit shuts the launch down). ``namespace:=/robot1 bag:=...``: the node and the player's topics
go below the namespace together (/tf, /tf_static and /clock stay global, as tf2 and use_sim_time
expect).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from occ_ros.dds_profile import use_shipped_profile
from occ_ros.launch_description import ARGUMENTS, describe


def _actions(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    plan = describe(values, check=True)
    actions = []
    for spec in plan.nodes:
        actions.append(Node(package=spec.package, executable=spec.executable, name=spec.name, output="screen",
                            namespace=spec.namespace or None,
                            arguments=list(spec.arguments),
                            parameters=[*spec.params_files, dict(spec.parameters)],
                            remappings=list(spec.remappings)))
    for proc in plan.processes:
        extra = {"on_exit": [Shutdown(reason=f"{proc.name} finished")]} if proc.ends_launch else {}
        actions.append(ExecuteProcess(cmd=list(proc.cmd), name=proc.name, output="screen", **extra))
    return actions


def generate_launch_description():
    use_shipped_profile()  # the Fast DDS profile for large clouds; the launched processes inherit it
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                **({"choices": list(a.choices)} if a.choices else {})) for a in ARGUMENTS],
        OpaqueFunction(function=_actions),
    ])
