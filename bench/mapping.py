"""Benchmark: one update of the rolling semantic map (issue 19, item 1; target <= 10 ms).

An update is what :meth:`RollingSemanticMap.update` does for one 200 x 200 x 16 Occ3D frame:
scroll the window to the ego pose, read the fused ego grid (the map with the frame's own
observations on top) and fold the frame into the map. Inputs, in two variants:

- ``synthetic world``: real keyframes of a synthetic world in scene order with their ego poses
  (the ego drives and yaws): labels = the analytic Occ3D ground truth, scores uniform in
  [0.5, 1], seen = its ``mask_camera`` (what a prediction's camera visibility looks like);
- ``random worst case``: every voxel seen, labels uniform over the 18 classes (94 % occupied
  observations, each of which updates all 17 class evidences), random poses 0.5-3 m and up to
  0.3 rad apart.

Frame visibility (:func:`occ_core.mapping.visibility.frame_visibility`, camera ray casting) is
timed separately: it is per-frame work the map needs, not part of the update. Wall and CPU
(process) time per update after a warm-up (the numba kernels are compiled and cached on the
first call), one thread; the machine's load is printed because other processes inflate wall
times (CPU time is what this process used).

    PYTHONPATH=. .venv/bin/python bench/mapping.py [--dataroot data/synthetic] [--frames 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.grid import OCC3D  # noqa: E402
from occ_core.mapping import MapConfig, RollingSemanticMap  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402  (bench/ is on sys.path when run as a script)


def world_frames(dataroot: Path, limit: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(labels, scores, seen, T_odom_from_ego) of the first ``limit`` keyframes, scene by scene."""
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset, scene_splits

    splits = scene_splits(dataroot)
    ds = NuScenesOccDataset(dataroot, splits["train"] + splits["val"], OCC3D)
    rng = np.random.default_rng(0)
    out = []
    for scene, token in ds.samples[:limit]:
        t = ds.load_targets(scene, token)
        scores = rng.uniform(0.5, 1.0, OCC3D.dims).astype(np.float32)
        out.append((t.semantics, scores, t.mask_camera, ds.ego_pose(token)))
    return out


def random_frames(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    out, p, yaw = [], np.zeros(3), 0.0
    for _ in range(n):
        labels = rng.integers(0, 18, OCC3D.dims).astype(np.uint8)
        scores = rng.uniform(0.5, 1.0, OCC3D.dims).astype(np.float32)
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
        T[:3, 3] = p
        out.append((labels, scores, np.ones(OCC3D.dims, bool), T))
        yaw += rng.uniform(-0.3, 0.3)
        p = p + np.array([np.cos(yaw), np.sin(yaw), 0.0]) * rng.uniform(0.5, 3.0)
    return out


def time_updates(frames, repeat: int, fused: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU ms of each update over ``repeat`` passes (a fresh map per pass, one warm-up).
    ``fused``: :meth:`RollingSemanticMap.update` (scroll, fused ego grid, fold in: occ-predict
    --fuse); else scroll and fold in only (the node, which publishes the map, not an ego grid)."""
    m = RollingSemanticMap(MapConfig(), OCC3D)
    m.update(*frames[0])  # compile / load the cached kernels

    def fold_in(labels, scores, seen, T):
        m.move_to(T)
        m.integrate(labels, scores, seen, T)

    step = m.update if fused else fold_in
    wall, cpu = [], []
    for _ in range(repeat):
        m.reset()
        for f in frames:
            t0, c0 = time.perf_counter(), time.process_time()
            step(*f)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return np.array(wall) * 1e3, np.array(cpu) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, default=Path("data/synthetic"),
                   help="a synthetic world (a small one is generated in a temporary folder if missing)")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)  # the visibility's ray set-up: small torch ops, which threads only slow down here

    with tempfile.TemporaryDirectory(prefix="occ-map-bench-") as d:
        root = a.dataroot
        if not (root / "v1.0-mini").is_dir():
            from occ_core.data.synthetic import SynthConfig, generate

            root = Path(d) / "world"
            print(f"# generating a synthetic world (2 scenes x 10 keyframes) into {root}", file=sys.stderr)
            generate(SynthConfig(scenes=2, samples_per_scene=10, seed=0, image_size=(320, 180)), root, progress=False)
        frames = world_frames(root, a.frames)
    cfg = MapConfig()
    rand = random_frames(30)
    rows = [(f"synthetic world ({len(frames)} keyframes), update + fused ego grid", *time_updates(frames, a.repeat)),
            (f"synthetic world ({len(frames)} keyframes), fold in only (node)", *time_updates(frames, a.repeat, False)),
            ("random worst case (30 frames), update + fused ego grid", *time_updates(rand, a.repeat)),
            ("random worst case (30 frames), fold in only (node)", *time_updates(rand, a.repeat, False))]
    vis_ms = time_visibility(root if root.exists() else None)
    print(f"# rolling map update, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} x {cpu_model()}, load {load_average()}, Python {platform.python_version()}, "
          f"one thread (sequential numba kernels)")
    m = RollingSemanticMap(cfg, OCC3D)
    print(f"# frame {'x'.join(map(str, OCC3D.dims))} at {OCC3D.voxel_size[0]} m; map window "
          f"{'x'.join(map(str, cfg.dims))} at {cfg.voxel_size} m ({cfg.extent[0]:g} x {cfg.extent[1]:g} x "
          f"{cfg.extent[2]:g} m), {m.nbytes / 2**20:.1f} MiB")
    print()
    print("| input | updates | wall ms p50 | wall ms p90 | wall ms min | CPU ms p50 | CPU ms min |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, wall, cpu in rows:
        print(f"| {name} | {len(wall)} | {np.median(wall):.1f} | {np.percentile(wall, 90):.1f} | {wall.min():.1f} | "
              f"{np.median(cpu):.1f} | {cpu.min():.1f} |")
    if vis_ms is not None:
        print()
        print(f"frame visibility (depth images rendered from the frame's labels, then every voxel tested; not part "
              f"of the update): {np.median(vis_ms[0]):.0f} ms wall, {np.median(vis_ms[1]):.0f} ms CPU p50 over "
              f"{len(vis_ms[0])} keyframes")
    return 0


def time_visibility(root: Path | None, n: int = 5) -> tuple[np.ndarray, np.ndarray] | None:
    """Wall and CPU ms of :func:`frame_visibility` on ``n`` keyframes of the world (None: no world left)."""
    if root is None:
        return None
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset, scene_splits
    from occ_core.mapping.visibility import frame_visibility

    splits = scene_splits(root)
    ds = NuScenesOccDataset(root, splits["val"], OCC3D, image_hw=(96, 176))
    wall, cpu = [], []
    for i, (scene, token) in enumerate(ds.samples[:n + 1]):
        frame, t = ds.load_frame(token), ds.load_targets(scene, token)
        t0, c0 = time.perf_counter(), time.process_time()
        frame_visibility(t.semantics, frame, OCC3D)
        if i:  # the first call compiles
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    return np.array(wall), np.array(cpu)


if __name__ == "__main__":
    sys.exit(main())
