"""The real nuScenes pieces of ``../shared/data/nuscenes_real/`` in the forms the tools take.

Nothing is copied into the repository: tests build everything in a temporary folder from the
shared files (read their ``README.md``), through the project's own writers:

- :func:`read_a` / :func:`read_b`: the two complete keyframes (six 1600x900 cameras, LiDAR,
  calibration, boxes) as :class:`~occ_core.data.nuscenes_writer.LidarKeyframe` s with their
  :class:`~occ_core.data.nuscenes_writer.CameraImage` s, each camera with its own timestamp and
  the ego pose at that time. A (v1.0-mini scene-0061, ~9 m/s): calibration, intrinsics and the
  seven ego poses from the sample's nuScenes tables (``nuscenes_db_*``), boxes from the mmdet3d
  v1.x info (LiDAR frame ``[x, y, z_centre, l, w, h, yaw]``). B (scene-0003, nearly still): all
  from the BEVDet-style ``sample0000.yaml`` (boxes in ``ann_infos``, ego frame). Each also
  carries the info file's stored ``lidar2cam`` (A) / ``sensor2lidar`` (B), which include the ego
  motion between the LiDAR and the camera: the references of the projection check.
- :func:`write_camera_dataroot`: A and B as one nuScenes-format dataroot (scenes ``scene-0061``
  and ``scene-0003``, both in the ``val`` split of its ``splits.json``) through
  :func:`~occ_core.data.nuscenes_writer.write_dataroot`; nuscenes-devkit loads it.
- :func:`write_sequence_dataroot`: H's 11 labelled LiDAR keyframes through the SurroundOcc
  own-data adapter (:mod:`occ_core.data.surroundocc_own`), the form ``occ-label`` and the
  loaders take.
- :func:`write_occ3d_gt`: G, the one real Occ3D label, as ``<out>/<scene>/<token>/labels.npz``
  (``occ-eval``'s ``--gt`` layout), bytes unchanged (uint8 masks, road at z-index 0).
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from occ_core.data.nuscenes_writer import BoxAnnotation, CameraImage, LidarKeyframe, SceneRecording, write_dataroot
from occ_core.geometry import make_transform

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuscenes_real"
A_DIR = REAL / "mmdet3d_demo_nuscenes"
A_LOG = "n015-2018-07-24-11-22-45+0800"
A_DB = A_DIR / "nuscenes_db_v1.0-test_ros2_bevfusion_demo"
B_DIR = REAL / "bevdet_tensorrt_cpp_sample0"
B_LOG = "n015-2018-08-02-17-16-37+0800"
H_DIR = REAL / "surroundocc_own_data_n015-2018-07-18-11-07-57"
G_TOKEN = "29796060110c4163b07f06eff4af0753"
G_FILE = REAL / "occ3d_cvpr2023_challenge" / G_TOKEN / "labels.npz"
G_SCENE = "occ3d-challenge"
SCENE_A, SCENE_B = "scene-0061", "scene-0003"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")

needs_real = pytest.mark.skipif(not (A_DIR.is_dir() and B_DIR.is_dir() and H_DIR.is_dir() and G_FILE.is_file()),
                                reason=f"{REAL} (shared real nuScenes data) not present")

#: The 10 nuScenes detection classes of the info files -> one nuScenes category each.
DETECTION_TO_CATEGORY = {
    "car": "vehicle.car", "truck": "vehicle.truck", "trailer": "vehicle.trailer", "bus": "vehicle.bus.rigid",
    "construction_vehicle": "vehicle.construction", "bicycle": "vehicle.bicycle", "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult", "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier"}


@dataclass
class RealKeyframe:
    """One real keyframe: the frame to write, and what the info file stored about it.

    Attributes:
        scene, log: names.
        frame: the keyframe (LiDAR, cameras with their own ego poses, boxes in global).
        T_cam_from_lidar: channel -> (4, 4) the info file's LiDAR -> camera transform (ego motion included).
        num_lidar_pts: (M,) the info file's point count of each box, in ``frame.boxes`` order
            (A: boxes of the 10 detection classes only; the info marks the others -1).
    """

    scene: str
    log: str
    frame: LidarKeyframe
    T_cam_from_lidar: dict[str, np.ndarray]
    num_lidar_pts: np.ndarray


def _upright_box(instance: str, category: str, center_local: np.ndarray, wlh, yaw_local: float,
                 T_global_from_local: np.ndarray) -> BoxAnnotation:
    """A box given in a local frame (LiDAR or ego), yaw about its z, as an upright global nuScenes box."""
    c = T_global_from_local[:3, :3] @ center_local + T_global_from_local[:3, 3]
    ahead = T_global_from_local[:3, :3] @ np.array([math.cos(yaw_local), math.sin(yaw_local), 0.0])
    yaw = math.atan2(ahead[1], ahead[0])
    return BoxAnnotation(instance, category, c, np.asarray(wlh, np.float64),
                         np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]))


def read_a() -> RealKeyframe:
    """Keyframe A (module docstring)."""
    info = pickle.loads((A_DIR / f"{A_LOG}.pkl").read_bytes())
    classes = {v: k for k, v in info["metainfo"]["categories"].items()}
    d = info["data_list"][0]
    db = {n: json.loads((A_DB / f"{n}.json").read_text()) for n in ("sample_data", "ego_pose", "calibrated_sensor",
                                                                     "sensor")}
    ego = {r["token"]: make_transform(r["translation"], r["rotation"]) for r in db["ego_pose"]}
    calib = {r["token"]: r for r in db["calibrated_sensor"]}
    channel = {r["token"]: r["channel"] for r in db["sensor"]}
    sds = {}
    for sd in db["sample_data"]:
        cs = calib[sd["calibrated_sensor_token"]]
        sds[channel[cs["sensor_token"]]] = (sd, cs)
    sd, cs = sds["LIDAR_TOP"]
    E_lidar, C_lidar = ego[sd["ego_pose_token"]], make_transform(cs["translation"], cs["rotation"])
    points = np.fromfile(A_DIR / Path(sd["filename"]).name, np.float32).reshape(-1, 5)
    cams, ref = [], {}
    for ch in CAMERAS:
        csd, ccs = sds[ch]
        cams.append(CameraImage(ch, int(csd["timestamp"]), (A_DIR / Path(csd["filename"]).name).read_bytes(),
                                np.asarray(ccs["camera_intrinsic"], np.float64),
                                make_transform(ccs["translation"], ccs["rotation"]), ego[csd["ego_pose_token"]]))
        ref[ch] = np.asarray(d["images"][ch]["lidar2cam"], np.float64)
    T = E_lidar @ C_lidar
    boxes, counts = [], []
    for j, inst in enumerate(d["instances"]):
        if inst["bbox_label_3d"] not in classes:  # -1: a category outside the 10 detection classes
            continue
        x, y, z, length, width, height, yaw = inst["bbox_3d"]
        boxes.append(_upright_box(f"a-{j}", DETECTION_TO_CATEGORY[classes[inst["bbox_label_3d"]]], np.array([x, y, z]),
                                  (width, length, height), yaw, T))
        counts.append(inst["num_lidar_pts"])
    frame = LidarKeyframe(int(sd["timestamp"]), points, C_lidar, E_lidar, None, boxes, cams)
    return RealKeyframe(SCENE_A, A_LOG, frame, ref, np.array(counts))


def read_b() -> RealKeyframe:
    """Keyframe B (module docstring)."""
    info = yaml.safe_load((B_DIR / "sample0000.yaml").read_text())
    E_lidar = make_transform(info["ego2global_translation"], info["ego2global_rotation"])
    C_lidar = make_transform(info["lidar2ego_translation"], info["lidar2ego_rotation"])
    points = np.fromfile(B_DIR / "0.bin", np.float32).reshape(-1, 5)
    cams, ref = [], {}
    for ch in CAMERAS:
        c = info["cams"][ch]
        cams.append(CameraImage(ch, int(c["timestamp"]), (B_DIR / "imgs" / f"{ch}.jpg").read_bytes(),
                                np.asarray(c["cam_intrinsic"], np.float64),
                                make_transform(c["sensor2ego_translation"], c["sensor2ego_rotation"]),
                                make_transform(c["ego2global_translation"], c["ego2global_rotation"])))
        T_lidar_from_cam = make_transform(c["sensor2lidar_translation"], np.asarray(c["sensor2lidar_rotation"]))
        ref[ch] = np.linalg.inv(T_lidar_from_cam)
    boxes = []
    for j, (a, name) in enumerate(zip(info["ann_infos"][0], info["gt_names"])):
        x, y, z, length, width, height, yaw = a[:7]
        boxes.append(_upright_box(f"b-{j}", DETECTION_TO_CATEGORY[name], np.array([x, y, z]), (width, length, height),
                                  yaw, E_lidar))
    frame = LidarKeyframe(int(info["timestamp"]), points, C_lidar, E_lidar, None, boxes, cams)
    return RealKeyframe(SCENE_B, B_LOG, frame, ref, np.asarray(info["num_lidar_pts"]))


def write_camera_dataroot(out: Path, keyframes: list[RealKeyframe] | None = None) -> Path:
    """A and B (or ``keyframes``) as one nuScenes-format dataroot ``out`` (v1.0-mini tables), one
    scene each, every scene in the ``val`` split of ``splits.json``; returns ``out``."""
    kfs = keyframes if keyframes is not None else [read_a(), read_b()]
    root = write_dataroot(out, [SceneRecording([k.frame], k.scene, k.log, "singapore-onenorth",
                                               f"real nuScenes keyframe {k.scene} ({k.log})") for k in kfs])
    (root / "splits.json").write_text(json.dumps({"train": [], "val": [k.scene for k in kfs]}))
    return root


def write_sequence_dataroot(out: Path, frames: list[int] | None = None, scene: str = "real-h") -> Path:
    """H (or its ``frames``) as a LiDAR-only dataroot with lidarseg and boxes (the label generator's input)."""
    from occ_core.data.surroundocc_own import write_surroundocc_dataroot

    return write_surroundocc_dataroot(H_DIR, out, scene, frames=frames)


def write_occ3d_gt(out: Path, scene: str = G_SCENE) -> Path:
    """G as ``<out>/<scene>/<token>/labels.npz`` (the file as published); returns the file."""
    path = out / scene / G_TOKEN / "labels.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(G_FILE, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python test/real_nuscenes.py OUT``: write ``OUT/nuscenes`` (A and B), ``OUT/sequence``
    (H) and ``OUT/occ3d_gt`` (G) for running the tools on real data by hand (README, *Real data*)."""
    import argparse

    p = argparse.ArgumentParser(prog="real_nuscenes", description=main.__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to create (must not hold these three folders yet)")
    a = p.parse_args(argv)
    if needs_real.args[0]:  # the skip condition: the data is missing
        print(f"real_nuscenes: {REAL} not found (the shared real nuScenes data)")
        return 2
    cam = write_camera_dataroot(a.out / "nuscenes")
    seq = write_sequence_dataroot(a.out / "sequence")
    gt = write_occ3d_gt(a.out / "occ3d_gt")
    print(f"wrote {cam} (scenes {SCENE_A}, {SCENE_B}; split val), {seq} (scene real-h, 11 keyframes), {gt}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
