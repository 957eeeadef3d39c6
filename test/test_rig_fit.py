"""Rigs that are not nuScenes (issue 17, item 6): config/rigs/robot_3cam.yaml fits the shipped
models; a rig the camera branch cannot take (portrait images, body-convention extrinsics, K of
another resolution) is refused by rig_fit, its CLI, and the node at start-up with one line."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from occ_core.errors import OccDataError
from occ_core.models.config import load_config
from occ_core.models.rig_fit import MIN_VIEW_IN_GRID, camera_fit, check_rig_fits_model, main
from occ_core.rig import load_rig, rig_to_yaml

REPO = Path(__file__).resolve().parent.parent
ROBOT = REPO / "config" / "rigs" / "robot_3cam.yaml"
FUSION = load_config(REPO / "config" / "models" / "fusion.yaml")


def _with_camera(rig, name, **changes):
    cams = tuple(dataclasses.replace(c, **changes) if c.name == name else c for c in rig.cameras)
    return dataclasses.replace(rig, cameras=cams)


def _portrait(rig):
    """front_camera rotated to a 720x1280 portrait image (K transposed with it)."""
    cam = rig.camera("front_camera")
    K = cam.K.copy()
    K[0, 2], K[1, 2] = cam.K[1, 2], cam.K[0, 2]
    return _with_camera(rig, "front_camera", width=cam.height, height=cam.width, K=K)


def _body_convention(rig):
    """left_camera's extrinsics written for a body frame (x forward, z up) instead of the optical one."""
    T = rig.camera("left_camera").T_base_from_cam.copy()
    T[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # yaw +90 deg, no optical axes
    return _with_camera(rig, "left_camera", T_base_from_cam=T)


def test_robot_rig_is_not_nuscenes_and_fits_the_shipped_camera_models():
    rig = load_rig(ROBOT)
    assert 1 <= len(rig.cameras) <= 3
    sizes = {(c.width, c.height) for c in rig.cameras}
    assert (1600, 900) not in sizes and len(sizes) == 2
    for name in ("fusion.yaml", "camera.yaml", "fusion_cascade.yaml"):
        fits = check_rig_fits_model(rig, rig.camera_names, load_config(REPO / "config" / "models" / name))
        assert [f.name for f in fits] == list(rig.camera_names)
        assert all(not f.problems and f.view_in_grid >= MIN_VIEW_IN_GRID and f.kept_cols == 1.0 for f in fits)
    # 4:3 keeps the bottom 73 % of its rows in the 176x96 input: 96 of 132 resized rows
    assert camera_fit(rig.camera("left_camera"), FUSION).kept_rows == pytest.approx(96 / 132)


def test_nuscenes_cameras_see_the_grid_far_above_the_threshold():
    rig = load_rig(REPO / "config" / "rigs" / "nuscenes.yaml")
    views = [camera_fit(c, FUSION).view_in_grid for c in rig.cameras]
    assert min(views) > 3 * MIN_VIEW_IN_GRID


@pytest.mark.parametrize("make_bad, camera, words", [
    (_portrait, "front_camera", ["720x1280 image", "31 % of its rows", "0.92..3.67"]),
    (_body_convention, "left_camera", ["optical axis points 90 deg above the horizon", "8.3 % of its view",
                                       "inside the occ3d grid", "optical frame: z forward"]),
    (lambda rig: _with_camera(rig, "right_camera", width=300, height=200), "right_camera",
     ["principal point (cx, cy) = (320.0, 240.0) lies outside its 300x200 image"]),
])
def test_a_rig_the_model_cannot_take_is_refused_naming_the_camera(make_bad, camera, words):
    rig = make_bad(load_rig(ROBOT))
    with pytest.raises(OccDataError) as err:
        check_rig_fits_model(rig, rig.camera_names, FUSION, "rig file r.yaml", "model m.yaml")
    msg = str(err.value)
    assert msg.startswith("rig file r.yaml cannot feed model m.yaml: camera " + camera + ":"), msg
    assert all(w in msg for w in words), msg
    others = [c for c in rig.camera_names if c != camera]
    assert not any(f"camera {c}:" in msg for c in others)  # only the camera at fault is named
    # the same rig without that camera fits
    assert check_rig_fits_model(rig, others, FUSION)


def test_lidar_only_model_takes_any_rig():
    rig = _body_convention(_portrait(load_rig(ROBOT)))
    assert check_rig_fits_model(rig, rig.camera_names, load_config(REPO / "config" / "models" / "lidar.yaml")) == []


def test_cli_prints_figures_and_exits_2_with_one_line(tmp_path, capsys):
    assert main([str(ROBOT), str(REPO / "config" / "models" / "fusion.yaml")]) == 0
    out = capsys.readouterr().out
    assert "front_camera" in out and "1280x720" in out and "every camera fits" in out
    bad = tmp_path / "portrait.yaml"
    bad.write_text(rig_to_yaml(_portrait(load_rig(ROBOT))))
    assert main([str(bad), str(REPO / "config" / "models" / "fusion.yaml"), "--cameras", "front_camera"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m occ_core.models.rig_fit: {bad} cannot feed")
    assert main([str(ROBOT), str(REPO / "config" / "models" / "fusion.yaml"), "--cameras", "CAM_FRONT"]) == 2
    assert "--cameras: ['CAM_FRONT'] are not cameras of" in capsys.readouterr().err


# ------------------------------------------------------------------ the node
ROBOT_CAMERAS = "[front_camera,left_camera,right_camera]"


def _node_cmd(rig: Path) -> list[str]:
    return [sys.executable, "-m", "occ_ros.occupancy_node", "--ros-args", "-r", "__node:=occ_rig_fit_test",
            "-p", "extrinsics_source:=rig", "-p", f"rig_file:={rig}", "-p", f"camera_names:={ROBOT_CAMERAS}",
            "-p", "lidar_topic:=/occ_rig_fit_test/lidar"]


def test_node_refuses_a_rig_the_model_cannot_take(tmp_path):
    pytest.importorskip("rclpy")
    bad = tmp_path / "robot_body_convention.yaml"
    bad.write_text(rig_to_yaml(_body_convention(load_rig(ROBOT))))
    res = subprocess.run(_node_cmd(bad), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("occupancy_node:")]
    assert len(lines) == 1, res.stderr
    assert (f"invalid parameters: parameter 'rig_file': rig file {bad} cannot feed model config/models/fusion.yaml: "
            "camera left_camera: its optical axis points 90 deg above the horizon") in lines[0]


def test_node_starts_on_the_robot_rig():
    pytest.importorskip("rclpy")
    proc = subprocess.Popen(_node_cmd(ROBOT), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "3 cameras (" in line:
                break
        assert any("3 cameras (" in ln and "rig file (base_link, front_camera, left_camera, lidar_link, right_camera)"
                   in ln for ln in seen), "".join(seen)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
