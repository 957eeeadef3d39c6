"""SurroundOcc's own-data layout -> a nuScenes-format dataroot that ``occ-label`` reads.

SurroundOcc's ``tools/generate_occupancy_with_own_data`` takes a LiDAR sequence as numbered
``.npy`` files (frames ``i = 0 .. n-1``, one keyframe each)::

    pc/pc{i}.npy                        float (N, 4) x, y, z, intensity, LiDAR frame
    pc_seman/pc_seman_{i}.npy           float (N, 4) x, y, z, Occ3D class 0-16 (same points)
    bbox/bbox{i}.npy                    float (M, 7) [x, y, z_bottom, d0, d1, d2, rz], LiDAR frame
    bbox/object_category{i}.npy         int (M,) Occ3D class of each box
    bbox/boxes_token{i}.npy             str (M,) one token per object
    calib/lidar_calibrated_sensor{i}.npy  pickled dict: LiDAR -> ego ``translation``, ``rotation`` [w, x, y, z]
    pose/lidar_ego_pose{i}.npy          pickled dict: ego -> global at the LiDAR time, ``timestamp`` (us)

Conventions, checked on the real n015-2018-07-18-11-07-57 sequence (``bench/labels_real.py``):

- **Boxes** are SurroundOcc's enlarged mmcv boxes made from nuScenes boxes in the LiDAR frame
  (its ``generate_occupancy_nuscenes.py``): ``rz = yaw + pi/2``, ``(d0, d1, d2) = 1.1 x (w, l,
  h)`` with ``d0`` (the width) along ``rz``, and ``z_bottom`` = the box bottom lowered by
  0.1 m. :func:`read_surroundocc_own` undoes that (``box_scale``, ``box_drop``) and returns
  nuScenes boxes (centre, ``wlh``, rotation) in the global frame, upright there as nuScenes
  annotations are (SurroundOcc kept only the yaw in the LiDAR frame, which the ego's roll and
  pitch tilt by a few degrees); occ-label then enlarges them itself (``LabelConfig.box_scale``).
- **Tokens** name objects: the same token in several frames is the same object (constant
  category and size there), i.e. instance tokens, not per-frame sample_annotation tokens.
- **Labels** are Occ3D classes. Each is written as one representative nuScenes-lidarseg class
  (:data:`occ_core.classes.OCC3D_TO_LIDARSEG`), which occ-label's ``LIDARSEG_TO_OCC3D`` maps
  back exactly. Class 0 ``others`` also holds lidarseg ``noise`` and ``vehicle.ego`` (SurroundOcc
  maps both to 0): it is written as ``static.other`` (kept, as ``others``), so noise cannot be
  told apart and stays ``others``; the ego body is removed by occ-label's ego box
  (``LabelConfig.ego_box``) and points within ``min_distance`` of the sensor.
- **Points** keep their intensity; the ring is unknown (``-1``).
- **Ego poses** keep z = 0 (nuScenes) while pitching with the road: on this sequence the car
  drives down a 2.9 degree slope, and keyframes 5 s apart put the same road 2 m apart in
  height. ``occ-label --pose-z pitch`` (``LabelConfig.pose_z``) rebuilds z from the pitch.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OCC3D_TO_LIDARSEG, OCC3D_TO_LIDARSEG_NAME
from occ_core.errors import OccDataError
from occ_core.geometry import make_transform
from occ_core.data.nuscenes_writer import BoxAnnotation, LidarKeyframe, write_lidar_dataroot

#: SurroundOcc enlarges boxes by this factor in every dimension ...
SURROUNDOCC_BOX_SCALE = 1.1
#: ... and lowers their bottom by this many metres.
SURROUNDOCC_BOX_DROP = 0.1


def count_frames(folder: str | Path) -> int:
    """Number of frames ``0 .. n-1`` (``pc/pc{i}.npy`` files, checked to be contiguous)."""
    folder = Path(folder)
    idx = sorted(int(m.group(1)) for p in (folder / "pc").glob("pc*.npy") if (m := re.fullmatch(r"pc(\d+)\.npy", p.name)))
    if not idx:
        raise OccDataError(f"{folder / 'pc'}: expected pc0.npy, pc1.npy, ... (SurroundOcc own-data layout), found none")
    if idx != list(range(len(idx))):
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise OccDataError(f"{folder / 'pc'}: expected frames 0..{idx[-1]} without gaps, missing {missing}")
    return len(idx)


def _load(path: Path, what: str, pickled: bool = False):
    try:
        arr = np.load(path, allow_pickle=pickled)
    except FileNotFoundError:
        raise OccDataError(f"{path}: missing ({what})") from None
    except (OSError, ValueError) as e:
        raise OccDataError(f"{path}: cannot read the {what} ({e})") from None
    if pickled:
        try:
            arr = arr.item()
        except ValueError:
            raise OccDataError(f"{path}: expected a pickled dict ({what}), got an array of shape {arr.shape}") from None
        if not isinstance(arr, dict):
            raise OccDataError(f"{path}: expected a pickled dict ({what}), got {type(arr).__name__}")
    return arr


def _transform(rec: dict, path: Path) -> np.ndarray:
    try:
        t = np.asarray(rec["translation"], np.float64)
        q = np.asarray(rec["rotation"], np.float64)
    except KeyError as e:
        raise OccDataError(f"{path}: expected keys 'translation' and 'rotation' [w, x, y, z], missing {e}") from None
    if t.shape != (3,) or q.shape != (4,) or not abs(np.linalg.norm(q) - 1) < 1e-3:
        raise OccDataError(f"{path}: expected translation (3,) and a unit rotation quaternion (4,) [w, x, y, z]")
    return make_transform(t, q)


def surroundocc_boxes_to_nuscenes(boxes: np.ndarray, box_scale: float = SURROUNDOCC_BOX_SCALE,
                                  box_drop: float = SURROUNDOCC_BOX_DROP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SurroundOcc boxes -> nuScenes boxes, same frame.

    Args:
        boxes: (M, 7) ``[x, y, z_bottom, d0, d1, d2, rz]`` (see the module docstring).

    Returns:
        centre (M, 3), ``wlh`` (M, 3), rotation (M, 3, 3) box frame -> this frame (length along
        the box's x, heading ``rz - pi/2``).
    """
    b = np.asarray(boxes, np.float64)
    wlh = b[:, 3:6] / box_scale
    center = np.stack([b[:, 0], b[:, 1], b[:, 2] + box_drop + wlh[:, 2] / 2], 1)
    heading = b[:, 6] - np.pi / 2
    c, s = np.cos(heading), np.sin(heading)
    R = np.zeros((len(b), 3, 3))
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1.0
    return center, wlh, R


def read_surroundocc_own(folder: str | Path, frames: Sequence[int] | None = None,
                         box_scale: float = SURROUNDOCC_BOX_SCALE, box_drop: float = SURROUNDOCC_BOX_DROP,
                         ) -> list[LidarKeyframe]:
    """The frames of a SurroundOcc own-data folder as :class:`LidarKeyframe` s (module docstring).

    Args:
        frames: indices to read (default: all, in order).

    Raises:
        OccDataError: naming the file: missing or unreadable files, wrong shapes, points of
            ``pc`` and ``pc_seman`` that differ, labels outside 0-16, unknown box categories,
            a token repeated within a frame.
    """
    folder = Path(folder)
    n = count_frames(folder)
    out = []
    for i in (range(n) if frames is None else frames):
        if not 0 <= i < n:
            raise OccDataError(f"frames: expected indices in 0..{n - 1} ({folder}), got {i}")
        p_pc, p_sem = folder / "pc" / f"pc{i}.npy", folder / "pc_seman" / f"pc_seman_{i}.npy"
        pc = np.asarray(_load(p_pc, "points"))
        sem = np.asarray(_load(p_sem, "labelled points"))
        if pc.ndim != 2 or pc.shape[1] < 4 or sem.shape != (len(pc), 4):
            raise OccDataError(f"{p_sem}: expected ({len(pc)}, 4) x, y, z, label matching {p_pc} "
                               f"({pc.shape}), got {sem.shape}")
        if not np.allclose(pc[:, :3], sem[:, :3], atol=1e-4):
            raise OccDataError(f"{p_sem}: its x, y, z differ from {p_pc} (expected the same points in the same order)")
        label = sem[:, 3]
        if not (np.isin(label, np.arange(OCC3D_FREE))).all():
            raise OccDataError(f"{p_sem}: expected integer Occ3D labels 0..{OCC3D_FREE - 1} in column 3, "
                               f"got values in {label.min()}..{label.max()}")
        p_box = folder / "bbox" / f"bbox{i}.npy"
        p_cat = folder / "bbox" / f"object_category{i}.npy"
        p_tok = folder / "bbox" / f"boxes_token{i}.npy"
        box = np.asarray(_load(p_box, "boxes"), np.float64)
        box = box.reshape(0, 7) if box.size == 0 else box
        if box.ndim != 2 or box.shape[1] != 7:
            raise OccDataError(f"{p_box}: expected (M, 7) [x, y, z_bottom, d0, d1, d2, rz], got {box.shape}")
        cat = np.asarray(_load(p_cat, "box categories")).reshape(-1)
        tok = np.asarray(_load(p_tok, "box tokens")).reshape(-1)
        if not len(box) == len(cat) == len(tok):
            raise OccDataError(f"{p_box}: expected as many boxes as {p_cat.name} and {p_tok.name} entries, "
                               f"got {len(box)}, {len(cat)}, {len(tok)}")
        if len(set(tok.tolist())) != len(tok):
            raise OccDataError(f"{p_tok}: a token appears twice in one frame (expected one token per object)")
        if len(cat) and not np.isin(cat, np.arange(OCC3D_FREE)).all():
            raise OccDataError(f"{p_cat}: expected Occ3D classes 0..{OCC3D_FREE - 1}, got {sorted(set(cat.tolist()))}")
        p_cal, p_pose = folder / "calib" / f"lidar_calibrated_sensor{i}.npy", folder / "pose" / f"lidar_ego_pose{i}.npy"
        cal, pose = _load(p_cal, "LiDAR calibration", True), _load(p_pose, "ego pose", True)
        C, E = _transform(cal, p_cal), _transform(pose, p_pose)
        if "timestamp" not in pose:
            raise OccDataError(f"{p_pose}: expected a 'timestamp' (microseconds)")
        center, wlh, R = surroundocc_boxes_to_nuscenes(box, box_scale, box_drop)
        T = E @ C  # LiDAR -> global
        center_g = center @ T[:3, :3].T + T[:3, 3]
        # nuScenes boxes stand upright in the global frame (yaw only); SurroundOcc kept only the
        # yaw in the LiDAR frame, so only the heading direction carries over
        ahead = np.einsum("ij,mj->mi", T[:3, :3], R[:, :, 0])
        yaw_g = np.arctan2(ahead[:, 1], ahead[:, 0])
        boxes = [BoxAnnotation(str(t), OCC3D_TO_LIDARSEG_NAME[OCC3D_CLASSES[int(c)]], center_g[j], wlh[j],
                               np.array([np.cos(yaw_g[j] / 2), 0.0, 0.0, np.sin(yaw_g[j] / 2)]))
                 for j, (t, c) in enumerate(zip(tok, cat))]
        out.append(LidarKeyframe(int(pose["timestamp"]), np.asarray(pc[:, :4], np.float32), C, E,
                                 OCC3D_TO_LIDARSEG[label.astype(np.int64)], boxes))
    return out


def write_surroundocc_dataroot(folder: str | Path, out: str | Path, scene_name: str = "scene-0001",
                               frames: Sequence[int] | None = None, overwrite: bool = False) -> Path:
    """:func:`read_surroundocc_own` + :func:`~occ_core.data.nuscenes_writer.write_lidar_dataroot`:
    one scene named ``scene_name``; returns the dataroot."""
    kfs = read_surroundocc_own(folder, frames)
    return write_lidar_dataroot(out, kfs, scene_name=scene_name, log_name=scene_name,
                                description=f"from SurroundOcc own-data folder {Path(folder).name}", overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    """``python -m occ_core.data.surroundocc_own SRC OUT [--scene NAME] [--overwrite]``."""
    from occ_core.cli import check_input_dir, run_cli

    p = argparse.ArgumentParser(prog="surroundocc-own-to-nuscenes", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="SurroundOcc own-data folder (pc/, pc_seman/, bbox/, calib/, pose/)")
    p.add_argument("out", help="nuScenes-format dataroot to write (v1.0-mini)")
    p.add_argument("--scene", default="scene-0001", help="scene name (default scene-0001)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataroot at OUT")
    a = p.parse_args(argv)

    def run() -> int:
        src = check_input_dir(a.src, "src")
        root = write_surroundocc_dataroot(src, a.out, a.scene, overwrite=a.overwrite)
        print(f"wrote {root}: scene {a.scene}, {count_frames(src)} keyframes")
        return 0

    return run_cli(p.prog, run)


if __name__ == "__main__":
    sys.exit(main())
