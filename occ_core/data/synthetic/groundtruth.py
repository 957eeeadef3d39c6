"""Occupancy ground truth from the analytic world (not from the LiDAR).

Labels: a voxel takes the class of the surface or solid that intersects it. The ground surface
(height 0 on driveable surface, the curb height elsewhere) labels the voxel layer that contains
it, with the ground class under the voxel's column centre. A solid intersects a voxel when its
signed distance at the voxel centre is at most the voxel's inscribed radius (0.2 m), or, for
centres up to the circumscribed radius, at the centre of one of 27 sub-voxels at most the
sub-voxel's inscribed radius; all thresholds are widened by ``dilation`` (3 cm, the LiDAR's
range noise) so that the voxel a LiDAR return falls in carries its class.

Priority where several classes meet in one voxel (later wins): ground < manmade < vegetation <
trailer < bus < truck < construction_vehicle < car < barrier < motorcycle < bicycle <
traffic_cone < pedestrian (small and dynamic things are not swallowed by large ones). The
generator never produces Occ3D ``others``, so every label has an OpenOcc v2 class.

Visibility (Occ3D ``mask_lidar`` / ``mask_camera``) is ray cast against the analytic world
(the LiDAR's range image and the cameras' depth maps are those first hits): a voxel is visible
to a sensor when the first hit along the sensor's ray towards the voxel centre is not nearer
than the point where that ray enters the voxel (so the voxel holding a hit is visible, and the
free voxels in front of it). For the LiDAR the ray is
the nearest of its beams (so voxels outside the vertical field of view or beyond range are not
visible); for the cameras it is the pixel the centre projects to (the depth map), in front of
the camera and inside the image, in any of the six cameras.

Flow (OpenOcc v2): the velocity (m/s, x/y of the keyframe's base_link) of the moving object
whose label a voxel carries; zero elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from occ_core.classes import OCC3D_FREE, OCC3D_INDEX
from occ_core.data.synthetic.geometry import CURB_HEIGHT, Ground, Solids, sdf_box, sdf_cylinder, sdf_ellipsoid
from occ_core.grid import GridSpec

_PRIORITY_ORDER = ("driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation", "trailer",
                   "bus", "truck", "construction_vehicle", "car", "barrier", "motorcycle", "bicycle",
                   "traffic_cone", "pedestrian", "others")
PRIORITY = np.zeros(18, np.int64)
for _i, _n in enumerate(_PRIORITY_ORDER):
    PRIORITY[OCC3D_INDEX[_n]] = _i


@dataclass
class VoxelLabels:
    """Labels of one keyframe on a grid in base_link: ``semantics`` (X, Y, Z) uint8 Occ3D
    (17 free), ``instance`` (X, Y, Z) int32 object id (0 none), ``flow`` (X, Y, Z, 2) float32."""

    semantics: np.ndarray
    instance: np.ndarray
    flow: np.ndarray


def _grid_axes(grid: GridSpec) -> list[np.ndarray]:
    return [grid.range_min[a] + grid.voxel_size[a] * (np.arange(grid.dims[a]) + 0.5) for a in range(3)]


def label_voxels(solids: Solids, ground: Ground, T_map_from_ego: np.ndarray, velocity: np.ndarray,
                 grid: GridSpec, dilation: float = 0.03) -> VoxelLabels:
    """Semantic, instance and flow labels of ``grid`` placed at ``T_map_from_ego`` (4, 4).

    ``velocity`` (O + 1, 3): map-frame velocity per object id (row 0 unused).
    """
    X, Y, Z = grid.dims
    vs = np.asarray(grid.voxel_size)
    lo = np.asarray(grid.range_min)
    R = T_map_from_ego[:3, :3]
    t = T_map_from_ego[:3, 3]
    sem = np.full((X, Y, Z), OCC3D_FREE, np.uint8)
    inst = np.zeros((X, Y, Z), np.int32)
    ax = _grid_axes(grid)
    # ground surface layer
    gx, gy = np.meshgrid(ax[0], ax[1], indexing="ij")
    cols = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1) @ R.T + t
    gcls = ground.classes_at(cols[:, :2]).reshape(X, Y)
    gz = np.where(gcls == OCC3D_INDEX["driveable_surface"], 0.0, CURB_HEIGHT) - t[2]
    iz = np.floor((gz - lo[2]) / vs[2]).astype(np.int64)
    okz = (iz >= 0) & (iz < Z)
    ii, jj = np.nonzero(okz)
    sem[ii, jj, iz[ii, jj]] = gcls[ii, jj]

    # solids, in priority order
    half_vox = 0.5 * float(vs.min())
    circ = 0.5 * float(np.linalg.norm(vs))
    sub = (np.arange(3) - 1.0) / 3.0
    sub_off = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), -1).reshape(-1, 3) * vs  # (27, 3)
    sub_r = half_vox / 3.0
    items = []  # (priority, kind, index)
    for kind, cls in ((0, solids.box_cls), (1, solids.cyl_cls), (2, solids.ell_cls)):
        for i in range(len(cls)):
            items.append((PRIORITY[cls[i]], kind, i))
    items.sort()
    Rt = R.T
    for _, kind, i in items:
        if kind == 0:
            c, h, yaw = solids.box_center[i], solids.box_half[i], solids.box_yaw[i]
            rad = float(np.hypot(h[0], h[1]))
            zlo, zhi = c[2] - h[2], c[2] + h[2]
            cxy, cls, oid = c[:2], solids.box_cls[i], solids.box_inst[i]
            sdf = lambda p, c=c, h=h, yaw=yaw: sdf_box(p, c, h, yaw)  # noqa: E731
        elif kind == 1:
            cxy, z, r = solids.cyl_xy[i], solids.cyl_z[i], solids.cyl_r[i]
            rad, zlo, zhi = float(r), z[0], z[1]
            cls, oid = solids.cyl_cls[i], solids.cyl_inst[i]
            sdf = lambda p, cxy=cxy, z=z, r=r: sdf_cylinder(p, cxy, z, r)  # noqa: E731
        else:
            c, rr = solids.ell_center[i], solids.ell_radii[i]
            rad, zlo, zhi = float(rr[:2].max()), c[2] - rr[2], c[2] + rr[2]
            cxy, cls, oid = c[:2], solids.ell_cls[i], solids.ell_inst[i]
            sdf = lambda p, c=c, rr=rr: sdf_ellipsoid(p, c, rr)  # noqa: E731
        ce = (np.array([cxy[0], cxy[1], 0.0]) - t) @ R  # centre in ego
        m = rad + circ
        lo_i = np.floor((np.array([ce[0] - m, ce[1] - m, zlo - t[2] - circ]) - lo) / vs).astype(int)
        hi_i = np.floor((np.array([ce[0] + m, ce[1] + m, zhi - t[2] + circ]) - lo) / vs).astype(int) + 1
        lo_i = np.maximum(lo_i, 0)
        hi_i = np.minimum(hi_i, grid.dims)
        if np.any(hi_i <= lo_i):
            continue
        I, J, K = np.meshgrid(*(np.arange(lo_i[a], hi_i[a]) for a in range(3)), indexing="ij")
        idx = np.stack([I.ravel(), J.ravel(), K.ravel()], 1)
        ctr = lo + vs * (idx + 0.5)
        d = sdf(ctr @ Rt + t)
        hit = d <= half_vox + dilation
        band = np.nonzero((~hit) & (d <= circ + dilation))[0]
        if len(band):
            ps = (ctr[band, None, :] + sub_off[None]).reshape(-1, 3) @ Rt + t
            ds = sdf(ps).reshape(len(band), 27)
            hit[band] = (ds <= sub_r + dilation).any(axis=1)
        sel = idx[hit]
        sem[sel[:, 0], sel[:, 1], sel[:, 2]] = cls
        inst[sel[:, 0], sel[:, 1], sel[:, 2]] = oid
    # ground-class voxels carry no object
    inst[sem >= OCC3D_INDEX["driveable_surface"]] = 0
    flow = np.zeros((X, Y, Z, 2), np.float32)
    moving = inst > 0
    if moving.any():
        v_ego = velocity[inst[moving]] @ R  # map -> ego (rotation only)
        flow[moving] = v_ego[:, :2].astype(np.float32)
    return VoxelLabels(sem, inst, flow)


@lru_cache(maxsize=4)
def _centers(grid: GridSpec) -> np.ndarray:
    """(X * Y * Z, 3) voxel centres of ``grid`` (read-only, cached)."""
    c = grid.all_voxel_centers().reshape(-1, 3)
    c.flags.writeable = False
    return c


def _entry_distance(origin: np.ndarray, ctr: np.ndarray, voxel_size) -> tuple[np.ndarray, np.ndarray]:
    """Distance from ``origin`` (3,) to voxel centres ``ctr`` (N, 3) (same frame) (N,), and to
    the point where the segment origin -> centre enters that voxel (N,) (0 inside it)."""
    v = ctr - origin
    dist = np.sqrt((v * v).sum(axis=1))
    d = v / np.maximum(dist, 1e-9)[:, None]
    half = 0.5 * np.asarray(voxel_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = np.minimum((v - half) / d, (v + half) / d)
    near[np.abs(d) < 1e-12] = -np.inf
    return dist, np.maximum(near.max(axis=1), 0.0)


def lidar_visibility(range_image: np.ndarray, azimuth0: float, elevations: np.ndarray, max_range: float,
                     T_lidar_from_ego: np.ndarray, grid: GridSpec, returns: np.ndarray | None = None) -> np.ndarray:
    """(X, Y, Z) bool: voxels that the LiDAR's beams reach.

    ``range_image`` (beams, A) holds the first-hit distances (inf: none) of beams at
    ``elevations`` (rad, ascending) and azimuths ``azimuth0 + 2 pi k / A`` in the LiDAR frame.
    A voxel is visible when its centre lies within the vertical field of view (half a beam
    spacing beyond the outer beams), it is entered within ``max_range``, and one of the two beams
    bracketing the direction of its centre (nearest azimuth) is not stopped before the point
    where the ray to the centre enters the voxel. Voxels holding one of ``returns`` (N, 3)
    (the scan's points, base_link) are visible too: a return was measured there.
    """
    beams, A = range_image.shape
    T_ego_from_lidar = np.linalg.inv(T_lidar_from_ego)
    ctr = _centers(grid)
    p = ctr @ T_lidar_from_ego[:3, :3].T + T_lidar_from_ego[:3, 3]
    r = np.sqrt((p * p).sum(axis=1))
    el = np.arcsin(np.clip(p[:, 2] / np.maximum(r, 1e-9), -1, 1))
    step = (elevations[-1] - elevations[0]) / (beams - 1)
    fr = (el - elevations[0]) / step
    cand = np.nonzero((fr >= -0.5) & (fr <= beams - 0.5) & (r <= max_range + 1.0))[0]
    az = np.arctan2(p[cand, 1], p[cand, 0])
    col = np.rint((az - azimuth0) / (2 * np.pi) * A).astype(np.int64) % A
    lo_row = np.floor(fr[cand]).astype(np.int64).clip(0, beams - 1)
    hi_row = np.ceil(fr[cand]).astype(np.int64).clip(0, beams - 1)
    first = np.maximum(range_image[lo_row, col], range_image[hi_row, col])
    _, enter = _entry_distance(T_ego_from_lidar[:3, 3], ctr[cand], grid.voxel_size)
    vis = np.zeros(len(ctr), bool)
    vis[cand] = (enter <= first + 1e-3) & (enter <= max_range)
    vis = vis.reshape(grid.dims)
    if returns is not None and len(returns):
        idx, inside = grid.points_to_voxels(returns)
        vis[idx[inside, 0], idx[inside, 1], idx[inside, 2]] = True
    return vis


def camera_visibility(depths: list[np.ndarray], Ks: list[np.ndarray], T_cam_from_ego: list[np.ndarray],
                      grid: GridSpec, max_range: float = 120.0) -> np.ndarray:
    """(X, Y, Z) bool: voxels that some camera sees.

    A voxel is visible in a camera when its centre projects inside the image, in front of the
    camera, and that pixel's first hit (``depths``: (H, W) z-depth maps, 0 = no hit within
    ``max_range``) is not nearer than the point where the ray to the centre enters the voxel.
    The voxels holding a pixel's first hit are visible too (as :func:`lidar_visibility` does
    with the returns): the ray towards the centre of a ground voxel whose surface lies above
    that centre (sidewalks and terrain, raised by the curb) meets the neighbouring ground first.
    """
    ctr = _centers(grid)
    vis = np.zeros(len(ctr), bool)
    for depth, K, T in zip(depths, Ks, T_cam_from_ego):
        H, W = depth.shape
        vv, uu = np.nonzero(depth > 0)
        if len(vv):  # first hits through the pixel centres, back to base_link
            dz = depth[vv, uu].astype(np.float64)
            cam = np.stack([(uu + 0.5 - K[0, 2]) / K[0, 0] * dz, (vv + 0.5 - K[1, 2]) / K[1, 1] * dz, dz], 1)
            T_inv = np.linalg.inv(T)
            idx, inside = grid.points_to_voxels(cam @ T_inv[:3, :3].T + T_inv[:3, 3])
            vis[grid.flat_index(idx[inside])] = True
        p = ctr @ T[:3, :3].T + T[:3, 3]
        front = p[:, 2] > 0.1
        z = np.where(front, p[:, 2], 1.0)
        u = np.floor(K[0, 0] * p[:, 0] / z + K[0, 2]).astype(np.int64)
        v = np.floor(K[1, 1] * p[:, 1] / z + K[1, 2]).astype(np.int64)
        cand = np.nonzero(front & (u >= 0) & (u < W) & (v >= 0) & (v < H) & ~vis)[0]
        dm = depth[v[cand], u[cand]].astype(np.float64)
        dm = np.where(dm > 0, dm, np.inf)
        dist, enter = _entry_distance(np.linalg.inv(T)[:3, 3], ctr[cand], grid.voxel_size)
        z_enter = enter * z[cand] / np.maximum(dist, 1e-9)  # z-depth of the entry point
        vis[cand] = (z_enter <= dm + 1e-3) & (enter <= max_range)
    return vis.reshape(grid.dims)
