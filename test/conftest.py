"""Shared test setup.

Each pytest session gets its own ROS_DOMAIN_ID (unless one is set) so that concurrent runs
on one machine do not hear each other over DDS. It is set before any test imports rclpy.
"""

import os
import sys
from pathlib import Path

if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # colcon test runs from the build folder
    sys.path.insert(0, str(REPO_ROOT))
