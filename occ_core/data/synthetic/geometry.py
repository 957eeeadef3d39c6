"""Analytic world geometry: primitives, ray casting and signed distances, vectorised in numpy.

All coordinates are in the global ``map`` frame (metres, z up). The world is a flat ground
(height 0 where the semantic raster says ``driveable_surface``, :data:`CURB_HEIGHT` elsewhere,
so that sidewalks, islands and terrain are raised behind a curb) plus three kinds of solids:

- oriented boxes (yaw about +z): vehicles, buildings, walls, barriers;
- vertical cylinders (capped): poles, trunks, pedestrians, cones;
- axis-aligned ellipsoids: tree crowns, bushes.

:func:`cast_rays` answers "first hit along these rays from one origin" (distance, Occ3D class,
instance id, unit normal); it serves the LiDAR, the cameras and the depth maps.
:func:`signed_distance` answers "how far is each point from each solid" for the voxel labels.
Rays are grouped into azimuth sectors around the origin and each sector is intersected only
with the solids whose bounding circle overlaps it (and that are within range).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occ_core.classes import OCC3D_FREE, OCC3D_INDEX

#: Height (m) of every ground cell that is not driveable surface (sidewalks, islands, terrain).
CURB_HEIGHT = 0.15
DRIVEABLE = OCC3D_INDEX["driveable_surface"]
NO_CLASS = OCC3D_FREE  # class of rays that hit nothing


@dataclass
class Solids:
    """Solids of the world at one instant, in the map frame.

    Boxes: ``box_center`` (Nb, 3) centre, ``box_half`` (Nb, 3) half extents along the box's own
    x (length), y (width), z, ``box_yaw`` (Nb,) heading. Cylinders: ``cyl_xy`` (Nc, 2) axis,
    ``cyl_z`` (Nc, 2) bottom and top, ``cyl_r`` (Nc,). Ellipsoids: ``ell_center`` (Ne, 3),
    ``ell_radii`` (Ne, 3). Each kind has ``*_cls`` (Occ3D class, uint8) and ``*_inst`` (object
    id, 0 for stuff such as buildings and trees, int32).
    """

    box_center: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box_half: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box_yaw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    box_cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    box_inst: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    cyl_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    cyl_z: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    cyl_r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cyl_cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    cyl_inst: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    ell_center: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    ell_radii: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    ell_cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    ell_inst: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    @staticmethod
    def concat(parts: list["Solids"]) -> "Solids":
        out = Solids()
        for name in out.__dataclass_fields__:
            setattr(out, name, np.concatenate([getattr(p, name) for p in parts], axis=0))
        return out

    def bounds(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per kind (box, cylinder, ellipsoid): bounding circle centre (N, 2), radius (N,), top z (N,)."""
        box_r = np.hypot(self.box_half[:, 0], self.box_half[:, 1])
        ell_r = self.ell_radii[:, :2].max(axis=1) if len(self.ell_radii) else np.zeros(0)
        return [
            (self.box_center[:, :2], box_r, self.box_center[:, 2] + self.box_half[:, 2]),
            (self.cyl_xy, self.cyl_r, self.cyl_z[:, 1]),
            (self.ell_center[:, :2], ell_r, self.ell_center[:, 2] + self.ell_radii[:, 2]),
        ]


@dataclass
class Ground:
    """The ground: a semantic raster (Occ3D classes) over the map frame, heights from it.

    ``raster[row, col]`` covers the cell with lower corner ``origin + res * (col, row)``;
    cells outside the raster are terrain.
    """

    raster: np.ndarray  # (H, W) uint8 Occ3D class
    origin: np.ndarray  # (2,) map x, y of the raster's corner
    res: float
    paint: np.ndarray | None = None  # (H, W) uint8, 1 on lane markings (appearance only)

    def _cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        col = np.floor((xy[..., 0] - self.origin[0]) / self.res).astype(np.int64)
        row = np.floor((xy[..., 1] - self.origin[1]) / self.res).astype(np.int64)
        h, w = self.raster.shape
        return row, col, (col >= 0) & (col < w) & (row >= 0) & (row < h)

    def paint_at(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool: map points xy (N, 2) on a lane marking."""
        row, col, inside = self._cells(xy)
        out = np.zeros(row.shape, bool)
        if self.paint is not None:
            out[inside] = self.paint[row[inside], col[inside]] > 0
        return out

    def classes_at(self, xy: np.ndarray) -> np.ndarray:
        """Occ3D class (N,) uint8 of the ground under map points xy (N, 2)."""
        row, col, inside = self._cells(xy)
        out = np.full(col.shape, OCC3D_INDEX["terrain"], np.uint8)
        out[inside] = self.raster[row[inside], col[inside]]
        return out

    def heights_at(self, xy: np.ndarray) -> np.ndarray:
        """Ground height (N,) of map points xy (N, 2)."""
        return np.where(self.classes_at(xy) == DRIVEABLE, 0.0, CURB_HEIGHT)


@dataclass
class RayHits:
    """First hits of R rays: ``distance`` (R,) metres (inf: none), ``cls`` (R,) uint8 Occ3D
    class (17 = free: none), ``inst`` (R,) int32 object id (0 = stuff or none), ``normal`` (R, 3)."""

    distance: np.ndarray
    cls: np.ndarray
    inst: np.ndarray
    normal: np.ndarray


def _ground_hits(ground: Ground, o: np.ndarray, d: np.ndarray, max_range: float, curb_steps: int = 6):
    """Hits of rays from origin o (3,) along d (R, 3) with the stepped ground."""
    R = len(d)
    t = np.full(R, np.inf)
    cls = np.full(R, NO_CLASS, np.uint8)
    normal = np.zeros((R, 3))
    down = d[:, 2] < -1e-9
    if o[2] <= CURB_HEIGHT or not np.any(down):
        return t, cls, normal
    dz = d[down, 2]
    t_top = (CURB_HEIGHT - o[2]) / dz
    t_low = (0.0 - o[2]) / dz
    p_top = o[:2] + t_top[:, None] * d[down, :2]
    c_top = ground.classes_at(p_top)
    tt = np.where(c_top != DRIVEABLE, t_top, np.inf)
    ct = np.where(c_top != DRIVEABLE, c_top, NO_CLASS).astype(np.uint8)
    nrm = np.zeros((len(dz), 3))
    nrm[:, 2] = 1.0
    # rays that pass over driveable surface at curb height: look for a curb face below
    todo = np.isinf(tt)
    if np.any(todo):
        idx = np.nonzero(todo)[0]
        fr = (np.arange(1, curb_steps + 1) / (curb_steps + 1))[None, :]
        ts = t_top[idx, None] + fr * (t_low[idx] - t_top[idx])[:, None]  # (n, S)
        ps = o[:2] + ts[..., None] * d[down][idx, None, :2]
        cs = ground.classes_at(ps)
        raised = cs != DRIVEABLE
        any_r = raised.any(axis=1)
        first = raised.argmax(axis=1)
        ar = np.arange(len(idx))
        t_face = np.where(any_r, ts[ar, first], t_low[idx])
        c_face = np.where(any_r, cs[ar, first], DRIVEABLE)
        tt[idx] = t_face
        ct[idx] = c_face
        face_n = np.zeros((len(idx), 3))
        dxy = d[down][idx, :2]
        face_n[:, :2] = -dxy / np.maximum(np.linalg.norm(dxy, axis=1, keepdims=True), 1e-9)
        face_n[~any_r] = (0.0, 0.0, 1.0)
        nrm[idx] = face_n
    ok = tt <= max_range
    t[down] = np.where(ok, tt, np.inf)
    cls[down] = np.where(ok, ct, NO_CLASS)
    normal[down] = nrm
    return t, cls, normal


def _box_hits(o, d, center, half, yaw):
    """(R, P) entry distance (inf: miss) and local hit axis/sign of rays d (R, 3) from o with boxes."""
    c, s = np.cos(yaw), np.sin(yaw)
    p = o[None, :] - center  # (P, 3)
    ox = c * p[:, 0] + s * p[:, 1]
    oy = -s * p[:, 0] + c * p[:, 1]
    oz = p[:, 2]
    dx = d[:, :1] * c + d[:, 1:2] * s  # (R, P)
    dy = -d[:, :1] * s + d[:, 1:2] * c
    dz = np.broadcast_to(d[:, 2:3], dx.shape)
    tmin = np.full(dx.shape, -np.inf)
    tmax = np.full(dx.shape, np.inf)
    axis = np.zeros(dx.shape, np.int8)
    sign = np.zeros(dx.shape)
    for a, (oa, da, ha) in enumerate(((ox, dx, half[:, 0]), (oy, dy, half[:, 1]), (oz, dz, half[:, 2]))):
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(da) < 1e-12, 1e-12, da)
            t1 = (-ha - oa) * inv
            t2 = (ha - oa) * inv
        near = np.minimum(t1, t2)
        far = np.maximum(t1, t2)
        better = near > tmin
        tmin = np.where(better, near, tmin)
        axis = np.where(better, a, axis)
        sign = np.where(better, -np.sign(da), sign)
        tmax = np.minimum(tmax, far)
    hit = (tmax >= tmin) & (tmin > 1e-6)
    t = np.where(hit, tmin, np.inf)
    return t, axis, sign


def _cyl_hits(o, d, xy, z, r):
    """(R, P) entry distance (inf: miss) and cap flag of rays from o with capped vertical cylinders."""
    p = o[None, :2] - xy  # (P, 2)
    a = d[:, 0] ** 2 + d[:, 1] ** 2  # (R,)
    b = 2.0 * (d[:, :1] * p[:, 0] + d[:, 1:2] * p[:, 1])  # (R, P)
    c = (p ** 2).sum(axis=1) - r ** 2  # (P,)
    disc = b * b - 4.0 * a[:, None] * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / (2.0 * a[:, None])
    zs = o[2] + ts * d[:, 2:3]
    side = (disc >= 0) & (ts > 1e-6) & (zs >= z[:, 0]) & (zs <= z[:, 1])
    t = np.where(side, ts, np.inf)
    # top cap, seen from above
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (z[:, 1] - o[2]) / d[:, 2:3]
    px = p[:, 0] + tc * d[:, :1]
    py = p[:, 1] + tc * d[:, 1:2]
    cap = (d[:, 2:3] < 0) & (tc > 1e-6) & (px * px + py * py <= r * r) & (o[2] > z[:, 1])
    use_cap = cap & (tc < t)
    t = np.where(use_cap, tc, t)
    return t, use_cap


def _ell_hits(o, d, center, radii):
    """(R, P) entry distance (inf: miss) of rays from o with axis-aligned ellipsoids."""
    p = (o[None, :] - center) / radii  # (P, 3)
    ds = d[:, None, :] / radii[None, :, :]  # (R, P, 3)
    a = (ds * ds).sum(-1)
    b = 2.0 * (ds * p[None]).sum(-1)
    c = (p * p).sum(-1) - 1.0
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2.0 * a)
    return np.where((disc >= 0) & (t > 1e-6), t, np.inf)


def _sector_of(az: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(((az + np.pi) / (2 * np.pi) * n).astype(np.int64), n - 1)


def cast_rays(solids: Solids, ground: Ground, origin: np.ndarray, dirs: np.ndarray,
              max_range: float, sectors: int = 72) -> RayHits:
    """First hit of rays from one origin.

    Args:
        solids, ground: the world at the sensor's instant (map frame).
        origin: (3,) ray origin in the map frame.
        dirs: (R, 3) unit directions in the map frame.
        max_range: hits beyond this distance (m) count as none.
        sectors: azimuth sectors for culling (more for dense camera rays).

    Returns:
        :class:`RayHits` for the R rays.
    """
    o = np.asarray(origin, np.float64)
    d = np.asarray(dirs, np.float64)
    t, cls, normal = _ground_hits(ground, o, d, max_range)
    inst = np.zeros(len(d), np.int32)
    az = np.arctan2(d[:, 1], d[:, 0])
    sec = _sector_of(az, sectors)
    order = np.argsort(sec, kind="stable")
    starts = np.searchsorted(sec[order], np.arange(sectors + 1))
    width = 2 * np.pi / sectors
    sec_lo = -np.pi + width * np.arange(sectors)

    kinds = solids.bounds()
    masks = []  # per kind: (P, sectors) bool
    slopes = []  # per kind: (P,) steepest rise (dz / horizontal distance) of a ray that can reach it
    for centre, rad, top in kinds:
        v = centre - o[:2]
        dist = np.hypot(v[:, 0], v[:, 1])
        in_range = (dist - rad) <= max_range
        close = dist <= rad + 1e-6
        rise = top - o[2]  # steepest at the nearest point when the top is above the origin, else the farthest
        slopes.append(np.where(close, np.inf, rise / np.where(rise >= 0, np.maximum(dist - rad, 1e-3), dist + rad)))
        half = np.arcsin(np.clip(rad / np.maximum(dist, 1e-9), 0.0, 1.0))
        caz = np.arctan2(v[:, 1], v[:, 0])
        # angular distance from each sector's centre to the solid's centre azimuth
        diff = np.abs((caz[:, None] - (sec_lo + width / 2)[None, :] + np.pi) % (2 * np.pi) - np.pi)
        m = (diff <= half[:, None] + width / 2) | close[:, None]
        masks.append(m & in_range[:, None])

    ray_slope = d[:, 2] / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-12)
    # per sector: the steepest ray that can still reach a solid's top, and which kinds are present
    top_slope = np.full(sectors, -np.inf)
    for sl, m in zip(slopes, masks):
        if len(sl):
            top_slope = np.maximum(top_slope, np.where(m, sl[:, None], -np.inf).max(axis=0))
    present = [m.any(axis=0) for m in masks]
    for s in range(sectors):
        a, b = starts[s], starts[s + 1]
        if a == b or top_slope[s] == -np.inf:
            continue
        ridx = order[a:b]
        # rays climbing more steeply than towards any solid's top in this sector hit no solid
        ridx = ridx[ray_slope[ridx] <= top_slope[s]]
        if len(ridx) == 0:
            continue
        dr = d[ridx]
        best = t[ridx]
        bcls = cls[ridx]
        binst = inst[ridx]
        bnorm = normal[ridx]
        m = masks[0][:, s]
        if present[0][s]:
            pi = np.nonzero(m)[0]
            tb, axis, sign = _box_hits(o, dr, solids.box_center[pi], solids.box_half[pi], solids.box_yaw[pi])
            j = tb.argmin(axis=1)
            ar = np.arange(len(ridx))
            tj = tb[ar, j]
            upd = tj < best
            if upd.any():
                best = np.where(upd, tj, best)
                bcls = np.where(upd, solids.box_cls[pi][j], bcls)
                binst = np.where(upd, solids.box_inst[pi][j], binst)
                yaw = solids.box_yaw[pi][j]
                ax = axis[ar, j]
                sg = sign[ar, j]
                nl = np.zeros((len(ridx), 3))
                nl[ax == 0, 0] = np.cos(yaw[ax == 0]) * sg[ax == 0]
                nl[ax == 0, 1] = np.sin(yaw[ax == 0]) * sg[ax == 0]
                nl[ax == 1, 0] = -np.sin(yaw[ax == 1]) * sg[ax == 1]
                nl[ax == 1, 1] = np.cos(yaw[ax == 1]) * sg[ax == 1]
                nl[ax == 2, 2] = sg[ax == 2]
                bnorm = np.where(upd[:, None], nl, bnorm)
        m = masks[1][:, s]
        if present[1][s]:
            pi = np.nonzero(m)[0]
            tc, capf = _cyl_hits(o, dr, solids.cyl_xy[pi], solids.cyl_z[pi], solids.cyl_r[pi])
            j = tc.argmin(axis=1)
            ar = np.arange(len(ridx))
            tj = tc[ar, j]
            upd = tj < best
            if upd.any():
                best = np.where(upd, tj, best)
                bcls = np.where(upd, solids.cyl_cls[pi][j], bcls)
                binst = np.where(upd, solids.cyl_inst[pi][j], binst)
                hp = o[:2] + np.where(upd, tj, 0.0)[:, None] * dr[:, :2] - solids.cyl_xy[pi][j]
                nl = np.zeros((len(ridx), 3))
                nl[:, :2] = hp / np.maximum(np.linalg.norm(hp, axis=1, keepdims=True), 1e-9)
                cj = capf[ar, j]
                nl[cj] = (0.0, 0.0, 1.0)
                bnorm = np.where(upd[:, None], nl, bnorm)
        m = masks[2][:, s]
        if present[2][s]:
            pi = np.nonzero(m)[0]
            te = _ell_hits(o, dr, solids.ell_center[pi], solids.ell_radii[pi])
            j = te.argmin(axis=1)
            ar = np.arange(len(ridx))
            tj = te[ar, j]
            upd = tj < best
            if upd.any():
                best = np.where(upd, tj, best)
                bcls = np.where(upd, solids.ell_cls[pi][j], bcls)
                binst = np.where(upd, solids.ell_inst[pi][j], binst)
                hp = (o + np.where(upd, tj, 0.0)[:, None] * dr - solids.ell_center[pi][j]) / solids.ell_radii[pi][j] ** 2
                nl = hp / np.maximum(np.linalg.norm(hp, axis=1, keepdims=True), 1e-9)
                bnorm = np.where(upd[:, None], nl, bnorm)
        far = best > max_range
        best = np.where(far, np.inf, best)
        bcls = np.where(far, NO_CLASS, bcls)
        binst = np.where(far, 0, binst)
        t[ridx] = best
        cls[ridx] = bcls
        inst[ridx] = binst
        normal[ridx] = bnorm
    return RayHits(t, cls, inst, normal)


# ----------------------------------------------------------------------------- signed distances
def sdf_box(p: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    """Exact signed distance (N,) of points p (N, 3) to one oriented box."""
    c, s = np.cos(yaw), np.sin(yaw)
    q = p - center
    lx = c * q[:, 0] + s * q[:, 1]
    ly = -s * q[:, 0] + c * q[:, 1]
    e = np.abs(np.stack([lx, ly, q[:, 2]], axis=1)) - half
    outside = np.linalg.norm(np.maximum(e, 0.0), axis=1)
    inside = np.minimum(e.max(axis=1), 0.0)
    return outside + inside


def sdf_cylinder(p: np.ndarray, xy: np.ndarray, z: np.ndarray, r: float) -> np.ndarray:
    """Exact signed distance (N,) of points p (N, 3) to one capped vertical cylinder."""
    dr = np.hypot(p[:, 0] - xy[0], p[:, 1] - xy[1]) - r
    zc = 0.5 * (z[0] + z[1])
    dz = np.abs(p[:, 2] - zc) - 0.5 * (z[1] - z[0])
    e = np.stack([dr, dz], axis=1)
    return np.linalg.norm(np.maximum(e, 0.0), axis=1) + np.minimum(e.max(axis=1), 0.0)


def sdf_ellipsoid(p: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Signed distance bound (N,) of points p (N, 3) to one ellipsoid (exact for spheres;
    the usual first-order estimate ``k0 (k0 - 1) / k1`` otherwise)."""
    q = p - center
    k0 = np.linalg.norm(q / radii, axis=1)
    k1 = np.linalg.norm(q / radii ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = k0 * (k0 - 1.0) / k1
    return np.where(k1 > 1e-12, v, -radii.min())
