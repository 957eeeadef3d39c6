"""ament_python package occ_ros: the ROS 2 nodes (occ_ros) and the ROS-free core (occ_core)."""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = "occ_ros"


def share_tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install every file below ``top`` into share/occ_ros/<top>."""
    entries = []
    for root, _dirs, files in os.walk(top):
        files = [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        if files:
            entries.append((os.path.join("share", package_name, root), files))
    return sorted(entries)


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["occ_core", "occ_core.*", "occ_ros", "occ_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        *share_tree("launch"),
        *share_tree("config"),
        *share_tree("msg"),
    ],
    package_data={"occ_core": []},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="occ_ros developers",
    maintainer_email="occ-ros@users.noreply.github.com",
    description="3D semantic occupancy prediction for ROS 2: camera, LiDAR and fusion models, "
    "RViz markers, nuScenes-to-rosbag2 conversion and playback evaluation.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "occ-synth = occ_core.data.synthetic.cli:main",
            "occ-eval = occ_core.eval.cli:main",
            "occ-train = occ_core.training.train:main",
            "occ-predict = occ_core.training.predict:main",
            "occ-render = occ_core.viz.cli:main",
            "occupancy_node = occ_ros.occupancy_node:main",
            "occ-launch = occ_ros.launch_description:main",
            "occ-lifecycle = occ_ros.lifecycle_client:main",
            "occ-nusc2bag = occ_ros.bag.nusc2bag:main",
            "occ-bag2nusc = occ_ros.bag.bag2nusc:main",
            "occ-bag-play = occ_ros.bag.play:main",
            "occ-bag-eval = occ_ros.bag.evaluate:main",
            "occ-label = occ_core.labels.cli:main",
            "occ-export = occ_core.deploy.export:main",
        ],
    },
)
