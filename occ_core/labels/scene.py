"""Sweep loading: every LiDAR scan of a scene of a nuScenes-format dataroot, with its pose,
lidarseg labels (keyframes), annotation boxes (interpolated for sweeps) and the keyframes'
camera calibration.

Frames: points, origins and boxes are in the ``scene`` frame (the global frame shifted by
:attr:`SceneData.offset`, the scene's first ego position, so float32 keeps millimetres).
Ego-body points are removed here (a configurable box in base_link, and lidarseg's
``vehicle.ego``), as are lidarseg ``noise`` points and returns closer than ``min_distance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occ_core.classes import IGNORE_LABEL, LIDARSEG_TO_OCC3D, NUSCENES_LIDARSEG_INDEX, category_to_occ3d
from occ_core.errors import OccDataError
from occ_core.geometry import heights_from_pitch, invert_transform, make_transform, quat_wxyz_to_matrix
from occ_core.labels.boxes import Boxes
from occ_core.labels.config import LabelConfig
from occ_core.paths import checked_join

_EGO = NUSCENES_LIDARSEG_INDEX["vehicle.ego"]
_NOISE = NUSCENES_LIDARSEG_INDEX["noise"]


@dataclass
class CameraCalib:
    """One keyframe camera: ``K`` (3, 3) pixels, ``T_base_from_cam`` (4, 4) optical frame ->
    the keyframe LiDAR's base_link (through both ego poses), image ``width`` x ``height``."""

    name: str
    K: np.ndarray
    T_base_from_cam: np.ndarray
    width: int
    height: int


@dataclass
class Sweep:
    """One LiDAR scan of a scene.

    Attributes:
        token: sample_data token.
        timestamp_us: sample_data timestamp.
        is_key_frame: a keyframe (has lidarseg when the dataroot has it).
        sample_token: the sample of a keyframe ("" for sweeps).
        points: (N, 3) float32, scene frame (ego body, noise and near returns removed).
        label: (N,) uint8 Occ3D class from lidarseg, IGNORE_LABEL (255) where unknown.
        origin: (3,) float64 LiDAR position, scene frame.
        T_scene_from_ego: (4, 4) float64 the ego pose (base_link -> scene).
        boxes: annotation boxes in the scene frame at this scan's time.
        cameras: the keyframe's cameras (empty for sweeps).
        T_ego_from_lidar: (4, 4) float64 the LiDAR's extrinsics (LiDAR frame -> base_link), or
            None where unknown (needed for labels in the LiDAR frame only).
    """

    token: str
    timestamp_us: int
    is_key_frame: bool
    sample_token: str
    points: np.ndarray
    label: np.ndarray
    origin: np.ndarray
    T_scene_from_ego: np.ndarray
    boxes: Boxes
    cameras: list[CameraCalib] = field(default_factory=list)
    T_ego_from_lidar: np.ndarray | None = None


@dataclass
class SceneData:
    """All LiDAR scans of one scene, in time order.

    Attributes:
        name: scene name.
        offset: (3,) float64 global position of the scene frame's origin.
        sweeps: every scan (keyframes and sweeps).
        keyframes: indices into ``sweeps`` of the keyframes, in order.
        has_lidarseg: the keyframes carry lidarseg labels.
        removed_ego: points removed as ego body (box or lidarseg class).
    """

    name: str
    offset: np.ndarray
    sweeps: list[Sweep]
    keyframes: list[int]
    has_lidarseg: bool
    removed_ego: int = 0


def _slerp(q0: np.ndarray, q1: np.ndarray, amount: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions ``[w, x, y, z]`` (the shorter arc)."""
    q0 = q0 / np.linalg.norm(q0)
    q1 = q1 / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + amount * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - amount) * theta) * q0 + np.sin(amount * theta) * q1) / np.sin(theta)


def _pose(nusc, sd: dict) -> tuple[np.ndarray, np.ndarray]:
    """(global <- ego, ego <- sensor) (4, 4) of a sample_data record."""
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    return make_transform(ep["translation"], ep["rotation"]), make_transform(cs["translation"], cs["rotation"])


def read_lidar_file(path: Path, field_name: str = "sample_data.filename") -> np.ndarray:
    """(N, 5) float32 ``[x, y, z, intensity, ring]`` of a nuScenes ``.pcd.bin`` file.

    Raises:
        OccDataError: naming the file, when it cannot be read or its size is not N x 5 float32.
    """
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as e:
        raise OccDataError(f"{path}: cannot read the LiDAR file ({e.strerror or e})") from None
    if raw.size % 5:
        raise OccDataError(f"{path}: {field_name}: expected N x 5 float32 values, got {raw.size} values")
    return raw.reshape(-1, 5)


class Annotations:
    """Boxes per sample, with the devkit's interpolation for sweeps (``NuScenes.get_boxes``):
    a box whose instance is annotated in the previous sample too is interpolated between the
    two (centre linearly, rotation by slerp) at the sweep's time; others keep the current box.

    Velocities (global frame, m/s) are the devkit's ``NuScenes.box_velocity`` of the sample's
    annotation: the centre difference between the instance's previous and next annotations
    over their time difference (one-sided at the ends of a track; NaN for a single annotation
    or neighbours more than 1.5 s away, 3 s for the centred difference). A sweep's box carries
    the velocity of its sample's annotation."""

    def __init__(self, nusc):
        self.nusc = nusc
        self.instance_ids: dict[str, int] = {}
        self._cache: dict[str, list[dict]] = {}
        self._velocity: dict[str, np.ndarray] = {}

    def velocity(self, ann: dict) -> np.ndarray:
        """(3,) float64 global-frame velocity of a sample_annotation (NaN where unknown)."""
        tok = ann["token"]
        if tok not in self._velocity:
            self._velocity[tok] = np.asarray(self.nusc.box_velocity(tok), np.float64)
        return self._velocity[tok]

    def _anns(self, sample_token: str) -> list[dict]:
        if sample_token not in self._cache:
            sample = self.nusc.get("sample", sample_token)
            self._cache[sample_token] = [self.nusc.get("sample_annotation", t) for t in sample["anns"]]
        return self._cache[sample_token]

    def _label(self, ann: dict) -> int:
        name = ann.get("category_name")
        if name is None:
            inst = self.nusc.get("instance", ann["instance_token"])
            name = self.nusc.get("category", inst["category_token"])["name"]
        try:
            return category_to_occ3d(name)
        except KeyError as e:
            raise OccDataError(f"sample_annotation {ann['token']}: {e.args[0]}") from None

    def boxes(self, sd: dict) -> Boxes:
        """Boxes (global frame) at the time of sample_data ``sd``."""
        sample = self.nusc.get("sample", sd["sample_token"])
        cur = self._anns(sd["sample_token"])
        prev = {}
        if not sd["is_key_frame"] and sample["prev"]:
            prev = {a["instance_token"]: a for a in self._anns(sample["prev"])}
            t0 = self.nusc.get("sample", sample["prev"])["timestamp"]
            t1 = sample["timestamp"]
            t = max(t0, min(t1, sd["timestamp"]))
            amount = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        centers, sizes, rots, labels, ids, vels = [], [], [], [], [], []
        for a in cur:
            label = self._label(a)
            if label == IGNORE_LABEL:
                continue
            q1 = np.asarray(a["rotation"], np.float64)
            c = np.asarray(a["translation"], np.float64)
            R = quat_wxyz_to_matrix(q1)
            p = prev.get(a["instance_token"])
            if p is not None:
                c = (1 - amount) * np.asarray(p["translation"], np.float64) + amount * c
                R = quat_wxyz_to_matrix(_slerp(np.asarray(p["rotation"], np.float64), q1, amount))
            centers.append(c)
            sizes.append(a["size"])
            rots.append(R)
            labels.append(label)
            ids.append(self.instance_ids.setdefault(a["instance_token"], len(self.instance_ids)))
            vels.append(self.velocity(a))
        if not centers:
            return Boxes.empty()
        return Boxes(np.asarray(centers), np.asarray(sizes, np.float64), np.asarray(rots), np.asarray(labels, np.uint8),
                     np.asarray(ids, np.int64), np.asarray(vels, np.float64))


def scene_lidar_records(nusc, scene_name: str) -> tuple[dict, list[dict]]:
    """The scene record and its LIDAR_TOP sample_data records in time order (keyframes and
    sweeps; sweeps that belong to another scene's samples are left out)."""
    scene = next((s for s in nusc.scene if s["name"] == scene_name), None)
    if scene is None:
        raise OccDataError(f"scenes: {scene_name!r} is not in the scene table")
    first = nusc.get("sample", scene["first_sample_token"])
    if "LIDAR_TOP" not in first["data"]:
        raise OccDataError(f"scene {scene_name}: sample {first['token']} has no LIDAR_TOP sample_data")
    sd = nusc.get("sample_data", first["data"]["LIDAR_TOP"])
    while sd["prev"]:  # sweeps before the first keyframe still belong to this scene
        prev = nusc.get("sample_data", sd["prev"])
        if nusc.get("sample", prev["sample_token"])["scene_token"] != scene["token"]:
            break
        sd = prev
    out = []
    while True:
        if nusc.get("sample", sd["sample_token"])["scene_token"] != scene["token"]:
            break
        out.append(sd)
        if not sd["next"]:
            break
        sd = nusc.get("sample_data", sd["next"])
    return scene, out


def _lidarseg_index(nusc) -> dict[str, str]:
    table = getattr(nusc, "lidarseg", None) or []
    return {r["sample_data_token"]: r["filename"] for r in table}


def _cameras(nusc, sample: dict, E_lidar: np.ndarray) -> list[CameraCalib]:
    E_inv = invert_transform(E_lidar)
    cams = []
    for ch in sorted(sample["data"]):
        sd = nusc.get("sample_data", sample["data"][ch])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        if not cs.get("camera_intrinsic") or not sd.get("width") or not sd.get("height"):
            continue
        E_cam, C_cam = _pose(nusc, sd)
        cams.append(CameraCalib(ch, np.asarray(cs["camera_intrinsic"], np.float64), E_inv @ E_cam @ C_cam,
                                int(sd["width"]), int(sd["height"])))
    return cams


def load_scene(nusc, dataroot: str | Path, scene_name: str, cfg: LabelConfig) -> SceneData:
    """Load every LiDAR scan of ``scene_name`` (see the module docstring).

    Args:
        nusc: a loaded ``nuscenes.nuscenes.NuScenes``.
        dataroot: its folder (sample_data file names are joined to it, checked).
        cfg: ego box, ``min_distance``, whether sweeps are needed (``use_sweeps``), and
            ``pose_z``: with ``pitch`` every ego pose's z is replaced by the height climbed
            along the scene's trajectory (:func:`occ_core.geometry.heights_from_pitch`; boxes
            move with the scans they were annotated on).

    Raises:
        OccDataError: a missing scene, an unreadable or malformed LiDAR or lidarseg file.
    """
    _, records = scene_lidar_records(nusc, scene_name)
    seg_files = _lidarseg_index(nusc)
    anns = Annotations(nusc)
    ego_lo, ego_hi = np.asarray(cfg.ego_box[0]), np.asarray(cfg.ego_box[1])
    offset = None
    sweeps: list[Sweep] = []
    keyframes: list[int] = []
    removed = 0
    has_seg = bool(seg_files)
    records = [sd for sd in records if sd["is_key_frame"] or cfg.use_sweeps]
    poses = [_pose(nusc, sd) for sd in records]
    dz = np.zeros(len(records))
    if cfg.pose_z == "pitch" and records:
        E_all = np.array([E for E, _ in poses])
        dz = heights_from_pitch(E_all) + E_all[0, 2, 3] - E_all[:, 2, 3]
    for sd, (E_rec, C), dz_i in zip(records, poses, dz):
        E = E_rec.copy()
        E[2, 3] += dz_i
        if offset is None:
            offset = E[:3, 3].copy()
        path = checked_join(dataroot, sd["filename"], field="sample_data.filename")
        raw = read_lidar_file(path)
        xyz = raw[:, :3].astype(np.float64)
        keep = np.linalg.norm(xyz, axis=1) >= cfg.min_distance
        ego_xyz = xyz @ C[:3, :3].T + C[:3, 3]  # base_link
        in_ego = ((ego_xyz >= ego_lo) & (ego_xyz <= ego_hi)).all(1)
        label = np.full(len(raw), IGNORE_LABEL, np.uint8)
        if sd["is_key_frame"] and sd["token"] in seg_files:
            seg_path = checked_join(dataroot, seg_files[sd["token"]], field="lidarseg.filename")
            try:
                seg = np.fromfile(seg_path, dtype=np.uint8)
            except OSError as e:
                raise OccDataError(f"{seg_path}: cannot read the lidarseg file ({e.strerror or e})") from None
            if seg.size != len(raw) or (seg.size and seg.max() >= len(LIDARSEG_TO_OCC3D)):
                raise OccDataError(f"{seg_path}: expected {len(raw)} lidarseg labels in 0..{len(LIDARSEG_TO_OCC3D) - 1}, "
                                   f"got {seg.size} (max {int(seg.max()) if seg.size else '-'})")
            in_ego |= seg == _EGO
            keep &= seg != _NOISE
            label = LIDARSEG_TO_OCC3D[seg]
        elif sd["is_key_frame"]:
            has_seg = False
        removed += int((in_ego & keep).sum())
        keep &= ~in_ego
        T_scene_from_ego = E.copy()
        T_scene_from_ego[:3, 3] -= offset
        T_scene_from_lidar = T_scene_from_ego @ C
        pts = (xyz[keep] @ T_scene_from_lidar[:3, :3].T + T_scene_from_lidar[:3, 3]).astype(np.float32)
        shift = np.eye(4)
        shift[:3, 3] = -offset
        shift[2, 3] += dz_i  # boxes were annotated on scans placed with the recorded poses
        boxes = anns.boxes(sd).transformed(shift)
        cams = []
        sample_token = ""
        if sd["is_key_frame"]:
            sample_token = sd["sample_token"]
            cams = _cameras(nusc, nusc.get("sample", sample_token), E_rec)
            keyframes.append(len(sweeps))
        sweeps.append(Sweep(sd["token"], int(sd["timestamp"]), bool(sd["is_key_frame"]), sample_token, pts,
                            label[keep], T_scene_from_lidar[:3, 3].copy(), T_scene_from_ego, boxes, cams, C))
    return SceneData(scene_name, offset if offset is not None else np.zeros(3), sweeps, keyframes, has_seg, removed)
