"""Benchmark of the ops (occ_core.ops): torch references and numba kernels on the CPU, Triton kernels on a GPU.

Run from the repository root: ``.venv/bin/python bench/ops.py [--repeats N] [--threads T]``.

Cases at realistic sizes (milliseconds: median and minimum wall time of the repeats, median
CPU time of this process; the load average is printed because other processes on a shared
machine inflate the wall time, the minimum least):

* voxelize: 10 LiDAR sweeps of 34,720 points (347,200 points, 5 columns) on the CenterPoint
  nuScenes voxel grid (0.1 x 0.1 x 0.2 m over [-51.2, -51.2, -5, 51.2, 51.2, 3]); dynamic
  (voxel means) and hard (10 points x 120,000 voxels);
* bev_pool: 6 cameras x 59 depth bins x 16 x 44 pixels x 80 channels, frustum from the shipped
  nuScenes rig (704 x 256 input, stride 16, depth 1..59 m), into the Occ3D grid 200 x 200 x 16;
  forward, and forward + backward; the plan (prepare_bev_pool) separately;
* raycast: 112,320 rays (8 origins x 14,040 SparseOcc LiDAR rays) through a synthetic Occ3D
  frame (ground, walls, 60 boxes); torch reference and numba kernel on the CPU;
* ray_traverse lidar: the 347,200 LiDAR returns above as segments from the sensor (0, 0, 1.84)
  through the Occ3D grid, return counts as weights, margin 0.3 m (occ-label's mask_lidar and
  carving counts); camera: the raycast rays as 200 m segments stopped at the first occupied
  voxel of the frame (occ-label's mask_camera); torch reference and numba kernel on the CPU.

* deform_attn: BEVFormer-tiny's spatial cross-attention call of ``ms_deform_attn``: 6 cameras,
  one 15 x 25 feature level (800 x 480 input, stride 32), 8 heads x 32 channels, 8 points
  (4 pillar anchors x 2); the query rows are the rebatched length BEVFormer would use: the
  most BEV cells of a 50 x 50 grid over [-51.2, 51.2] m that one camera of the shipped
  nuScenes rig sees (anchors at 4 heights over z in [-5, 3] m); sampling locations uniform in
  the image; forward, and forward + backward.

The floor of each case is the minimum bytes it must move (inputs read once, outputs written
once; listed per case) over the memory bandwidth measured here with a large torch copy.
Triton kernels are timed only where a CUDA device exists. The ray cases also give rays per
second (median wall). The numba kernels are compiled (or loaded from numba's cache) in the
warm-up call.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.grid import OCC3D, GridSpec  # noqa: E402
from occ_core.models.bevformer_sca import pillar_anchors, pillar_heights, project_anchors  # noqa: E402
from occ_core.ops import (bev_pool, dynamic_voxelize, hard_voxelize, ms_deform_attn, prepare_bev_pool,  # noqa: E402
                          ray_traverse, raycast)
from occ_core.rig import load_rig  # noqa: E402
from _machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)

LIDAR_GRID = GridSpec.from_range("centerpoint", (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0), (0.1, 0.1, 0.2))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: torch.device, repeats: int) -> tuple[float, float, float]:
    """Median wall, minimum wall and median process-CPU milliseconds of ``fn()`` after one
    warm-up call.

    The CPU time (all threads of this process) is less sensitive to other processes competing
    for the cores than the wall time; both are reported.
    """
    fn()
    sync(dev)
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync(dev)
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return median(wall), min(wall), median(cpu)


def copy_bandwidth(dev: torch.device, mib: int = 512) -> float:
    """Bytes per second of a large tensor copy (read + write counted)."""
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=dev)
    y = torch.empty_like(x)
    best = timed(lambda: y.copy_(x), dev, 5)[1]
    return 2 * x.numel() * 4 / (best / 1e3)


def lidar_sweeps(rng, sweeps: int = 10, per_sweep: int = 34_720) -> torch.Tensor:
    """(sweeps * per_sweep, 5) x, y, z, intensity, time lag: a 32-beam-like pattern, ground and walls."""
    n = sweeps * per_sweep
    az = rng.uniform(-math.pi, math.pi, n)
    el = np.deg2rad(rng.choice(np.linspace(-30.67, 10.67, 32), n))
    ground = -1.84 / np.minimum(np.sin(el), -1e-3)
    r = np.where(el < 0, ground, rng.uniform(5, 80, n))
    r = np.minimum(r, rng.uniform(3, 90, n))  # objects in front of the ground
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), 1.84 + r * np.sin(el),
                    rng.uniform(0, 255, n), np.repeat(np.arange(sweeps) * 0.05, per_sweep)], 1)
    return torch.tensor(pts, dtype=torch.float32)


def camera_frustum(D: int = 59, H: int = 16, W: int = 44, stride: int = 16) -> torch.Tensor:
    """(1, 6, D, H, W, 3) frustum points in base_link from the nuScenes rig (704 x 256 input)."""
    rig = load_rig().scaled(704, 396)
    v, u = np.meshgrid((np.arange(H) + 0.5) * stride + 140, (np.arange(W) + 0.5) * stride, indexing="ij")  # top crop 140
    depths = np.arange(1.0, 1.0 + D)
    out = []
    for cam in rig.cameras:
        rays = np.linalg.inv(cam.K) @ np.stack([u.ravel(), v.ravel(), np.ones(H * W)])  # (3, H*W)
        p = rays[None] * depths[:, None, None]  # (D, 3, H*W) in the camera frame
        pb = np.einsum("ij,djn->dni", cam.T_base_from_cam[:3, :3], p) + cam.T_base_from_cam[:3, 3]
        out.append(pb.reshape(D, H, W, 3))
    return torch.tensor(np.stack(out)[None], dtype=torch.float32)


def lidar_ray_dirs() -> torch.Tensor:
    """(14040, 3) SparseOcc RayIoU ray directions: 39 pitches x 360 azimuths."""
    pitch = [-(math.pi / 2 - math.atan(k + 1)) for k in range(10)]
    while pitch[-1] < 0.21:
        pitch.append(2 * pitch[-1] - pitch[-2])
    p = torch.tensor(pitch, dtype=torch.float64)[:, None]
    az = torch.deg2rad(torch.arange(360, dtype=torch.float64))[None]
    return torch.stack([torch.cos(p) * torch.cos(az), torch.cos(p) * torch.sin(az), torch.sin(p).expand(-1, 360)], -1).reshape(-1, 3)


def occ_frame(rng) -> torch.Tensor:
    occ = torch.zeros(OCC3D.dims, dtype=torch.bool)
    occ[:, :, :2] = True
    occ[:8], occ[-8:], occ[:, :8], occ[:, -8:] = True, True, True, True
    for _ in range(60):
        x, y = rng.integers(10, 185, 2)
        w, l, h = rng.integers(3, 12), rng.integers(3, 12), rng.integers(3, 10)
        occ[x:x + w, y:y + l, 2:2 + h] = True
    return occ


def sca_rows(grid: GridSpec, image_wh: tuple[int, int] = (800, 480), valid_h: int = 450, anchors: int = 4) -> int:
    """Most BEV cells of ``grid`` one camera of the shipped rig sees (the rebatched length).

    The rig is scaled to ``image_wh[0]`` x ``valid_h`` (BEVFormer's 0.5 resize) and the image
    padded at the bottom to ``image_wh[1]`` rows, as mmdet's size-divisor padding does.
    """
    rig = load_rig().scaled(image_wh[0], valid_h)
    K = torch.tensor(np.stack([c.K for c in rig.cameras])[None], dtype=torch.float32)
    T = torch.tensor(np.stack([c.T_base_from_cam for c in rig.cameras])[None], dtype=torch.float32)
    proj = project_anchors(pillar_anchors(grid, pillar_heights(grid, anchors)), K, T, (valid_h, image_wh[0]))
    return int(proj.seen.sum(-1).max())


def deform_attn_inputs(rng, rows: int, cams: int = 6, shape: tuple[int, int] = (15, 25), heads: int = 8,
                       dim: int = 32, points: int = 8):
    """value (cams, h*w, heads, dim), shapes, starts, locations, weights (one level)."""
    h, w = shape
    value = torch.tensor(rng.normal(size=(cams, h * w, heads, dim)), dtype=torch.float32)
    loc = torch.tensor(rng.random((cams, rows, heads, 1, points, 2)), dtype=torch.float32)
    attn = torch.softmax(torch.tensor(rng.normal(size=(cams, rows, heads, 1, points)), dtype=torch.float32), -1)
    return value, torch.tensor([[h, w]]), torch.tensor([0]), loc, attn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--cases", default="", help="comma-separated case-name prefixes to run (default: all), e.g. ray")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cpu = torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    devices = [cpu] + ([torch.device("cuda")] if has_cuda else [])

    pts = lidar_sweeps(rng)
    frustum = camera_frustum()
    BN, D, H, W, C = 6, 59, 16, 44, 80
    depth = torch.softmax(torch.tensor(rng.normal(size=(BN, D, H, W)), dtype=torch.float32), 1)
    feat = torch.tensor(rng.normal(size=(BN, H, W, C)), dtype=torch.float32)
    occ = occ_frame(rng)
    dirs = lidar_ray_dirs()
    origins = torch.cat([torch.tensor(rng.uniform(-20, 20, (8, 2))), torch.full((8, 1), 1.84, dtype=torch.float64)], 1)
    O, Dr = origins.repeat_interleave(len(dirs), 0), dirs.repeat(8, 1)
    seg_end = pts[:, :3].double()
    seg_start = torch.tensor([[0.0, 0.0, 1.84]], dtype=torch.float64).expand_as(seg_end).contiguous()
    seg_w = torch.tensor(rng.integers(1, 4, len(seg_end)), dtype=torch.float64)
    cam_end = O + Dr / Dr.norm(dim=1, keepdim=True) * 200.0
    bev_tiny = GridSpec.from_range("bevformer_tiny", (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0), (2.048, 2.048, 8.0))
    da_rows = sca_rows(bev_tiny)
    da = deform_attn_inputs(rng, da_rows)

    # Bytes each case must move at least.
    plan_cpu = prepare_bev_pool(frustum, OCC3D)
    dyn = dynamic_voxelize(pts, LIDAR_GRID, backend="torch")
    hard = hard_voxelize(pts, LIDAR_GRID, 10, 120_000, backend="torch")
    N, Cp = pts.shape
    P, V = plan_cpu.ranks_bev.numel(), plan_cpu.interval_starts.numel()
    out_bytes = OCC3D.num_voxels * C * 4
    plan_bytes = 3 * P * 8 + 2 * V * 8
    fwd_bytes = depth.numel() * 4 + feat.numel() * 4 + plan_bytes + out_bytes
    R = O.shape[0]
    floors = {
        "voxelize dynamic": N * Cp * 4 + N * 8 + dyn.features.shape[0] * (Cp * 4 + 32),
        "voxelize hard": N * Cp * 4 + hard.voxels.numel() * 4 + hard.voxels.shape[0] * 32,
        "bev_pool plan": frustum.numel() * 4 + plan_bytes,
        "bev_pool forward": fwd_bytes,
        "bev_pool forward+backward": fwd_bytes + out_bytes + depth.numel() * 8 + feat.numel() * 8 + plan_bytes,
        "raycast": R * 6 * 4 + occ.numel() + R * 29,
        "ray_traverse lidar": len(seg_end) * 7 * 8 + 2 * OCC3D.num_voxels * 8,
        "ray_traverse camera": R * 6 * 8 + occ.numel() + 2 * OCC3D.num_voxels * 8,
    }
    da_in = sum(t.numel() * 4 for t in (da[0], da[3], da[4]))
    da_out = da[3].shape[0] * da_rows * da[0].shape[2] * da[0].shape[3] * 4
    floors["deform_attn forward"] = da_in + da_out
    floors["deform_attn forward+backward"] = 2 * da_in + 2 * da_out
    n_rays = {"raycast": R, "ray_traverse lidar": len(seg_end), "ray_traverse camera": R}
    numba_cases = ("raycast", "ray_traverse lidar", "ray_traverse camera")
    prefixes = [c.strip() for c in args.cases.split(",") if c.strip()]
    chosen = [n for n in floors if not prefixes or any(n.startswith(c) for c in prefixes)]
    if not chosen:
        ap.error(f"--cases {args.cases!r} matches none of {list(floors)}")

    rows = []
    total = len(devices) * len(chosen) + sum(n in chosen for n in numba_cases)
    with tqdm(total=total, desc="bench ops", unit="case") as bar:
        for dev in devices:
            be = "torch" if dev.type == "cpu" else "triton"
            p, fr, dp, ft, oc = pts.to(dev), frustum.to(dev), depth.to(dev), feat.to(dev), occ.to(dev)
            o, d = O.to(dev), Dr.to(dev)
            ss, se, sw, ce = seg_start.to(dev), seg_end.to(dev), seg_w.to(dev), cam_end.to(dev)
            plan = prepare_bev_pool(fr, OCC3D)
            dpg, ftg = dp.clone().requires_grad_(), ft.clone().requires_grad_()

            def fwd_bwd():
                bev_pool(dpg, ftg, plan, backend=be).sum().backward()

            dav, das, dast, dal, daw = (t.to(dev) for t in da)
            dag = [t.clone().requires_grad_() for t in (dav, dal, daw)]

            def da_fwd_bwd():
                ms_deform_attn(dag[0], das, dast, dag[1], dag[2], backend=be).sum().backward()

            cases = {
                "voxelize dynamic": lambda: dynamic_voxelize(p, LIDAR_GRID, backend=be),
                "voxelize hard": lambda: hard_voxelize(p, LIDAR_GRID, 10, 120_000, backend=be),
                "bev_pool plan": lambda: prepare_bev_pool(fr, OCC3D),
                "bev_pool forward": lambda: bev_pool(dp, ft, plan, backend=be),
                "bev_pool forward+backward": fwd_bwd,
                "raycast": lambda b: raycast(oc, o, d, OCC3D, backend=b),
                "ray_traverse lidar": lambda b: ray_traverse(ss, se, OCC3D, sw, margin=0.3, backend=b),
                "ray_traverse camera": lambda b: ray_traverse(o, ce, OCC3D, blocked=oc, backend=b),
                "deform_attn forward": lambda: ms_deform_attn(dav, das, dast, dal, daw, backend=be),
                "deform_attn forward+backward": da_fwd_bwd,
            }
            bw = copy_bandwidth(dev)
            for name, fn in cases.items():
                if name not in chosen:
                    continue
                for b in [be] + (["numba"] if dev.type == "cpu" and name in numba_cases else []):
                    ms, best, cpu_ms = timed(lambda: fn(b) if name in n_rays else fn(), dev, args.repeats)
                    floor = floors[name] / bw * 1e3
                    kind = {"triton": "Triton kernel", "numba": "numba kernel", "torch": "torch reference"}[b]
                    rays_s = n_rays[name] / (ms / 1e3) if name in n_rays else float("nan")
                    rows.append((name, f"{dev.type} ({kind})", ms, best, cpu_ms if dev.type == "cpu" else float("nan"),
                                 floors[name], floor, bw, rays_s))
                    bar.update()

    print()
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
          + (f", GPU {torch.cuda.get_device_name()}" if has_cuda else ""))
    print(f"sizes: {N} points ({Cp} columns) -> {dyn.features.shape[0]} voxels (dynamic), {hard.voxels.shape[0]} (hard); "
          f"{P} of {frustum.numel() // 3} frustum points in {V} voxels, C={C}; {R} rays; {len(seg_end)} LiDAR segments; "
          f"deform_attn 6 x {da_rows} query rows x 8 heads x 8 points over 15 x 25 x 8 x 32")
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if not has_cuda:
        print("no CUDA device: kernel timings wait for a GPU machine")
    print()
    print("| case | device | median wall (ms) | min wall (ms) | median CPU (ms) | rays/s (M) | bytes moved (MB) "
          "| bandwidth (GB/s) | floor (ms) | min wall / floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, dev, ms, best, cpu_ms, nbytes, floor, bw, rays_s in rows:
        rs = "" if math.isnan(rays_s) else f"{rays_s / 1e6:.2f}"
        print(f"| {name} | {dev} | {ms:.1f} | {best:.1f} | {cpu_ms:.1f} | {rs} | {nbytes / 1e6:.1f} | {bw / 1e9:.1f} "
              f"| {floor:.2f} | {best / floor:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
