"""``occ-launch bag:=BAG`` end to end: the real occupancy_node (the shipped fusion model) and the
player, started by the runner as separate processes over DDS, on a bag of the tiny synthetic world
(2 scenes x 3 keyframes, an hour apart). Every LiDAR frame is predicted, the hour is skipped, and
the launch exits 0 by itself once the node's outputs are in. It runs in a namespace (``namespace:=``
with ``bag:=``: the player publishes the bag's topics below it, /tf and /tf_static stay global); the
root-namespace plan differs only in the player's arguments (test_launch.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from occ_ros.bag.nusc2bag import ConvertConfig, convert  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_occ_launch_with_a_bag_in_a_namespace_predicts_every_lidar_frame_and_exits_0(synthetic_dataroot, tmp_path):
    bag = tmp_path / "two_scenes"
    convert(ConvertConfig(synthetic_dataroot, bag, keyframes_only=True, progress=False))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    p = subprocess.run([sys.executable, "-m", "occ_ros.launch_description", f"bag:={bag}",
                        "namespace:=/robot1"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=400)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    assert "occ-bag-play: /robot1/occupancy_node ready on 13 topics" in p.stdout, log[-4000:]
    assert re.search(r"occ-bag-play: skipped a 359\d\.\d s gap", p.stdout), log[-4000:]
    assert "occ-bag-play: predicted 6 of 6 LiDAR frames (an output on /robot1/occupancy/voxels" in p.stdout, log[-4000:]
    assert "bag_player exited with code 0" in p.stderr
