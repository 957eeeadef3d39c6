"""Simulated sensors: a 32-beam spinning LiDAR and pinhole cameras, both ray cast into the
analytic world (:func:`~.geometry.cast_rays`).

LiDAR (nuScenes LIDAR_TOP, Velodyne HDL-32E): 32 beams evenly spaced over -30.67..+10.67 deg
elevation, 1,080 azimuth steps per turn, 70 m range, Gaussian range noise and range-dependent
dropout; intensity from a per-class reflectivity and the incidence angle. Points are in the
LIDAR_TOP frame, ``[x, y, z, intensity, ring]`` float32. The whole turn is taken at the sweep's
timestamp (no rolling shutter / motion distortion, like motion-compensated nuScenes sweeps).

Cameras: one ray per pixel centre through ``K^-1``; colour = per-class base colour (varied per
object and per building block) x Lambert shading x two octaves of position-hashed texture
noise, distance haze, a sky gradient, road markings (from the ground's paint raster), sensor noise. Depth maps hold the
z-depth (metres along the optical axis) of the first hit, 0 where the ray hits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occ_core.classes import OCC3D_INDEX
from occ_core.data.synthetic.geometry import Ground, RayHits, Solids, cast_rays

C = OCC3D_INDEX


@dataclass(frozen=True)
class LidarConfig:
    """Spinning LiDAR parameters (nuScenes HDL-32E defaults)."""

    beams: int = 32
    elevation_min_deg: float = -30.67
    elevation_max_deg: float = 10.67
    azimuth_steps: int = 1080
    max_range: float = 70.0
    range_noise: float = 0.01
    dropout: float = 0.02

    def elevations(self) -> np.ndarray:
        """(beams,) beam elevations in radians, ring 0 lowest."""
        return np.deg2rad(np.linspace(self.elevation_min_deg, self.elevation_max_deg, self.beams))


@dataclass
class LidarScan:
    """One LiDAR turn.

    ``points`` (N, 5) float32 ``[x, y, z, intensity, ring]`` in the LIDAR_TOP frame; ``cls``
    (N,) Occ3D class and ``inst`` (N,) object id of each point; ``range_image`` (beams,
    azimuth_steps) true first-hit distance (inf: none) with ``azimuth0`` the azimuth (rad, LiDAR
    frame) of column 0.
    """

    points: np.ndarray
    cls: np.ndarray
    inst: np.ndarray
    range_image: np.ndarray
    azimuth0: float


# reflectivity per Occ3D class (0..1)
_REFLECT = np.full(18, 0.2)
for _n, _r in {"driveable_surface": 0.06, "sidewalk": 0.12, "other_flat": 0.1, "terrain": 0.14, "manmade": 0.18,
               "vegetation": 0.22, "car": 0.3, "truck": 0.3, "bus": 0.3, "trailer": 0.28,
               "construction_vehicle": 0.35, "pedestrian": 0.15, "motorcycle": 0.3, "bicycle": 0.25,
               "traffic_cone": 0.9, "barrier": 0.6}.items():
    _REFLECT[C[_n]] = _r


def lidar_scan(solids: Solids, ground: Ground, T_map_from_lidar: np.ndarray, cfg: LidarConfig,
               rng: np.random.Generator) -> LidarScan:
    """Simulate one turn of the LiDAR whose pose is ``T_map_from_lidar`` (4, 4)."""
    el = cfg.elevations()
    az0 = float(rng.uniform(-np.pi, -np.pi + 2 * np.pi / cfg.azimuth_steps))
    az = az0 + 2 * np.pi * np.arange(cfg.azimuth_steps) / cfg.azimuth_steps
    E, A = np.meshgrid(el, az, indexing="ij")
    d_lidar = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], axis=-1).reshape(-1, 3)
    ring = np.repeat(np.arange(cfg.beams), cfg.azimuth_steps)
    R = T_map_from_lidar[:3, :3]
    hits = cast_rays(solids, ground, T_map_from_lidar[:3, 3], d_lidar @ R.T, cfg.max_range, sectors=72)
    rng_img = hits.distance.reshape(cfg.beams, cfg.azimuth_steps)
    t = hits.distance
    ok = np.isfinite(t)
    # dropout grows with range; dark surfaces drop more
    p_drop = cfg.dropout + 0.25 * (np.where(ok, t, 0) / cfg.max_range) ** 2 * (1.0 - _REFLECT[hits.cls])
    ok &= rng.random(len(t)) >= p_drop
    noisy = t + rng.normal(0.0, cfg.range_noise, len(t))
    cos_inc = np.abs((hits.normal * (d_lidar @ R.T)).sum(axis=1))
    inten = 255.0 * _REFLECT[hits.cls] * (0.3 + 0.7 * cos_inc) * np.exp(-np.where(ok, t, 0) / 120.0)
    inten = np.clip(np.round(inten + rng.normal(0, 1.5, len(t))), 0, 255)
    pts = np.concatenate([d_lidar[ok] * noisy[ok, None], inten[ok, None], ring[ok, None]], axis=1).astype(np.float32)
    return LidarScan(pts, hits.cls[ok], hits.inst[ok], rng_img, az0)


# ----------------------------------------------------------------------------- cameras
_BASE = np.zeros((18, 3))
for _n, _c in {"driveable_surface": (72, 72, 76), "sidewalk": (150, 147, 140), "other_flat": (118, 112, 100),
               "terrain": (98, 112, 62), "manmade": (170, 160, 145), "vegetation": (55, 105, 45),
               "car": (120, 120, 120), "truck": (200, 200, 195), "bus": (210, 180, 40), "trailer": (180, 180, 175),
               "construction_vehicle": (235, 170, 30), "pedestrian": (90, 80, 110), "motorcycle": (60, 60, 70),
               "bicycle": (40, 80, 140), "traffic_cone": (245, 110, 25), "barrier": (225, 225, 220),
               "others": (128, 128, 128)}.items():
    _BASE[C[_n]] = _c
_TEX = np.full(18, 0.08)
for _n, _a in {"terrain": 0.25, "vegetation": 0.35, "sidewalk": 0.1, "driveable_surface": 0.12, "manmade": 0.12,
               "other_flat": 0.15}.items():
    _TEX[C[_n]] = _a
_CAR_PAINT = np.array([(20, 20, 22), (235, 235, 235), (140, 140, 145), (120, 20, 25), (25, 45, 110),
                       (200, 200, 205), (60, 70, 60), (160, 120, 60), (30, 30, 35), (90, 95, 100)], float)
_FACADE = np.array([(170, 160, 145), (150, 80, 60), (200, 195, 185), (110, 110, 115), (185, 170, 130),
                    (90, 85, 80)], float)
_CLOTHES = np.array([(30, 30, 40), (60, 70, 120), (150, 40, 40), (200, 200, 200), (90, 80, 60), (40, 90, 60)], float)
SUN = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])
SKY_TOP = np.array([95, 140, 205], float)
SKY_HORIZON = np.array([200, 215, 230], float)


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic value in [0, 1) per integer lattice point."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (iz.astype(np.int64) * 83492791) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float64) / 65536.0


def _noise(p: np.ndarray, cell: float, seed: int) -> np.ndarray:
    q = np.floor(p / cell).astype(np.int64)
    return _hash01(q[:, 0], q[:, 1], q[:, 2], seed) * 2.0 - 1.0


@dataclass
class CameraFrame:
    """One rendered image: ``image`` (H, W, 3) uint8 BGR, ``depth`` (H, W) float32 z-depth in
    metres (0 = nothing hit), ``cls`` (H, W) uint8 Occ3D class (17 = sky), ``inst`` (H, W)."""

    image: np.ndarray
    depth: np.ndarray
    cls: np.ndarray
    inst: np.ndarray


def render_camera(solids: Solids, ground: Ground, T_map_from_cam: np.ndarray, K: np.ndarray,
                  width: int, height: int, rng: np.random.Generator, max_range: float = 120.0) -> CameraFrame:
    """Ray cast one pinhole camera (optical frame: x right, y down, z forward) at pose
    ``T_map_from_cam`` (4, 4) with intrinsics ``K`` (3, 3) for a ``width`` x ``height`` image."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    d_cam = pix @ np.linalg.inv(K).T
    d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
    R = T_map_from_cam[:3, :3]
    o = T_map_from_cam[:3, 3]
    d = d_cam @ R.T
    hits: RayHits = cast_rays(solids, ground, o, d, max_range, sectors=360)
    t = hits.distance
    ok = np.isfinite(t)
    n = len(t)
    col = np.empty((n, 3))
    # sky
    elev = np.clip(d[:, 2], 0.0, 1.0) ** 0.6
    col[:] = SKY_HORIZON + (SKY_TOP - SKY_HORIZON) * elev[:, None]
    idx = np.nonzero(ok)[0]
    if len(idx):
        p = o + t[idx, None] * d[idx]
        cls = hits.cls[idx]
        inst = hits.inst[idx]
        base = _BASE[cls].copy()
        # per-object paint / clothes, per-block facades
        car_like = np.isin(cls, [C["car"], C["truck"], C["trailer"], C["motorcycle"], C["bicycle"]])
        pick = (inst.astype(np.int64) * 7919) % len(_CAR_PAINT)
        base[car_like] = 0.35 * base[car_like] + 0.65 * _CAR_PAINT[pick[car_like]]
        ped = cls == C["pedestrian"]
        base[ped] = _CLOTHES[(inst[ped].astype(np.int64) * 31) % len(_CLOTHES)]
        mm = cls == C["manmade"]
        if mm.any():
            blk = np.floor(p[mm, :2] / 12.0).astype(np.int64)
            base[mm] = _FACADE[(_hash01(blk[:, 0], blk[:, 1], np.zeros(len(blk), np.int64), 7) * len(_FACADE)).astype(int)]
            # windows: darker rectangles on facades above 1 m
            win = (np.abs((p[mm, 2] % 3.0) - 1.6) < 0.6) & (_noise(p[mm], 1.4, 11) > -0.2) & (p[mm, 2] > 1.0)
            base[np.nonzero(mm)[0][win]] *= 0.45
        bar = cls == C["barrier"]
        stripe = bar & ((p[:, 2] % 0.4) < 0.2)
        base[stripe] = (200, 40, 35)
        cone = cls == C["traffic_cone"]
        band = cone & (np.abs((p[:, 2] % 1.0) - 0.5) < 0.08)
        base[band] = (240, 240, 240)
        if ground.paint is not None:
            road = np.nonzero(cls == C["driveable_surface"])[0]
            base[road[ground.paint_at(p[road, :2])]] = (215, 215, 205)
        # texture noise (two octaves, in world space) and Lambert shading
        tex = 1.0 + _TEX[cls] * (0.6 * _noise(p, 0.07, 1) + 0.4 * _noise(p, 0.6, 2))
        lam = np.clip((hits.normal[idx] * SUN).sum(axis=1), 0.0, 1.0)
        shade = 0.45 + 0.6 * lam
        c = base * (tex * shade)[:, None]
        haze = 1.0 - np.exp(-t[idx] / 220.0)
        col[idx] = c * (1 - haze[:, None]) + SKY_HORIZON * haze[:, None]
    col += rng.normal(0.0, 2.0, col.shape)
    img = np.clip(np.round(col), 0, 255).astype(np.uint8).reshape(height, width, 3)[:, :, ::-1]
    depth = np.where(ok, t * d_cam[:, 2], 0.0).astype(np.float32).reshape(height, width)
    return CameraFrame(np.ascontiguousarray(img), depth, hits.cls.reshape(height, width),
                       hits.inst.reshape(height, width))
