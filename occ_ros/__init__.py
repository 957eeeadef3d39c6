"""occ_ros: the ROS 2 side of the project (thin rclpy nodes, message <-> numpy conversions).

The ROS-free core lives in ``occ_core``; see ``occ_ros.conversions`` for the conversions that
stand in for ``sensor_msgs_py.point_cloud2`` and ``cv_bridge`` (no wheels for those exist).
"""
