"""Writing nuScenes-format dataroots that nuscenes-devkit loads.

Two layers:

- :class:`NuScenesTables` (the rows of the 13 nuScenes tables plus ``lidarseg`` and
  ``panoptic``, the tables every dataroot shares, ``prev``/``next`` chains, instance rows) and
  :func:`staged_dataroot` (build the dataroot in a temporary folder beside ``out`` and rename
  it at the end, so an interrupted run never leaves a folder that loads as complete). The
  synthetic world (:mod:`occ_core.data.synthetic.dataset`) writes through them.
- :func:`write_dataroot` (scenes) and :func:`write_lidar_dataroot` (one scene): keyframes held
  in memory (:class:`LidarKeyframe`: points in the LiDAR frame, optional per-point lidarseg
  classes, LiDAR calibration, ego pose, annotation boxes in the global frame, optional camera
  images :class:`CameraImage` each with its own timestamp, calibration and ego pose), for
  recordings that come in another layout (:mod:`occ_core.data.surroundocc_own`, the real
  nuScenes keyframes of the test suite) and for tests.

Layout written (``<version>`` defaults to ``v1.0-mini``)::

    <version>/*.json                                   the 13 tables (+ lidarseg.json)
    samples/LIDAR_TOP/<log>__LIDAR_TOP__<us>.pcd.bin   float32 (N, 5) x, y, z, intensity, ring
    samples/<CAM>/<log>__<CAM>__<us>.jpg               the camera JPEGs, unchanged
    lidarseg/<version>/<sd_token>_lidarseg.bin         uint8 (N,) nuScenes-lidarseg class per point

Every frame is a keyframe (a sample with one LIDAR_TOP sample_data and one per camera, each
with its own ``ego_pose`` row at its own timestamp, as nuScenes has); there are no sweeps and
no map raster (the one ``map`` record, which the devkit needs, has an empty ``filename``). Values a LiDAR-only recording does not have
are written as explicitly unknown: ring ``-1`` when the points have 4 columns, an empty
``visibility_token`` and no attributes on annotations. ``num_lidar_pts`` counts the frame's
points inside each box (nuscenes-devkit's ``points_in_box``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from occ_core.classes import NUSCENES_LIDARSEG_CLASSES, NUSCENES_LIDARSEG_INDEX
from occ_core.cli import check_output_dir
from occ_core.errors import OccDataError
from occ_core.fileio import remove_stale_temp_dirs, temp_dir_for
from occ_core.geometry import matrix_to_quat_wxyz
from occ_core.paths import safe_component

DEFAULT_VERSION = "v1.0-mini"
#: The tables nuscenes-devkit loads, plus the lidarseg and panoptic indexes.
TABLE_NAMES: tuple[str, ...] = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
    "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg", "panoptic")
#: The 8 nuScenes attributes.
ATTRIBUTES: tuple[str, ...] = (
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
    "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
#: nuScenes visibility levels: (token, level).
VISIBILITY: tuple[tuple[str, str], ...] = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


def make_token(seed: int, *parts) -> str:
    """32 hex characters, a hash of the seed and the parts (table, keys)."""
    return hashlib.md5("/".join([str(seed), *map(str, parts)]).encode()).hexdigest()


def rounded(x, nd: int = 6) -> list[float]:
    """``x`` as a JSON list of floats rounded to ``nd`` decimals."""
    return [round(float(v), nd) for v in x]


def link(rows: list[dict]) -> None:
    """Chain ``rows`` (in time order) through their ``prev`` and ``next`` tokens, in place."""
    for a, b in zip(rows[:-1], rows[1:]):
        a["next"], b["prev"] = b["token"], a["token"]


class NuScenesTables:
    """Rows of every table, ``rows[name]`` (lists of dicts, in the devkit's field names)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {n: [] for n in TABLE_NAMES}

    def add_shared(self, seed: int, channels: dict[str, str], origin: str) -> None:
        """The tables every scene shares: the 32 lidarseg categories (with their ``index``), the
        nuScenes attributes and visibility levels, and one sensor per ``channel -> modality``;
        descriptions read ``"<origin> <name>"``."""
        for i, name in enumerate(NUSCENES_LIDARSEG_CLASSES):
            self.rows["category"].append({"token": make_token(seed, "category", name), "name": name,
                                          "description": f"{origin} {name}", "index": i})
        for name in ATTRIBUTES:
            self.rows["attribute"].append({"token": make_token(seed, "attribute", name), "name": name,
                                           "description": f"{origin} {name}"})
        for tok, level in VISIBILITY:
            self.rows["visibility"].append({"token": tok, "level": level, "description":
                                            f"visibility of whole object is between {level[1:].replace('-', ' and ')} %"})
        for ch, modality in channels.items():
            self.rows["sensor"].append({"token": make_token(seed, "sensor", ch), "channel": ch, "modality": modality})

    def add_instance(self, token: str, category_token: str, annotations: list[dict]) -> None:
        """Chain one object's ``annotations`` (sample_annotation rows in time order) and add
        them and their instance row."""
        link(annotations)
        self.rows["sample_annotation"].extend(annotations)
        self.rows["instance"].append({"token": token, "category_token": category_token,
                                      "nbr_annotations": len(annotations),
                                      "first_annotation_token": annotations[0]["token"],
                                      "last_annotation_token": annotations[-1]["token"]})

    def write(self, folder: Path, names: Sequence[str] | None = None) -> None:
        """``<folder>/<table>.json`` for every table in ``names`` (default: all)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in names if names is not None else TABLE_NAMES:
            (folder / f"{name}.json").write_text(json.dumps(self.rows[name], indent=1))


def _prepare_out(out: Path, overwrite: bool, version: str) -> None:
    if out.exists() and not out.is_dir():
        raise OccDataError(f"{out}: output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OccDataError(f"{out}: output folder is not empty (pass --overwrite to replace it)")
        if not (out / version).is_dir():
            # --overwrite deletes the folder: only ever do that to a dataset
            raise OccDataError(f"{out}: refusing to overwrite a non-empty folder that holds no {version}/ dataset")
    # the dataset is built beside <out> and renamed: the parent must take new entries (a real
    # write probe, as os.access says yes to root on read-only file systems such as /sys)
    check_output_dir(out.parent, "--out")


@contextlib.contextmanager
def staged_dataroot(out: str | Path, overwrite: bool = False, version: str = DEFAULT_VERSION) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; when the block succeeds it replaces
    ``out``, when it fails it is removed (``out`` untouched).

    Raises:
        OccDataError: ``out`` is a file; a non-empty folder without ``overwrite``, or one that
            holds no ``<version>/`` dataset (never deleted); its parent cannot be written.
    """
    out = Path(out).resolve()
    _prepare_out(out, overwrite, version)
    remove_stale_temp_dirs(out)
    tmp = temp_dir_for(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f"{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------ LiDAR-only scenes from memory
@dataclass
class BoxAnnotation:
    """One annotated object in one keyframe, nuScenes convention, global frame.

    Attributes:
        instance: a key naming the object; the same key in several keyframes is the same object
            (one instance row, its annotations chained in time order).
        category: nuScenes category name (one of the 32 lidarseg class names).
        center: (3,) metres, the box centre.
        wlh: (3,) metres: width (along the box's y), length (along its x, the heading), height.
        rotation: (4,) quaternion ``[w, x, y, z]``, box frame -> global.
    """

    instance: str
    category: str
    center: np.ndarray
    wlh: np.ndarray
    rotation: np.ndarray


@dataclass
class CameraImage:
    """One camera image of a keyframe, exposed at its own time (nuScenes cameras fire up to
    ~50 ms off the LiDAR; the car moves in between).

    Attributes:
        channel: sensor channel, e.g. ``CAM_FRONT`` (a single file name).
        timestamp_us: microseconds, the exposure time.
        jpeg: the JPEG file's bytes, written unchanged.
        intrinsics: (3, 3) pinhole K of the stored image, pixels.
        T_ego_from_cam: (4, 4) camera (optical: x right, y down, z forward) -> base_link.
        T_global_from_ego: (4, 4) base_link -> global at ``timestamp_us`` (its own ego_pose row).
    """

    channel: str
    timestamp_us: int
    jpeg: bytes
    intrinsics: np.ndarray
    T_ego_from_cam: np.ndarray
    T_global_from_ego: np.ndarray


@dataclass
class LidarKeyframe:
    """One LiDAR keyframe held in memory, with the camera images taken with it (optional).

    Attributes:
        timestamp_us: microseconds; strictly increasing along a scene.
        points: (N, 4) ``[x, y, z, intensity]`` or (N, 5) ``[..., ring]`` float, LiDAR frame.
        T_ego_from_lidar: (4, 4) LiDAR -> base_link (calibrated_sensor).
        T_global_from_ego: (4, 4) base_link -> global at the LiDAR time (ego_pose).
        lidarseg: (N,) uint8 nuScenes-lidarseg class (0-31) per point, or None.
        boxes: the keyframe's annotations.
        cameras: the camera images of this keyframe (one per channel), each with its own time
            and ego pose.
    """

    timestamp_us: int
    points: np.ndarray
    T_ego_from_lidar: np.ndarray
    T_global_from_ego: np.ndarray
    lidarseg: np.ndarray | None = None
    boxes: list[BoxAnnotation] = field(default_factory=list)
    cameras: list[CameraImage] = field(default_factory=list)


def _check_frame(i: int, fr: LidarKeyframe, prev_ts: int | None) -> np.ndarray:
    """(N, 5) float32 points of a checked frame."""
    where = f"frames[{i}]"
    pts = np.asarray(fr.points)
    if pts.ndim != 2 or pts.shape[1] not in (4, 5) or not np.issubdtype(pts.dtype, np.floating):
        raise OccDataError(f"{where}.points: expected an (N, 4) or (N, 5) float array, got {pts.dtype} {pts.shape}")
    if not np.isfinite(pts[:, :3]).all():
        raise OccDataError(f"{where}.points: expected finite x, y, z")
    for name in ("T_ego_from_lidar", "T_global_from_ego"):
        T = np.asarray(getattr(fr, name), np.float64)
        if T.shape != (4, 4) or not np.isfinite(T).all() or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5):
            raise OccDataError(f"{where}.{name}: expected a (4, 4) rigid transform, got shape {T.shape}")
    if prev_ts is not None and fr.timestamp_us <= prev_ts:
        raise OccDataError(f"{where}.timestamp_us: expected > {prev_ts} (strictly increasing), got {fr.timestamp_us}")
    if fr.lidarseg is not None:
        seg = np.asarray(fr.lidarseg)
        if seg.shape != (len(pts),) or (seg.size and (seg.min() < 0 or seg.max() >= len(NUSCENES_LIDARSEG_CLASSES))):
            raise OccDataError(f"{where}.lidarseg: expected ({len(pts)},) classes in 0..{len(NUSCENES_LIDARSEG_CLASSES) - 1}, "
                               f"got shape {seg.shape}" + (f", range {seg.min()}..{seg.max()}" if seg.size else ""))
    for j, b in enumerate(fr.boxes):
        if b.category not in NUSCENES_LIDARSEG_INDEX:
            raise OccDataError(f"{where}.boxes[{j}].category: expected a nuScenes category name, got {b.category!r}")
        if np.asarray(b.center).shape != (3,) or np.asarray(b.wlh).shape != (3,) or not (np.asarray(b.wlh) > 0).all():
            raise OccDataError(f"{where}.boxes[{j}]: expected center (3,) and wlh (3,) > 0")
        q = np.asarray(b.rotation, np.float64)
        if q.shape != (4,) or not abs(np.linalg.norm(q) - 1.0) < 1e-4:
            raise OccDataError(f"{where}.boxes[{j}].rotation: expected a unit quaternion [w, x, y, z], got {q}")
    if pts.shape[1] == 4:
        pts = np.concatenate([pts, np.full((len(pts), 1), -1.0)], axis=1)  # ring unknown
    return np.ascontiguousarray(pts, dtype=np.float32)


def _num_points_in_boxes(points_global: np.ndarray, boxes: list[BoxAnnotation]) -> list[int]:
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion

    return [int(points_in_box(Box(b.center, b.wlh, Quaternion(b.rotation)), points_global.T).sum()) for b in boxes]


@dataclass
class SceneRecording:
    """One scene to write: its keyframes (in time order) and names.

    Attributes:
        frames: the keyframes.
        scene_name, log_name: single file names (checked).
        location, description: free text for the log and scene rows.
    """

    frames: Sequence[LidarKeyframe]
    scene_name: str = "scene-0001"
    log_name: str = "log-0001"
    location: str = "unknown"
    description: str = ""


def write_lidar_dataroot(out: str | Path, frames: Sequence[LidarKeyframe], scene_name: str = "scene-0001",
                         log_name: str = "log-0001", location: str = "unknown", description: str = "",
                         version: str = DEFAULT_VERSION, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``frames`` (one scene, in time order) as the dataroot ``out`` (see the module
    docstring); returns ``out`` resolved. :func:`write_dataroot` with one scene."""
    return write_dataroot(out, [SceneRecording(frames, scene_name, log_name, location, description)], version,
                          seed, overwrite)


def write_dataroot(out: str | Path, scenes: Sequence[SceneRecording], version: str = DEFAULT_VERSION,
                   seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``scenes`` as the dataroot ``out`` (see the module docstring); returns ``out`` resolved.
    Tokens are derived from ``seed`` and the names, so the same input gives the same files. The
    dataroot appears whole or not at all (:func:`staged_dataroot`).

    Raises:
        OccDataError: naming the scene, frame and field of malformed input (shapes, non-rigid
            transforms, timestamps out of order, lidarseg classes, unknown categories, an
            instance whose category changes, a camera image that is not a JPEG or a channel
            repeated in a keyframe), two scenes of one name, or ``out`` as :func:`staged_dataroot` says.
    """
    safe_component(version, "version")
    if not scenes:
        raise OccDataError("scenes: expected at least one scene, got none")
    names = [sc.scene_name for sc in scenes]
    if len(set(names)) != len(names):
        raise OccDataError(f"scenes: scene names must differ, got {names}")
    checked = [_check_scene(sc, len(scenes) > 1) for sc in scenes]
    channels = {"LIDAR_TOP": "lidar"}
    for sc in scenes:
        for fr in sc.frames:
            channels.update({cam.channel: "camera" for cam in fr.cameras})
    tab = NuScenesTables()
    tab.add_shared(seed, channels, "nuScenes")
    with staged_dataroot(out, overwrite, version) as tmp:
        (tmp / "samples" / "LIDAR_TOP").mkdir(parents=True)
        for sc, (points, categories, images) in zip(scenes, checked):
            _write_scene(tab, tmp, sc, points, categories, images, version, seed)
        names = [n for n in TABLE_NAMES if n != "panoptic" and (n != "lidarseg" or tab.rows["lidarseg"])]
        tab.write(tmp / version, names)
    return Path(out).resolve()


def _check_scene(sc: SceneRecording, prefix: bool) -> tuple[list[np.ndarray], dict[str, str], list[list[tuple[int, int]]]]:
    """The checked points of every frame, the category of every instance, and each camera's (H, W)."""
    from occ_core.data.transforms import read_image_header

    where = f"scene {sc.scene_name}: " if prefix else ""
    safe_component(sc.scene_name, "scene_name")
    safe_component(sc.log_name, "log_name")
    if not sc.frames:
        raise OccDataError(f"{where}frames: expected at least one keyframe, got none")
    points, prev_ts, sizes = [], None, []
    for i, fr in enumerate(sc.frames):
        try:
            points.append(_check_frame(i, fr, prev_ts))
        except OccDataError as e:
            raise OccDataError(f"{where}{e}") from None
        prev_ts = fr.timestamp_us
        seen, hw = set(), []
        for j, cam in enumerate(fr.cameras):
            field_ = f"{where}frames[{i}].cameras[{j}]"
            safe_component(cam.channel, f"{field_}.channel")
            if cam.channel in seen or cam.channel == "LIDAR_TOP":
                raise OccDataError(f"{field_}.channel: {cam.channel!r} appears twice in the keyframe")
            seen.add(cam.channel)
            header = read_image_header(cam.jpeg, f"{field_}.jpeg")
            if header.kind != "jpeg":
                raise OccDataError(f"{field_}.jpeg: expected a JPEG (nuScenes stores .jpg), got a {header.kind}")
            K = np.asarray(cam.intrinsics, np.float64)
            if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise OccDataError(f"{field_}.intrinsics: expected a (3, 3) pinhole K with fx, fy > 0")
            for name in ("T_ego_from_cam", "T_global_from_ego"):
                T = np.asarray(getattr(cam, name), np.float64)
                if T.shape != (4, 4) or not np.isfinite(T).all() or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3),
                                                                                    atol=1e-5):
                    raise OccDataError(f"{field_}.{name}: expected a (4, 4) rigid transform, got shape {T.shape}")
            hw.append((header.height, header.width))
        sizes.append(hw)
    categories: dict[str, str] = {}
    for i, fr in enumerate(sc.frames):
        for j, b in enumerate(fr.boxes):
            if categories.setdefault(b.instance, b.category) != b.category:
                raise OccDataError(f"{where}frames[{i}].boxes[{j}].category: instance {b.instance!r} was "
                                   f"{categories[b.instance]!r} in an earlier frame, got {b.category!r}")
    return points, categories, sizes


def _write_scene(tab: NuScenesTables, tmp: Path, sc: SceneRecording, points: list[np.ndarray],
                 categories: dict[str, str], sizes: list[list[tuple[int, int]]], version: str, seed: int) -> None:
    """Add one checked scene's rows to ``tab`` and its files under ``tmp``."""
    frames, scene_name, log_name = sc.frames, sc.scene_name, sc.log_name
    tok = lambda *parts: make_token(seed, scene_name, *parts)  # noqa: E731
    log_tok, scene_tok = tok("log"), tok("scene")
    tab.rows["log"].append({"token": log_tok, "logfile": log_name, "vehicle": "unknown", "location": sc.location,
                            "date_captured": ""})
    # the devkit indexes maps by log and needs one record; there is no raster (empty filename)
    tab.rows["map"].append({"token": tok("map"), "log_tokens": [log_tok], "category": "semantic_prior", "filename": ""})
    calib: dict[bytes, str] = {}

    def calibration(channel: str, T: np.ndarray, K: list) -> str:
        key = channel.encode() + np.round(T, 9).tobytes() + np.round(np.asarray(K, np.float64), 9).tobytes()
        if key not in calib:
            calib[key] = tok("calibrated_sensor", len(calib))
            tab.rows["calibrated_sensor"].append({
                "token": calib[key], "sensor_token": make_token(seed, "sensor", channel),
                "translation": rounded(T[:3, 3]), "rotation": rounded(matrix_to_quat_wxyz(T[:3, :3]), 9),
                "camera_intrinsic": [rounded(row, 9) for row in np.asarray(K, np.float64)] if len(K) else []})
        return calib[key]

    def ego_pose(key: tuple, timestamp_us: int, E: np.ndarray) -> str:
        token = tok("ego_pose", *key)
        tab.rows["ego_pose"].append({"token": token, "timestamp": int(timestamp_us),
                                     "rotation": rounded(matrix_to_quat_wxyz(E[:3, :3]), 9),
                                     "translation": rounded(E[:3, 3])})
        return token

    sample_toks = [tok("sample", k) for k in range(len(frames))]
    sd_rows: dict[str, list[dict]] = {}
    anns: dict[str, list[dict]] = {}
    for k, (fr, pts) in enumerate(zip(frames, points)):
        C = np.asarray(fr.T_ego_from_lidar, np.float64)
        E = np.asarray(fr.T_global_from_ego, np.float64)
        sd_tok = tok("sample_data", k)
        tab.rows["sample"].append({"token": sample_toks[k], "timestamp": int(fr.timestamp_us),
                                   "prev": sample_toks[k - 1] if k else "",
                                   "next": sample_toks[k + 1] if k + 1 < len(frames) else "",
                                   "scene_token": scene_tok})
        fn = f"samples/LIDAR_TOP/{log_name}__LIDAR_TOP__{int(fr.timestamp_us)}.pcd.bin"
        (tmp / fn).write_bytes(pts.tobytes())
        sd_rows.setdefault("LIDAR_TOP", []).append({
            "token": sd_tok, "sample_token": sample_toks[k], "ego_pose_token": ego_pose((k,), fr.timestamp_us, E),
            "calibrated_sensor_token": calibration("LIDAR_TOP", C, []), "timestamp": int(fr.timestamp_us),
            "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0, "filename": fn, "prev": "", "next": ""})
        # each camera at its own time: its own ego_pose record (the car moves between exposures)
        for cam, (h, w) in zip(fr.cameras, sizes[k]):
            cfn = f"samples/{cam.channel}/{log_name}__{cam.channel}__{int(cam.timestamp_us)}.jpg"
            (tmp / "samples" / cam.channel).mkdir(parents=True, exist_ok=True)
            (tmp / cfn).write_bytes(cam.jpeg)
            sd_rows.setdefault(cam.channel, []).append({
                "token": tok("sample_data", cam.channel, k), "sample_token": sample_toks[k],
                "ego_pose_token": ego_pose((cam.channel, k), cam.timestamp_us, np.asarray(cam.T_global_from_ego, np.float64)),
                "calibrated_sensor_token": calibration(cam.channel, np.asarray(cam.T_ego_from_cam, np.float64),
                                                       cam.intrinsics),
                "timestamp": int(cam.timestamp_us), "fileformat": "jpg", "is_key_frame": True, "height": int(h),
                "width": int(w), "filename": cfn, "prev": "", "next": ""})
        if fr.lidarseg is not None:
            lfn = f"lidarseg/{version}/{sd_tok}_lidarseg.bin"
            (tmp / "lidarseg" / version).mkdir(parents=True, exist_ok=True)
            (tmp / lfn).write_bytes(np.asarray(fr.lidarseg, np.uint8).tobytes())
            tab.rows["lidarseg"].append({"token": sd_tok, "sample_data_token": sd_tok, "filename": lfn})
        T_global_from_lidar = E @ C
        p_global = pts[:, :3].astype(np.float64) @ T_global_from_lidar[:3, :3].T + T_global_from_lidar[:3, 3]
        for b, n in zip(fr.boxes, _num_points_in_boxes(p_global, fr.boxes)):
            anns.setdefault(b.instance, []).append({
                "token": tok("sample_annotation", b.instance, k), "sample_token": sample_toks[k],
                "instance_token": tok("instance", b.instance), "visibility_token": "", "attribute_tokens": [],
                "translation": rounded(b.center), "size": rounded(b.wlh),
                "rotation": rounded(np.asarray(b.rotation, np.float64) / np.linalg.norm(b.rotation), 9),
                "prev": "", "next": "", "num_lidar_pts": n, "num_radar_pts": 0})
    for rows in sd_rows.values():
        link(rows)
        tab.rows["sample_data"].extend(rows)
    for inst, rows in anns.items():
        tab.add_instance(tok("instance", inst), make_token(seed, "category", categories[inst]), rows)
    tab.rows["scene"].append({"token": scene_tok, "log_token": log_tok, "nbr_samples": len(frames),
                              "first_sample_token": sample_toks[0], "last_sample_token": sample_toks[-1],
                              "name": scene_name, "description": sc.description})
