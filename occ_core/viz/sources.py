"""Where ``occ-render`` reads grids from: label/prediction files and rosbag2 ``/occupancy/voxels``;
for ``--compare``, the keyframes, camera images and ground truth of a nuScenes-format dataroot
and the predictions that belong to them (``<token>.npz`` files, or bag messages matched by stamp).

No ROS imports: bags are read with ``rosbags`` and the voxel PointCloud2 is decoded with numpy
from its ``fields`` (x, y, z and a label field, any PointField datatype, either byte order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from occ_core.classes import OCC3D_FREE
from occ_core.errors import OccDataError
from occ_core.formats._npz import load_npz
from occ_core.formats.occ3d import PRED_KEYS
from occ_core.grid import GridSpec
from occ_core.viz.compare import CAMERA_LAYOUT, FrameInfo

#: sensor_msgs/PointField datatypes.
_POINTFIELD = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


@dataclass
class NamedGrid:
    """A grid to render: (X, Y, Z) uint8 labels, a name for its output files and, from a bag, the
    message's header stamp (ns)."""

    name: str
    labels: np.ndarray
    stamp_ns: int | None = None


def read_grid_file(path: str | Path, spec: GridSpec, mask: str = "none", free: int = OCC3D_FREE) -> np.ndarray:
    """(X, Y, Z) uint8 labels of an Occ3D ``labels.npz`` / prediction ``.npz`` (``semantics`` or
    ``pred``) or a bare ``.npy``; ``mask`` = ``camera`` / ``lidar`` sets voxels outside
    ``mask_<mask>`` (a GT file's) to free.

    Raises:
        OccDataError: naming the file, for a missing key or mask, a wrong shape or dtype.
    """
    path = Path(path)
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise OccDataError(f"{path}: not a readable .npy array ({e})") from None
        arrays = {}
        key = "array"
    else:
        arrays = load_npz(path)
        key = next((k for k in PRED_KEYS if k in arrays), None)
        if key is None:
            raise OccDataError(f"{path}: expected a label array under one of {list(PRED_KEYS)}, found {sorted(arrays)}")
        labels = arrays[key]
    if labels.shape != tuple(spec.dims) or labels.dtype != np.uint8:
        raise OccDataError(f"{path}: {key} must be uint8 of shape {tuple(spec.dims)} (grid {spec.name!r}), "
                           f"got {labels.dtype} {labels.shape}")
    if mask != "none":
        m = arrays.get(f"mask_{mask}")
        if m is None or m.shape != labels.shape:
            raise OccDataError(f"{path}: --mask {mask} needs a mask_{mask} array of shape {labels.shape} (a GT labels.npz)")
        labels = np.where(m.astype(bool), labels, np.uint8(free)).astype(np.uint8)
    return labels


def voxel_cloud_to_grid(msg: Any, spec: GridSpec, label_field: str = "label", free: int = OCC3D_FREE) -> np.ndarray:
    """The (X, Y, Z) uint8 grid of a voxel PointCloud2 (rosbags or rclpy message); other voxels free.

    Raises:
        OccDataError: a cloud without x, y, z and ``label_field`` or with a data length that does
            not match its size.
    """
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in ("x", "y", "z", label_field) if n not in fields]
    if missing:
        raise OccDataError(f"PointCloud2.fields: missing {missing}; the cloud has {sorted(fields)}")
    order = ">" if msg.is_bigendian else "<"
    names = ["x", "y", "z", label_field]
    try:
        dtype = np.dtype({"names": names, "formats": [order + _POINTFIELD[int(fields[n].datatype)] for n in names],
                          "offsets": [int(fields[n].offset) for n in names], "itemsize": int(msg.point_step)})
    except (KeyError, ValueError) as e:
        raise OccDataError(f"PointCloud2.fields: unsupported layout ({e})") from None
    n = int(msg.width) * int(msg.height)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    if int(msg.row_step) != int(msg.width) * int(msg.point_step) or data.size != n * int(msg.point_step):
        raise OccDataError(f"PointCloud2.data: expected {n} packed points of {msg.point_step} bytes, got {data.size} bytes")
    pts = np.frombuffer(data.tobytes(), dtype=dtype, count=n)
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float64)
    idx, inside = spec.points_to_voxels(xyz)
    grid = np.full(spec.dims, free, dtype=np.uint8)
    idx = idx[inside]
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = pts[label_field][inside].astype(np.uint8)
    return grid


def bag_grids(path: str | Path, spec: GridSpec, topic: str = "/occupancy/voxels", every: int = 1) -> Iterator[NamedGrid]:
    """Every ``every``-th voxel cloud on ``topic`` of a rosbag2 (folder or .mcap/.db3), as grids named by stamp.

    Raises:
        OccDataError: an unreadable bag or one without ``topic``.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except Exception as e:  # rosbags raises its own error types for every kind of bad bag
        raise OccDataError(f"{path}: not a readable rosbag2 ({type(e).__name__}: {e})") from None
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise OccDataError(f"{path}: no topic {topic!r}; the bag has {sorted({c.topic for c in reader.connections})}")
        for i, (conn, _t, raw) in enumerate(reader.messages(connections=conns)):
            if i % every:
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            yield NamedGrid(f"{path.stem}_{stamp}", voxel_cloud_to_grid(msg, spec), stamp)
    finally:
        reader.close()


def is_bag(path: str | Path) -> bool:
    """A rosbag2 folder (``metadata.yaml``) or a single ``.mcap`` / ``.db3`` file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".mcap", ".db3")


#: A bag message matches the keyframe whose LIDAR_TOP stamp is nearest, within this (the node
#: stamps its output with its LiDAR input's stamp; sweeps are 50 ms apart at 20 Hz).
MATCH_TOLERANCE_NS = 20_000_000


def keyframes(nusc: Any, scenes: Sequence[str] | None = None) -> list[FrameInfo]:
    """The keyframes of ``scenes`` (default: every scene, by name), in time order per scene.

    Args:
        nusc: a loaded ``nuscenes.nuscenes.NuScenes``.

    Raises:
        OccDataError: a scene that is not in the scene table, or a scene/token that cannot be a
            file name (:func:`occ_core.paths.safe_component`).
    """
    from occ_core.paths import safe_component

    by_name = {s["name"]: s for s in nusc.scene}
    names = sorted(by_name) if scenes is None else list(scenes)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise OccDataError(f"--scenes: {missing} not in the scene table (it has {sorted(by_name)})")
    frames = []
    for name in names:
        safe_component(name, "scene.name")
        tok, i, start = by_name[name]["first_sample_token"], 0, None
        while tok:
            sample = nusc.get("sample", safe_component(tok, f"sample.token (scene {name})"))
            start = sample["timestamp"] if start is None else start
            lidar = sample["data"].get("LIDAR_TOP")
            stamp = int(nusc.get("sample_data", lidar)["timestamp"]) * 1000 if lidar else int(sample["timestamp"]) * 1000
            frames.append(FrameInfo(name, i, tok, int(sample["timestamp"]), int(start), stamp))
            tok, i = sample["next"], i + 1
    return frames


def camera_images(nusc: Any, dataroot: str | Path, token: str, tile_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """The keyframe images of the six cameras of sample ``token``, decoded at about ``tile_hw``
    (JPEG DCT reduction, :func:`occ_core.data.transforms.decode_image`): name -> (H, W, 3) uint8 BGR.
    A camera the sample lacks is left out.

    Raises:
        OccDataError: an image file that is missing or does not decode (naming it).
    """
    from occ_core.data.nuscenes_dataset import data_path
    from occ_core.data.transforms import decode_image

    sample = nusc.get("sample", token)
    out = {}
    for name in (n for row in CAMERA_LAYOUT for n in row):
        if name not in sample["data"]:
            continue
        path = data_path(Path(dataroot), nusc.get("sample_data", sample["data"][name]))
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise OccDataError(f"{path}: cannot read the {name} image ({e})") from None
        rgb = decode_image(raw, tile_hw, where=str(path)).image
        out[name] = np.ascontiguousarray(rgb[:, :, ::-1])
    return out


def folder_predictions(folder: str | Path, frames: Sequence[FrameInfo]) -> list[tuple[FrameInfo, Path]]:
    """The keyframes that have a prediction ``<folder>/<token>.npz``, with its path."""
    from occ_core.formats.occ3d import prediction_path

    return [(f, prediction_path(folder, f.token)) for f in frames if prediction_path(folder, f.token).is_file()]


def bag_predictions(path: str | Path, frames: Sequence[FrameInfo], spec: GridSpec, topic: str = "/occupancy/voxels",
                    every: int = 1, tolerance_ns: int = MATCH_TOLERANCE_NS) -> tuple[list[tuple[FrameInfo, np.ndarray]], int]:
    """The voxel clouds of a bag matched to keyframes by stamp: each message goes to the keyframe
    with the nearest LIDAR_TOP stamp within ``tolerance_ns``; of several messages for one keyframe
    the nearest wins.

    Returns:
        (pairs in keyframe order, number of messages that matched no keyframe).
    """
    stamps = np.array([f.lidar_stamp_ns for f in frames], dtype=np.int64)
    order = np.argsort(stamps, kind="stable")
    best: dict[int, tuple[int, np.ndarray]] = {}
    unmatched = 0
    for g in bag_grids(path, spec, topic, every):
        if not len(stamps):
            unmatched += 1
            continue
        k = int(np.searchsorted(stamps[order], g.stamp_ns))
        cands = [int(order[j]) for j in (k - 1, k) if 0 <= j < len(order)]
        i = min(cands, key=lambda c: abs(int(stamps[c]) - g.stamp_ns))
        d = abs(int(stamps[i]) - g.stamp_ns)
        if d > tolerance_ns:
            unmatched += 1
        elif i not in best or d < best[i][0]:
            best[i] = (d, g.labels)
    return [(frames[i], best[i][1]) for i in sorted(best)], unmatched
