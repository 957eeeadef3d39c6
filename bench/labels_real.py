"""Benchmark: occ-label on real nuScenes LiDAR (issue 13, item 6).

The 11 real keyframes of ``../shared/data/nuscenes_real/surroundocc_own_data_n015-2018-07-18-11-07-57``
(SurroundOcc own-data layout: per-point Occ3D labels, boxes linked by tokens, poses,
calibration; no cameras) are written as a nuScenes dataroot
(:mod:`occ_core.data.surroundocc_own`) and labelled with default settings, once per
``--vertical`` convention. Printed:

- the box convention, checked against the labelled points (which reading of the stored boxes
  holds the vehicle and pedestrian points);
- ego-body points: in the ego box (``LabelConfig.ego_box``, removed) and within
  ``min_distance`` of the sensor (dropped), with their labels;
- per convention, and with the ego poses' z as recorded (0) or rebuilt from their pitch
  (``pose_z``): the z-index of the driveable_surface voxels, trail voxels (dynamic-class
  voxels outside every current box grown by half a voxel diagonal), per-point agreement (the
  keyframe's own labelled points whose voxel carries their class; ego body, noise and returns
  within 1 m excluded as occ-label excludes them), seconds per keyframe;
- the road z-index of the one real Occ3D label (section G of the data README).

    .venv/bin/python bench/labels_real.py [--src DIR] [--render docs/real_labels_3d.png] [--render-frame 5]

``--render PATH`` writes the default labels' 3D view there and the pitch-z labels' beside it
(``<stem>_pitch_z.png``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.classes import LIDARSEG_TO_OCC3D, OCC3D_CLASSES, OCC3D_INDEX, category_to_occ3d  # noqa: E402
from occ_core.data.surroundocc_own import read_surroundocc_own, write_surroundocc_dataroot  # noqa: E402
from occ_core.fileio import atomic_write_bytes  # noqa: E402
from occ_core.formats import occ3d  # noqa: E402
from occ_core.geometry import invert_transform, quat_wxyz_to_matrix  # noqa: E402
from occ_core.labels import LabelConfig  # noqa: E402
from occ_core.labels.boxes import Boxes, points_in_boxes  # noqa: E402
from occ_core.labels.config import POSE_Z_MODES, VERTICAL_SHIFTS  # noqa: E402
from occ_core.labels.measures import NEAR_EGO, check_keyframe, class_z_histogram  # noqa: E402
from occ_core.labels.pipeline import label_keyframe, prepare_scene  # noqa: E402
from occ_core.viz.render import Camera3D, add_legend, render_3d  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402  (bench/ is on sys.path when run as a script)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuscenes_real"
H_DIR = SHARED / "surroundocc_own_data_n015-2018-07-18-11-07-57"
G_FILE = SHARED / "occ3d_cvpr2023_challenge" / "29796060110c4163b07f06eff4af0753" / "labels.npz"
SCENE = "n015-2018-07-18-11-07-57"
#: classes with boxes whose points the convention check counts: vehicles, cyclists, pedestrians
MOVERS = [OCC3D_INDEX[n] for n in ("bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                                   "trailer", "truck")]


def box_convention(src: Path) -> list[tuple[str, int, int, int, int]]:
    """Per reading of the stored boxes: (name, labelled mover points inside a box of their class,
    labelled mover points, points inside mover boxes carrying the box class, points inside them)."""
    rows = []
    for name, kw, swap in (("nuScenes boxes (undo SurroundOcc's x1.1 and -0.1 m) [used]", {}, False),
                           ("as stored (SurroundOcc's enlarged boxes)", dict(box_scale=1.0, box_drop=0.0), False),
                           ("width and length swapped", {}, True)):
        a = n_lab = b = n_box = 0
        for fr in read_surroundocc_own(src, **kw):
            T = invert_transform(fr.T_global_from_ego @ fr.T_ego_from_lidar)  # global -> LiDAR
            lab = LIDARSEG_TO_OCC3D[fr.lidarseg]
            wlh = np.array([bx.wlh for bx in fr.boxes])
            boxes = Boxes(np.array([T[:3, :3] @ bx.center + T[:3, 3] for bx in fr.boxes]),
                          wlh[:, [1, 0, 2]] if swap else wlh,
                          np.array([T[:3, :3] @ quat_wxyz_to_matrix(bx.rotation) for bx in fr.boxes]),
                          np.array([category_to_occ3d(bx.category) for bx in fr.boxes], np.uint8),
                          np.arange(len(fr.boxes)))
            w = points_in_boxes(fr.points[:, :3], boxes)
            cls = np.where(w >= 0, boxes.label[np.maximum(w, 0)], 255)
            mover = np.isin(lab, MOVERS)
            in_mover_box = np.isin(cls, MOVERS)
            a += int((mover & (cls == lab)).sum())
            n_lab += int(mover.sum())
            b += int((in_mover_box & (cls == lab)).sum())
            n_box += int(in_mover_box.sum())
        rows.append((name, a, n_lab, b, n_box))
    return rows


def ego_points(src: Path, cfg: LabelConfig) -> dict:
    """Points of the raw frames in the ego box / within min_distance, and their labels."""
    in_box = near = in_box_far = 0
    labels = np.zeros(256, np.int64)
    n = 0
    for fr in read_surroundocc_own(src):
        xyz = fr.points[:, :3].astype(np.float64)
        C = fr.T_ego_from_lidar
        e = xyz @ C[:3, :3].T + C[:3, 3]
        box = ((e >= cfg.ego_box[0]) & (e <= cfg.ego_box[1])).all(1)
        r = np.linalg.norm(xyz, axis=1) < cfg.min_distance
        in_box += int(box.sum())
        near += int(r.sum())
        in_box_far += int((box & ~r).sum())
        labels += np.bincount(LIDARSEG_TO_OCC3D[fr.lidarseg[box | r]], minlength=256)
        n += 1
    return dict(frames=n, in_box=in_box, near=near, in_box_far=in_box_far,
                labels={OCC3D_CLASSES[i] if i < 17 else "unknown": int(c) for i, c in enumerate(labels) if c})


def run(root: Path, cfg: LabelConfig, render_frame: int | None) -> dict:
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    t0 = time.perf_counter()
    prep = prepare_scene(nusc, root, SCENE, cfg)
    trail = dyn = 0
    hits = total = 0
    road_z = road_z_near = 0
    sem_render = None
    for k in range(len(prep.scene.keyframes)):
        lab = label_keyframe(prep, k, cfg)
        c = check_keyframe(prep, k, lab.semantics, cfg)
        trail, dyn = trail + c.trail, dyn + c.dynamic
        hits, total, road_z, road_z_near = hits + c.hits, total + c.total, road_z + c.road_z, road_z_near + c.road_z_near
        if k == render_frame:
            sem_render = lab.semantics
    secs = time.perf_counter() - t0
    n = len(prep.scene.keyframes)
    return dict(frames=n, per_kf=secs / n, removed_ego=prep.scene.removed_ego, trail=trail, dynamic=dyn, hits=hits,
                total=total, road_z=road_z, road_z_near=road_z_near, sem=sem_render)


def render(sem: np.ndarray, path: Path, title: str) -> int:
    """Write the 3D view of ``sem`` to ``path`` (PNG); returns its size in bytes."""
    img = add_legend(render_3d(sem, camera=Camera3D(width=960, height=600)), sem, title=title)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    atomic_write_bytes(path, buf.tobytes())
    return len(buf)


def _z(hist: np.ndarray) -> str:
    """'z-index: share' of every z-index holding at least 0.5 % of the voxels."""
    share = hist / max(1, hist.sum())
    return ", ".join(f"{z}: {share[z] * 100:.1f} %" for z in range(len(hist)) if share[z] >= 0.005)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=H_DIR, help="SurroundOcc own-data folder (default: shared data, H)")
    p.add_argument("--render", type=Path, default=None, help="write a 3D render of one keyframe's labels here (PNG)")
    p.add_argument("--render-frame", type=int, default=5, help="keyframe index to render (default 5)")
    a = p.parse_args()
    if not a.src.is_dir():
        print(f"labels_real: {a.src} does not exist (the shared real data, section H)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    cfg0 = LabelConfig()
    conv = box_convention(a.src)
    ego = ego_points(a.src, cfg0)
    results = {}
    with tempfile.TemporaryDirectory(prefix="occ-label-real-") as d:
        root = write_surroundocc_dataroot(a.src, Path(d) / "real", SCENE)
        for pose_z in POSE_Z_MODES:
            for vertical, shift in VERTICAL_SHIFTS.items():
                render_frame = a.render_frame if vertical == "ego" else None
                results[f"{vertical}, pose z {pose_z}"] = run(root, replace(cfg0, z_shift=shift, pose_z=pose_z),
                                                              render_frame)
    print(f"# occ-label on real nuScenes LiDAR, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} x {cpu_model()}, load {load_average()}, Python {platform.python_version()}")
    print(f"# {a.src.name}: {ego['frames']} keyframes 0.5 s apart, no sweeps, no cameras; Occ3D grid; "
          f"default settings (window {cfg0.window}: every keyframe sees all others); one process")
    print()
    print("| boxes read as | labelled mover points inside a box of their class | points in mover boxes carrying its class |")
    print("|---|---:|---:|")
    for name, x, nx, y, ny in conv:
        print(f"| {name} | {x}/{nx} = {x / max(1, nx) * 100:.1f} % | {y}/{ny} = {y / max(1, ny) * 100:.1f} % |")
    print()
    f = ego["frames"]
    print(f"ego body: {ego['in_box']} points in the ego box over {f} keyframes ({ego['in_box'] / f:.0f} per keyframe), "
          f"{ego['near']} within {cfg0.min_distance:g} m of the sensor; labels of all of these: {ego['labels']}")
    print()
    print(f"| --vertical, ego pose z | ego-body points removed by the ego box (beyond 1 m) | road z-index within {NEAR_EGO:g} m "
          "(share of driveable voxels) | road z-index, whole grid | trail voxels | per-point agreement "
          "| s / keyframe / core |")
    print("|---|---:|---|---|---:|---:|---:|")
    for v, r in results.items():
        print(f"| {v} | {r['removed_ego']} ({r['removed_ego'] / r['frames']:.0f} per keyframe) | {_z(r['road_z_near'])} | "
              f"{_z(r['road_z'])} | "
              f"{r['trail']}/{r['dynamic']} = {r['trail'] / max(1, r['dynamic']) * 100:.2f} % | "
              f"{r['hits'].sum() / max(1, r['total'].sum()) * 100:.2f} % of {r['total'].sum()} | {r['per_kf']:.2f} |")
    print()
    base = results["ego, pose z recorded"]
    present = [c for c in range(17) if base["total"][c]]
    print("| --vertical, ego pose z | " + " | ".join(f"{OCC3D_CLASSES[c][:10]} ({base['total'][c]})" for c in present) + " |")
    print("|---|" + "---:|" * len(present))
    for v, r in results.items():
        print(f"| {v} | " + " | ".join(f"{r['hits'][c] / r['total'][c] * 100:.1f}" for c in present) + " |")
    if G_FILE.is_file():
        g = occ3d.read_gt(G_FILE)
        car_z = np.nonzero(class_z_histogram(g.semantics, OCC3D_INDEX["car"]))[0]
        print()
        road = OCC3D_INDEX["driveable_surface"]
        print(f"real Occ3D label (G): road z-index within {NEAR_EGO:g} m "
              f"{_z(class_z_histogram(g.semantics, road, cfg0.grid, NEAR_EGO))}; whole grid "
              f"{_z(class_z_histogram(g.semantics, road))}; car voxels at z-indices {car_z.min()}-{car_z.max()}")
    if a.render is not None:
        for key, path in (("ego, pose z recorded", a.render),
                          ("ego, pose z pitch", a.render.with_name(a.render.stem + "_pitch_z" + a.render.suffix))):
            size = render(results[key]["sem"], path, f"real kf {a.render_frame}, {key.replace('pose z ', 'z ')}")
            print(f"\nrender: {path} ({size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
