"""occupancy_node start-up errors: one line naming the cause, exit code 2, no traceback (issue 12)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("rclpy")


def run_node(*ros_args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "occ_ros.occupancy_node", "--ros-args", "-r", "__node:=occ_startup_test", *ros_args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (("--params-file", "/nonexistent/occupancy.yaml"), "--params-file: /nonexistent/occupancy.yaml does not exist"),
    (("-p", "device:=cuda:99"), "device: 'cuda:99' asked for, but"),  # no CUDA here, too few GPUs on a GPU machine
    (("-p", "extrinsics_source:=rig", "-p", "camera_names:=[CAM_FRONT,CAM_NOWHERE]"),
     "'camera_names': ['CAM_NOWHERE'] are not cameras of the rig file"),
])
def test_bad_start_up_exits_2_with_one_line(args, message, tmp_path):
    res = run_node(*args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("occupancy_node:")]
    assert len(lines) == 1 and message in lines[0], res.stderr


def test_params_file_that_is_not_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("occupancy_node: [unclosed\n")
    res = run_node("--params-file", str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"--params-file: {bad}: the params file is not valid YAML" in res.stderr
