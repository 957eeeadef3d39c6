"""Benchmark of the evaluation metrics against plain per-voxel / per-ray Python loops.

Run from the repository root: ``.venv/bin/python bench/metrics.py [--repeats N]``.

Cases (medians of repeats, milliseconds per frame, one process):

* Occ3D mIoU accumulation of one 200x200x16 frame with a camera mask
  (:class:`occ_core.eval.occupancy.ConfusionMetric.update`), against a Python loop over the
  voxels that adds to the confusion matrix one voxel at a time (run on a subset, scaled to
  the 640,000 voxels);
* RayIoU of one frame with 8 origins (2 x 112,320 rays: GT and prediction, cast with
  :func:`occ_core.ops.raycast`, then counted), against a plain per-ray Python DDA in voxel
  units (run on a subset of rays, scaled); the ray casting alone (one grid) and the counting
  of cast rays (:meth:`RayIoU.update_rays`) are listed too.

Targets on the project CPU: <= 5 ms per frame for mIoU, <= 250 ms per frame for RayIoU.
The synthetic frame: ground layer, walls, 60 random boxes; prediction = GT with 5 % of the
voxels relabelled and every 7th box shifted by one voxel.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.classes import OCC3D_FREE  # noqa: E402
from occ_core.eval.occupancy import occ3d_miou  # noqa: E402
from occ_core.eval.rayiou import cast_labels, lidar_ray_directions, occ3d_rayiou  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from _machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)


def synthetic_frame(seed: int = 0):
    """(gt, pred, camera mask, origins (8, 3)) on the Occ3D grid."""
    rng = np.random.default_rng(seed)
    gt = np.full(OCC3D.dims, OCC3D_FREE, np.uint8)
    gt[:, :, :2] = 11
    gt[:8], gt[-8:], gt[:, :8], gt[:, -8:] = 15, 15, 15, 15
    pred = gt.copy()
    for i in range(60):
        x, y = rng.integers(10, 186, 2)
        w, l, h = rng.integers(2, 12), rng.integers(2, 6), rng.integers(3, 8)
        c = rng.integers(0, 11)
        gt[x:x + w, y:y + l, 2:2 + h] = c
        s = 1 if i % 7 == 0 else 0
        pred[x + s:x + s + w, y:y + l, 2:2 + h] = c
    flip = rng.random(OCC3D.dims) < 0.05
    pred[flip] = rng.integers(0, 18, int(flip.sum()))
    mask = rng.random(OCC3D.dims) < 0.6
    origins = np.column_stack([rng.uniform(-30, 30, 8), rng.uniform(-30, 30, 8), np.full(8, 1.84)]).astype(np.float32)
    origins[0] = [0.94, 0.0, 1.84]
    return gt, pred, mask, origins


# --------------------------------------------------------------------- plain loop twins
def loop_confusion(gt, pred, mask, hist):
    for g, p, m in zip(gt.tolist(), pred.tolist(), mask.tolist()):
        if m:
            hist[g][p] += 1


def loop_dda(occ, origin, direction, lo, vs, dims):
    """First occupied voxel and the exit distance (m) of one ray; origin inside the grid."""
    o = [(origin[a] - lo[a]) / vs for a in range(3)]
    d = direction
    idx = [int(math.floor(o[a])) for a in range(3)]
    step, t_max, t_delta = [0, 0, 0], [math.inf] * 3, [math.inf] * 3
    for a in range(3):
        if d[a] > 0:
            step[a], t_max[a], t_delta[a] = 1, (idx[a] + 1 - o[a]) / d[a], 1 / d[a]
        elif d[a] < 0:
            step[a], t_max[a], t_delta[a] = -1, (idx[a] - o[a]) / d[a], -1 / d[a]
    while 0 <= idx[0] < dims[0] and 0 <= idx[1] < dims[1] and 0 <= idx[2] < dims[2]:
        a = 0 if t_max[0] <= t_max[1] and t_max[0] <= t_max[2] else (1 if t_max[1] <= t_max[2] else 2)
        if occ[idx[0]][idx[1]][idx[2]]:
            return (idx[0], idx[1], idx[2]), t_max[a] * vs
        idx[a] += step[a]
        t_max[a] += t_delta[a]
    return None, math.inf


def loop_rays(sem_list, occ_list, origins, dirs, lo, vs, dims):
    out = []
    for o in origins.tolist():
        for d in dirs.tolist():
            v, t = loop_dda(occ_list, o, d, lo, vs, dims)
            out.append((OCC3D_FREE if v is None else sem_list[v[0]][v[1]][v[2]], t))
    return out


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return median(ts) * 1000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-voxels", type=int, default=64000, help="voxels in the Python-loop subset")
    ap.add_argument("--loop-rays", type=int, default=2000, help="rays per grid in the Python-DDA subset")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gt, pred, mask, origins = synthetic_frame()
    rows = []
    steps = tqdm(total=5, desc="bench")

    m = occ3d_miou()
    m.update(gt, pred, mask)  # warm-up
    ours = timed(lambda: m.update(gt, pred, mask), max(args.repeats * 10, 20))
    n = args.loop_voxels
    g1, p1, k1 = gt.reshape(-1)[:n], pred.reshape(-1)[:n], mask.reshape(-1)[:n]
    loop = timed(lambda: loop_confusion(g1, p1, k1, [[0] * 18 for _ in range(18)]), 3) * gt.size / n
    rows.append(("mIoU accumulation, 200x200x16, camera mask", ours, loop, 5.0))
    steps.update()

    r = occ3d_rayiou()
    r.update(gt, pred, origins)  # warm-up
    ours_ray = timed(lambda: r.update(gt, pred, origins), args.repeats)
    steps.update()
    cast = timed(lambda: cast_labels(gt, origins, OCC3D_FREE), args.repeats)
    cg, cp = cast_labels(gt, origins, OCC3D_FREE), cast_labels(pred, origins, OCC3D_FREE)
    count = timed(lambda: r.update_rays(cg, cp), args.repeats * 4)
    steps.update()
    dirs = lidar_ray_directions()
    sub = dirs[np.linspace(0, len(dirs) - 1, max(args.loop_rays // len(origins), 1)).astype(int)]
    n_rays = len(sub) * len(origins)
    gl, pl = gt.tolist(), pred.tolist()
    go, po = (gt != OCC3D_FREE).tolist(), (pred != OCC3D_FREE).tolist()
    lo, vs = OCC3D.range_min, OCC3D.voxel_size[0]

    def loop_frame():
        a = loop_rays(gl, go, origins, sub, lo, vs, OCC3D.dims)
        b = loop_rays(pl, po, origins, sub, lo, vs, OCC3D.dims)
        return a, b

    loop_ray = timed(loop_frame, 1) * (len(dirs) * len(origins)) / n_rays
    steps.update()
    # sanity: the loop DDA and the op agree on the subset
    a, _ = loop_frame()
    ref = cast_labels(gt, origins, OCC3D_FREE, directions=sub)
    agree = float(np.mean(np.array([x[0] for x in a]) == ref.label))
    steps.update()
    steps.close()
    rows.append(("RayIoU, 8 origins x 14,040 rays, GT + pred", ours_ray, loop_ray, 250.0))
    rows.append(("  of which ray casting (one grid, 112,320 rays)", cast, loop_ray / 2, None))
    rows.append(("  of which counting (update_rays, 224,640 rays)", count, float("nan"), None))

    cpu = cpu_model()
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numpy {np.__version__}, Python {platform.python_version()}")
    print(f"Python loops: {n} voxels and {n_rays} rays per grid, scaled; loop/op label agreement on those rays: {agree:.4f}")
    print()
    print("| case | ours (ms/frame) | Python loop (ms/frame) | speed-up | target (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, o, l, tgt in rows:
        t = "-" if tgt is None else f"<= {tgt:g} ({'met' if o <= tgt else 'missed'})"
        lp, sp = ("-", "-") if math.isnan(l) else (f"{l:.0f}", f"{l / o:.0f}x")
        print(f"| {name} | {o:.2f} | {lp} | {sp} | {t} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
