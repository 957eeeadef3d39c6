"""Write synthetic scenes as a nuScenes ``v1.0-mini`` dataset with lidarseg, panoptic, Occ3D and
OpenOcc v2 ground truth and per-image depth maps.

Layout of ``<dataroot>``:

=============================================================  =====================================
``v1.0-mini/*.json``                                           the 13 nuScenes tables + lidarseg.json
                                                               + panoptic.json
``samples/<CH>/<log>__<CH>__<us>.{pcd.bin,jpg}``               keyframes (2 Hz)
``sweeps/<CH>/...``                                            LiDAR sweeps (20 Hz), camera sweeps
                                                               (12 Hz, optional)
``lidarseg/v1.0-mini/<sd_token>_lidarseg.bin``                 uint8 nuScenes-lidarseg class per point
``panoptic/v1.0-mini/<sd_token>_panoptic.npz``                 ``data`` uint16 = class * 1000 + object
                                                               id (1-based within the scene, 0 stuff)
``gts/<scene>/<sample_token>/labels.npz``                      Occ3D: ``semantics`` uint8,
                                                               ``mask_lidar``, ``mask_camera`` bool
                                                               (200, 200, 16) [x, y, z] in base_link
``openocc_v2/<scene>/<sample_token>/labels.npz``               ``semantics`` uint8 (OpenOcc order,
                                                               free 16), ``flow`` float32 (..., 2)
``depth/<CH>/<image stem>.png``                                uint16 z-depth x 256 (metres =
                                                               value / 256, KITTI convention), 0 = none
``semantic2d/<CH>/<image stem>.png``                           (``semantic2d``) uint8 Occ3D class of each
                                                               pixel's first hit, 17 = sky
``semantic2d_corrupt/<CH>/<image stem>.png``                   (``semantic2d_corrupt``) the same,
                                                               corrupted like a segmenter's output
                                                               (:mod:`.semantic2d`), 255 = no label
``maps/<map_token>.png``                                       driveable-surface mask, 0.2 m/pixel
``splits.json``                                                ``{"train": [...], "val": [...]}`` scene names
=============================================================  =====================================

Camera frames besides the keyframes: ``camera_sweeps`` renders every 12 Hz camera frame between
keyframes (slow); ``camera_adjacent`` only the previous and the next 12 Hz frame of each camera
around each keyframe (OccNeRF's source frames for the photometric loss, a third of the cost).
Both are off by default, and the default world's files do not change with these options.

Frames and timing: ``ego_pose`` is base_link (z = 0 on the road) in the ``map`` frame, one per
sample_data; calibrated_sensor rows carry the real nuScenes rig (cameras scaled to the image
size). Keyframe cameras share the keyframe LiDAR timestamp (nuScenes cameras fire within
~40 ms of it). Sweeps belong to the following keyframe's sample, as in nuScenes.

Determinism: per-scene ``numpy`` generators seeded from ``(seed, scene)``, tokens from an MD5
of ``(seed, table, key)``, fixed JPEG quality, zip entries with a fixed date, timestamps from a
fixed epoch: the same arguments give byte-identical files. The tables are written through
:mod:`occ_core.data.nuscenes_writer`, the dataset to ``.<out>.tmp-<pid>`` and renamed to ``<out>``
at the end (:func:`~occ_core.data.nuscenes_writer.staged_dataroot`), so an interrupted run never
leaves a folder that loads as complete (the next run deletes temporary folders of runs that died).
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from occ_core.classes import OCC3D_TO_LIDARSEG, OCC3D_TO_OPENOCC
from occ_core.data.synthetic.geometry import DRIVEABLE
from occ_core.data.synthetic.groundtruth import camera_visibility, label_voxels, lidar_visibility
from occ_core.data.synthetic.semantic2d import corrupt_semantic2d
from occ_core.data.synthetic.sensors import LidarConfig, lidar_scan, render_camera
from occ_core.data.synthetic.world import CATEGORY_OF, World, build_world
from occ_core.data.nuscenes_writer import NuScenesTables, link, make_token, rounded, staged_dataroot
from occ_core.errors import OccDataError
from occ_core.formats.image_maps import encode_semantic_png
from occ_core.geometry import invert_transform, make_transform, matrix_to_quat_wxyz
from occ_core.grid import OCC3D, GridSpec
from occ_core.procs import DieWithParent
from occ_core.rig import Rig, load_rig

VERSION = "v1.0-mini"
KEYFRAME_DT = 0.5
LIDAR_DT = 0.05
CAMERA_DT = 1.0 / 12.0
EPOCH_US = 1_533_000_000_000_000  # a fixed start time (2018-07-31), never the wall clock
JPEG_QUALITY = 92
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
ANNOTATION_RADIUS = 50.0


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. ``image_size`` is (width, height) of every camera image."""

    scenes: int = 2
    samples_per_scene: int = 20
    seed: int = 0
    image_size: tuple[int, int] = (640, 360)
    sweeps: bool = True
    camera_sweeps: bool = False
    #: scenes of ``splits.json``'s val split (the last ones); None: 20 % (at least 1 of 2+ scenes)
    val_scenes: int | None = None
    camera_adjacent: bool = False
    semantic2d: bool = False
    semantic2d_corrupt: bool = False
    lidar: LidarConfig = field(default_factory=LidarConfig)
    grid: GridSpec = OCC3D

    def __post_init__(self) -> None:
        if not isinstance(self.scenes, int) or self.scenes < 1:
            raise OccDataError(f"scenes: expected an integer >= 1, got {self.scenes!r}")
        if not isinstance(self.samples_per_scene, int) or self.samples_per_scene < 1:
            raise OccDataError(f"samples_per_scene: expected an integer >= 1, got {self.samples_per_scene!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise OccDataError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if self.val_scenes is not None and not (isinstance(self.val_scenes, int) and 0 <= self.val_scenes <= self.scenes):
            raise OccDataError(f"val_scenes: expected an integer in 0..{self.scenes} (the scene count), got {self.val_scenes!r}")
        w, h = self.image_size
        if not (isinstance(w, int) and isinstance(h, int) and 16 <= w <= 4096 and 16 <= h <= 4096):
            raise OccDataError(f"image_size: expected WIDTHxHEIGHT with 16..4096 pixels each, got {self.image_size!r}")


@dataclass
class StageTimes:
    """Seconds spent per stage (summed over scenes)."""

    world: float = 0.0
    lidar: float = 0.0
    cameras: float = 0.0
    groundtruth: float = 0.0
    write: float = 0.0


@dataclass
class SynthResult:
    """What :func:`generate` wrote."""

    dataroot: Path
    scene_names: list[str]
    samples: int
    sample_data: int
    annotations: int
    times: StageTimes


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed zip entry dates, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def load_splits(dataroot: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` scene names of a synthetic dataroot."""
    path = Path(dataroot) / "splits.json"
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise OccDataError(f"{path}: cannot read the split file ({e.strerror})") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("train", "val")):
        raise OccDataError(f"{path}: expected an object with lists 'train' and 'val'")
    return {"train": list(doc["train"]), "val": list(doc["val"])}


def _yaw_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _ego_T(pos: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return make_transform(pos, np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))


def _visibility_token(frac: float) -> str:
    return "1" if frac < 0.4 else "2" if frac < 0.6 else "3" if frac < 0.8 else "4"


_COUNTER = None  # a shared multiprocessing.Value of frames done (set in pool workers)


def _tick() -> None:
    if _COUNTER is not None:
        with _COUNTER.get_lock():
            _COUNTER.value += 1


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def _scene_job(args: tuple) -> tuple[dict[str, list[dict]], StageTimes]:
    cfg, si, rig, tmp = args
    tab = NuScenesTables()
    times = StageTimes()
    _scene(cfg, si, rig, tmp, tab, times)
    return tab.rows, times


def _scene(cfg: SynthConfig, si: int, rig: Rig, tmp: Path, tab: NuScenesTables, times: StageTimes) -> None:
    """Generate scene ``si``: write its files under ``tmp`` and append its table rows to ``tab``."""
    seed = cfg.seed
    W, H = cfg.image_size
    t0 = time.perf_counter()
    rng_world = np.random.default_rng([seed, si, 0])
    rng_sensor = np.random.default_rng([seed, si, 1])
    duration = KEYFRAME_DT * (cfg.samples_per_scene - 1)
    world: World = build_world(rng_world, duration)
    times.world += time.perf_counter() - t0

    scene_name = f"scene-{si + 1:04d}"
    log_name = f"synth-{seed}-{si:04d}"
    log_tok = make_token(seed, "log", si)
    map_tok = make_token(seed, "map", si)
    scene_tok = make_token(seed, "scene", si)
    tab.rows["log"].append({"token": log_tok, "logfile": log_name, "vehicle": "synth-ego", "date_captured": "2018-07-31",
                         "location": "synthetic-city"})
    tab.rows["map"].append({"token": map_tok, "log_tokens": [log_tok], "category": "semantic_prior",
                         "filename": f"maps/{map_tok}.png"})
    mask = np.ascontiguousarray(((world.ground.raster == DRIVEABLE) * 255).astype(np.uint8)[::-1])  # north up
    (tmp / "maps").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(tmp / "maps" / f"{map_tok}.png"), mask)

    calib = {}
    for ch in ("LIDAR_TOP", *CAMERAS):
        if ch == "LIDAR_TOP":
            T, K = rig.lidar.T_base_from_lidar, []
        else:
            cam = rig.camera(ch)
            T, K = cam.T_base_from_cam, [rounded(r) for r in cam.K]
        calib[ch] = make_token(seed, "calibrated_sensor", si, ch)
        tab.rows["calibrated_sensor"].append({"token": calib[ch], "sensor_token": make_token(seed, "sensor", ch),
                                           "translation": rounded(T[:3, 3]),
                                           "rotation": rounded(matrix_to_quat_wxyz(T[:3, :3]), 9), "camera_intrinsic": K})

    # timeline: microseconds from the scene start -> channels captured then
    n = cfg.samples_per_scene
    events: dict[int, list[str]] = {}
    for k in range(n):
        events.setdefault(round(k * KEYFRAME_DT * 1e6), []).extend(["LIDAR_TOP", *CAMERAS])
        if k + 1 < n:
            if cfg.sweeps:
                for j in range(1, round(KEYFRAME_DT / LIDAR_DT)):
                    events.setdefault(round((k * KEYFRAME_DT + j * LIDAR_DT) * 1e6), []).append("LIDAR_TOP")
            if cfg.camera_sweeps:
                for j in range(1, round(KEYFRAME_DT / CAMERA_DT)):
                    events.setdefault(round((k * KEYFRAME_DT + j * CAMERA_DT) * 1e6), []).extend(CAMERAS)
        if cfg.camera_adjacent and not cfg.camera_sweeps:
            # the previous and next 12 Hz frame of each camera (also before the first and after the last keyframe)
            for j in (-1, 1):
                lst = events.setdefault(round((k * KEYFRAME_DT + j * CAMERA_DT) * 1e6), [])
                lst.extend(ch for ch in CAMERAS if ch not in lst)
    sample_tok = [make_token(seed, "sample", si, k) for k in range(n)]
    scene_t0 = EPOCH_US + si * 3_600_000_000
    for k in range(n):
        tab.rows["sample"].append({"token": sample_tok[k], "timestamp": scene_t0 + round(k * KEYFRAME_DT * 1e6),
                                "prev": sample_tok[k - 1] if k > 0 else "", "next": sample_tok[k + 1] if k + 1 < n else "",
                                "scene_token": scene_tok})
    tab.rows["scene"].append({"token": scene_tok, "log_token": log_tok, "nbr_samples": n,
                           "first_sample_token": sample_tok[0], "last_sample_token": sample_tok[-1], "name": scene_name,
                           "description": f"synthetic street scene, seed {seed}, ego {world.ego_speed:.1f} m/s"})

    sd_rows: dict[str, list[dict]] = {ch: [] for ch in ("LIDAR_TOP", *CAMERAS)}
    ann_by_obj: dict[int, list[dict]] = {}
    key_us = [round(k * KEYFRAME_DT * 1e6) for k in range(n)]
    lidar_el = cfg.lidar.elevations()
    T_ego_from_lidar = rig.lidar.T_base_from_lidar
    for t_us in sorted(events):
        t = t_us / 1e6
        k_key = key_us.index(t_us) if t_us in key_us else -1
        # sweeps -> following keyframe (camera frames after the last keyframe -> the last one)
        owner = k_key if k_key >= 0 else min(int(np.searchsorted(key_us, t_us)), n - 1)
        solids = world.solids_at(t)
        pos, yaw = world.ego_pose(t)
        T_map_ego = _ego_T(pos, yaw)
        ts = scene_t0 + t_us
        folder = "samples" if k_key >= 0 else "sweeps"
        depths, Ks, T_cam_ego = [], [], []
        cam_frames = {}
        for ch in events[t_us]:
            ego_tok = make_token(seed, "ego_pose", si, ch, t_us)
            tab.rows["ego_pose"].append({"token": ego_tok, "timestamp": ts, "rotation": rounded(_yaw_quat(yaw), 9),
                                      "translation": rounded(pos)})
            sd_tok = make_token(seed, "sample_data", si, ch, t_us)
            stem = f"{log_name}__{ch}__{ts}"
            if ch == "LIDAR_TOP":
                t1 = time.perf_counter()
                scan = lidar_scan(solids, world.ground, T_map_ego @ T_ego_from_lidar, cfg.lidar, rng_sensor)
                times.lidar += time.perf_counter() - t1
                t1 = time.perf_counter()
                fn = f"{folder}/{ch}/{stem}.pcd.bin"
                (tmp / folder / ch).mkdir(parents=True, exist_ok=True)
                (tmp / fn).write_bytes(scan.points.tobytes())
                if k_key >= 0:
                    seg = OCC3D_TO_LIDARSEG[scan.cls]
                    lfn = f"lidarseg/{VERSION}/{sd_tok}_lidarseg.bin"
                    (tmp / "lidarseg" / VERSION).mkdir(parents=True, exist_ok=True)
                    (tmp / lfn).write_bytes(seg.astype(np.uint8).tobytes())
                    tab.rows["lidarseg"].append({"token": sd_tok, "sample_data_token": sd_tok, "filename": lfn})
                    pfn = f"panoptic/{VERSION}/{sd_tok}_panoptic.npz"
                    (tmp / "panoptic" / VERSION).mkdir(parents=True, exist_ok=True)
                    save_npz(tmp / pfn, data=(seg.astype(np.uint16) * 1000 + scan.inst.astype(np.uint16)))
                    tab.rows["panoptic"].append({"token": sd_tok, "sample_data_token": sd_tok, "filename": pfn})
                    key_scan = scan
                times.write += time.perf_counter() - t1
                hw = (0, 0)
                fmt = "pcd"
            else:
                cam = rig.camera(ch)
                T_map_cam = T_map_ego @ cam.T_base_from_cam
                t1 = time.perf_counter()
                # adjacent frames draw their sensor noise from their own generator, so the keyframes
                # (and everything after them) come out as without camera_adjacent
                rng_cam = (np.random.default_rng([seed, si, 3, t_us + 10**9, CAMERAS.index(ch)])
                           if cfg.camera_adjacent and not cfg.camera_sweeps and k_key < 0 else rng_sensor)
                fr = render_camera(solids, world.ground, T_map_cam, cam.K, W, H, rng_cam)
                times.cameras += time.perf_counter() - t1
                t1 = time.perf_counter()
                fn = f"{folder}/{ch}/{stem}.jpg"
                (tmp / folder / ch).mkdir(parents=True, exist_ok=True)
                ok, buf = cv2.imencode(".jpg", fr.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                (tmp / fn).write_bytes(buf.tobytes())
                (tmp / "depth" / ch).mkdir(parents=True, exist_ok=True)
                d16 = np.clip(np.round(fr.depth * 256.0), 0, 65535).astype(np.uint16)
                ok, buf = cv2.imencode(".png", d16)
                (tmp / "depth" / ch / f"{stem}.png").write_bytes(buf.tobytes())
                if cfg.semantic2d:
                    (tmp / "semantic2d" / ch).mkdir(parents=True, exist_ok=True)
                    (tmp / "semantic2d" / ch / f"{stem}.png").write_bytes(encode_semantic_png(fr.cls.astype(np.uint8)))
                if cfg.semantic2d_corrupt:
                    # its own generator per image: the sensor stream (and so the images) stays the same
                    rng_c = np.random.default_rng([seed, si, 2, t_us + 10**9, CAMERAS.index(ch)])
                    bad = corrupt_semantic2d(fr.cls, fr.inst, rng_c)
                    (tmp / "semantic2d_corrupt" / ch).mkdir(parents=True, exist_ok=True)
                    (tmp / "semantic2d_corrupt" / ch / f"{stem}.png").write_bytes(encode_semantic_png(bad))
                times.write += time.perf_counter() - t1
                depths.append(fr.depth)
                Ks.append(cam.K)
                T_cam_ego.append(invert_transform(cam.T_base_from_cam))
                cam_frames[ch] = (fr, T_map_cam, cam.K)
                hw = (H, W)
                fmt = "jpg"
            sd_rows[ch].append({"token": sd_tok, "sample_token": sample_tok[owner], "ego_pose_token": ego_tok,
                                "calibrated_sensor_token": calib[ch], "timestamp": ts, "fileformat": fmt,
                                "is_key_frame": k_key >= 0, "height": hw[0], "width": hw[1], "filename": fn,
                                "prev": "", "next": ""})
            _tick()
        if k_key < 0:
            continue
        # ---------------------------------------------------------- keyframe ground truth
        t1 = time.perf_counter()
        states = world.object_states(t)
        moving = np.abs(world.objects.speed) > 1e-6
        vel = np.zeros((len(world.objects) + 1, 3))
        vel[1:][moving] = states.velocity[moving]
        labels = label_voxels(solids, world.ground, T_map_ego, vel, cfg.grid)
        returns = key_scan.points[:, :3].astype(np.float64) @ T_ego_from_lidar[:3, :3].T + T_ego_from_lidar[:3, 3]
        mask_lidar = lidar_visibility(key_scan.range_image, key_scan.azimuth0, lidar_el, cfg.lidar.max_range,
                                      invert_transform(T_ego_from_lidar), cfg.grid, returns)
        mask_camera = camera_visibility(depths, Ks, T_cam_ego, cfg.grid)
        times.groundtruth += time.perf_counter() - t1
        t1 = time.perf_counter()
        gdir = tmp / "gts" / scene_name / sample_tok[k_key]
        gdir.mkdir(parents=True, exist_ok=True)
        save_npz(gdir / "labels.npz", semantics=labels.semantics, mask_lidar=mask_lidar, mask_camera=mask_camera)
        odir = tmp / "openocc_v2" / scene_name / sample_tok[k_key]
        odir.mkdir(parents=True, exist_ok=True)
        save_npz(odir / "labels.npz", semantics=OCC3D_TO_OPENOCC[labels.semantics], flow=labels.flow)
        times.write += time.perf_counter() - t1
        # ---------------------------------------------------------- annotations
        t1 = time.perf_counter()
        npts = np.bincount(key_scan.inst, minlength=len(world.objects) + 1)[1:]
        dist = np.hypot(*(states.center[:, :2] - pos[:2]).T)
        for oi in np.nonzero((npts > 0) | (dist <= ANNOTATION_RADIUS))[0]:
            c, yw = states.center[oi], float(states.yaw[oi])
            w_, l_, h_ = world.objects.wlh[oi]
            # visibility: share of 9 points (centre + shrunk corners) seen by some camera
            cx, cy = np.cos(yw), np.sin(yw)
            loc = np.array([[0, 0, 0]] + [[sx * l_ * 0.4, sy * w_ * 0.4, sz * h_ * 0.4]
                                           for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
            pts = c + np.stack([cx * loc[:, 0] - cy * loc[:, 1], cy * loc[:, 0] + cx * loc[:, 1], loc[:, 2]], 1)
            seen = np.zeros(len(pts), bool)
            for fr, T_map_cam, K in cam_frames.values():
                T = invert_transform(T_map_cam)
                pc = pts @ T[:3, :3].T + T[:3, 3]
                z = np.where(pc[:, 2] > 0.1, pc[:, 2], 1.0)
                u = np.floor(K[0, 0] * pc[:, 0] / z + K[0, 2]).astype(int)
                v = np.floor(K[1, 1] * pc[:, 1] / z + K[1, 2]).astype(int)
                inside = (pc[:, 2] > 0.1) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
                dm = fr.depth[v.clip(0, H - 1), u.clip(0, W - 1)]
                seen |= inside & ((dm == 0) | (pc[:, 2] <= dm + 0.5))
            attr = world.objects.attribute[oi]
            rec = {"token": make_token(seed, "sample_annotation", si, oi, k_key), "sample_token": sample_tok[k_key],
                   "instance_token": make_token(seed, "instance", si, oi),
                   "visibility_token": _visibility_token(float(seen.mean())),
                   "attribute_tokens": [make_token(seed, "attribute", attr)] if attr else [],
                   "translation": rounded(c), "size": rounded([w_, l_, h_]), "rotation": rounded(_yaw_quat(yw), 9),
                   "prev": "", "next": "", "num_lidar_pts": int(npts[oi]), "num_radar_pts": 0}
            ann_by_obj.setdefault(int(oi), []).append(rec)
        times.groundtruth += time.perf_counter() - t1

    for ch, rows in sd_rows.items():
        link(rows)
        tab.rows["sample_data"].extend(rows)
    for oi in sorted(ann_by_obj):
        name = world.objects.name[oi]
        tab.add_instance(make_token(seed, "instance", si, oi), make_token(seed, "category", CATEGORY_OF[name]),
                         ann_by_obj[oi])


def generate(cfg: SynthConfig, out: str | Path, overwrite: bool = False, progress: bool = True,
             rig: Rig | None = None, workers: int | None = None) -> SynthResult:
    """Generate ``cfg.scenes`` scenes into the dataroot ``out`` (see the module docstring).

    Scenes are generated by ``workers`` processes (default: one per CPU core, at most one per
    scene); the output does not depend on the worker count. ``times`` in the result are
    seconds per stage summed over scenes (so with 2 workers about twice the elapsed time).

    Raises :class:`~occ_core.errors.OccDataError` for a non-empty ``out`` without
    ``overwrite`` or an unwritable location.
    """
    out = Path(out).resolve()
    rig = (rig or load_rig()).scaled(*cfg.image_size)
    times = StageTimes()
    tab = NuScenesTables()
    n_workers = max(1, min(cfg.scenes, workers if workers is not None else (os.cpu_count() or 1)))
    with staged_dataroot(out, overwrite, VERSION) as tmp:
        tab.add_shared(cfg.seed, {"LIDAR_TOP": "lidar", **{ch: "camera" for ch in CAMERAS}}, "synthetic")
        n = cfg.samples_per_scene
        per_scene = n * 7 + (n - 1) * ((9 if cfg.sweeps else 0) + (6 * 5 if cfg.camera_sweeps else 0))
        if cfg.camera_adjacent and not cfg.camera_sweeps:
            per_scene += len({round((k * KEYFRAME_DT + j * CAMERA_DT) * 1e6) for k in range(n) for j in (-1, 1)}) * 6
        ctx = mp.get_context("fork")
        counter = ctx.Value("l", 0)
        jobs = [(cfg, si, rig, tmp) for si in range(cfg.scenes)]
        with tqdm(total=cfg.scenes * per_scene, desc="occ-synth", unit="frame", disable=not progress) as bar:
            if n_workers == 1:
                _init_worker(counter)
                results = []
                for job in jobs:
                    results.append(_scene_job(job))
                    bar.update(counter.value - bar.n)
            else:
                # workers die with this process, even on kill -9 (no orphans computing on)
                with ctx.Pool(n_workers, initializer=DieWithParent(_init_worker), initargs=(counter,)) as pool:
                    pending = pool.map_async(_scene_job, jobs, chunksize=1)
                    while not pending.ready():
                        pending.wait(0.5)
                        bar.update(counter.value - bar.n)
                    results = pending.get()
            bar.update(counter.value - bar.n)
        _init_worker(None)
        for part, st in results:  # in scene order, whatever the worker count
            for name, rows in part.items():
                tab.rows[name].extend(rows)
            for f in ("world", "lidar", "cameras", "groundtruth", "write"):
                setattr(times, f, getattr(times, f) + getattr(st, f))
        t1 = time.perf_counter()
        tab.write(tmp / VERSION)
        names = [r["name"] for r in tab.rows["scene"]]
        n_val = cfg.val_scenes if cfg.val_scenes is not None else (0 if len(names) < 2 else max(1, round(0.2 * len(names))))
        splits = {"train": names[: len(names) - n_val], "val": names[len(names) - n_val:]}
        (tmp / "splits.json").write_text(json.dumps(splits, indent=1))
        times.write += time.perf_counter() - t1
    return SynthResult(out, names, len(tab.rows["sample"]), len(tab.rows["sample_data"]), len(tab.rows["sample_annotation"]), times)
