"""occ_core: 3D semantic occupancy models, data, ops and evaluation.

This package never imports ROS (rclpy or any ``*_msgs``); a test enforces it. The ROS
nodes live in :mod:`occ_ros` and convert messages to the numpy arrays used here.
"""

__version__ = "0.1.0"
