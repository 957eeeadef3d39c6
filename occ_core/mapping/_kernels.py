"""Numba kernels of :mod:`occ_core.mapping.rolling` (the numpy reference sits beside them there).

Storage (a ring buffer: global voxel ``g`` of the odom lattice lives at ``g mod dims``):

- ``occ`` (X, Y, Z) float32 occupancy log-odds, NaN = never observed;
- ``ev`` (X, Y, Z, K) uint16 per-class evidence of the K = 17 occupied Occ3D classes, a moving
  average in [0, 1] in fixed point (:data:`EVIDENCE_SCALE` = 1);
- ``cls`` (X, Y, Z) uint8 the class of largest evidence (kept with it: reads need no argmax).

Voxel centres: map ``anchor + vs * (g + 0.5)`` in odom; ego ``emin + evs * (i + 0.5)`` in base_link.
The nearest-neighbour resampling between the two is a gather: a map voxel takes the ego voxel
that contains its centre (integration), an ego voxel the map voxel that contains its centre
(crop). Observations are ``(label, score, visible)`` ego grids; ``label == free`` is a free
observation. Sequential loops (each voxel is written once per call).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Fixed-point value of evidence 1 (uint16 storage).
EVIDENCE_SCALE = 65535.0
#: Label written for a voxel the map has never observed.
UNKNOWN = 255


@njit(cache=True, nogil=True, inline="always")
def logodds(s, max_lo):
    """An observation's log-odds: ``min(logit(s), max_lo)``, 0 for ``s <= 0.5``."""
    if s <= 0.5:
        return 0.0
    if s >= 1.0:
        return max_lo
    return min(math.log(s / (1.0 - s)), max_lo)


@njit(cache=True, nogil=True, inline="always")
def _observe_occupied(l_old, ev, mx, my, mz, valid, dst, dx, dy, dz, c, s, dyn, hit, max_lo, cmin, cmax, cmax_dyn,
                      rate, decay_dyn):
    """An occupied observation (class ``c``, confidence ``s``) of the voxel with log-odds ``l_old``
    and evidence ``ev[mx, my, mz]`` (zero when not ``valid``): the evidence moves towards ``c`` by
    ``rate * s`` (dynamic classes also decay by ``decay_dyn``); it goes to ``dst[dx, dy, dz]``
    (may be the same voxel). Returns ``(log-odds, class)``."""
    l = 0.0 if math.isnan(l_old) else l_old
    if dyn[c]:  # a moving object appears where the map saw free space: that memory does not count against it
        l = max(l, 0.0)
    l += hit * logodds(s, max_lo)
    keep = 1.0 - rate * s
    q_static = np.uint32(keep * 65536.0 + 0.5)
    q_dyn = np.uint32(keep * decay_dyn * 65536.0 + 0.5)
    add = np.uint32(rate * s * EVIDENCE_SCALE + 0.5)
    best, bv = -1, np.uint16(0)
    for k in range(dst.shape[3]):
        e = np.uint32(ev[mx, my, mz, k]) if valid else np.uint32(0)
        e = (e * (q_dyn if dyn[k] else q_static) + np.uint32(32768)) >> np.uint32(16)
        if k == c:
            e = min(e + add, np.uint32(65535))
        e16 = np.uint16(e)
        dst[dx, dy, dz, k] = e16
        if e16 > bv:
            best, bv = k, e16
    hi = cmax_dyn if (best >= 0 and dyn[best]) else cmax
    return min(max(l, cmin), hi), best


@njit(cache=True, nogil=True)
def integrate(occ, ev, cls, labels, scores, visible, A, b, emin, evs, anchor, vs, box_lo, box_hi,
              free, dyn, hit, miss, max_lo, cmin, cmax, cmax_dyn, rate, decay_dyn, min_score):
    """Fold one frame's observations into the map; returns how many map voxels were observed.

    A free observation lowers the log-odds (down to ``cmin``) and leaves the class evidence; an
    occupied one raises it (up to the clamp of the voxel's class) and updates the evidence.

    Args:
        A, b: (3, 3), (3,) float64 ``T_ego_from_odom`` (rotation, translation).
        box_lo, box_hi: (3,) int64 global voxel range [lo, hi) to visit (the frame's footprint
            inside the window).
    """
    X, Y, Z = occ.shape[0], occ.shape[1], occ.shape[2]
    EX, EY, EZ = labels.shape[0], labels.shape[1], labels.shape[2]
    # ego voxel coordinates (units of ego voxels from the ego grid's corner) of map voxel centres
    rx, ry, rz = 1.0 / evs[0], 1.0 / evs[1], 1.0 / evs[2]
    dux, duy, duz = A[0, 2] * vs * rx, A[1, 2] * vs * ry, A[2, 2] * vs * rz
    n = 0
    for gx in range(box_lo[0], box_hi[0]):
        px = anchor[0] + vs * (gx + 0.5)
        mx = gx % X
        for gy in range(box_lo[1], box_hi[1]):
            py = anchor[1] + vs * (gy + 0.5)
            my = gy % Y
            pz = anchor[2] + vs * (box_lo[2] + 0.5)
            ux = (A[0, 0] * px + A[0, 1] * py + A[0, 2] * pz + b[0] - emin[0]) * rx
            uy = (A[1, 0] * px + A[1, 1] * py + A[1, 2] * pz + b[1] - emin[1]) * ry
            uz = (A[2, 0] * px + A[2, 1] * py + A[2, 2] * pz + b[2] - emin[2]) * rz
            mz = box_lo[2] % Z
            for gz in range(box_lo[2], box_hi[2]):
                if ux >= 0.0 and uy >= 0.0 and uz >= 0.0 and ux < EX and uy < EY and uz < EZ:
                    ex, ey, ez = int(ux), int(uy), int(uz)
                    if visible[ex, ey, ez]:
                        s = scores[ex, ey, ez]
                        if s >= min_score:
                            c = labels[ex, ey, ez]
                            l_old = occ[mx, my, mz]
                            if c == free:
                                l = (0.0 if math.isnan(l_old) else l_old) + miss * logodds(s, max_lo)
                                occ[mx, my, mz] = max(l, cmin)
                            else:
                                l, best = _observe_occupied(l_old, ev, mx, my, mz, True, ev, mx, my, mz, c, s, dyn,
                                                            hit, max_lo, cmin, cmax, cmax_dyn, rate, decay_dyn)
                                occ[mx, my, mz] = l
                                if best >= 0:
                                    cls[mx, my, mz] = best
                            n += 1
                ux += dux
                uy += duy
                uz += duz
                mz += 1
                if mz == Z:
                    mz = 0
    return n


@njit(cache=True, nogil=True)
def crop(occ, ev, cls, out, A, b, emin, evs, anchor, vs, lo, use_obs, labels, scores, visible,
         free, dyn, hit, miss, max_lo, cmin, cmax, cmax_dyn, rate, decay_dyn, min_score):
    """The map resampled into an ego grid (``out`` (EX, EY, EZ) uint8: class, ``free`` or
    :data:`UNKNOWN`). With ``use_obs``, each visible ego voxel's own observation is applied on
    top of the map voxel it falls in (the posterior after this frame, without resampling the
    frame itself); the map is not changed.

    Args:
        A, b: (3, 3), (3,) float64 ``T_odom_from_ego``.
        lo: (3,) int64 first global voxel of the window.
    """
    X, Y, Z = occ.shape[0], occ.shape[1], occ.shape[2]
    EX, EY, EZ = out.shape[0], out.shape[1], out.shape[2]
    r = 1.0 / vs
    # window voxel coordinates (from the window's corner, in map voxels) of ego voxel centres
    wx0, wy0, wz0 = anchor[0] + vs * lo[0], anchor[1] + vs * lo[1], anchor[2] + vs * lo[2]
    ox, oy, oz = lo[0] % X, lo[1] % Y, lo[2] % Z
    dwx, dwy, dwz = A[0, 2] * evs[2] * r, A[1, 2] * evs[2] * r, A[2, 2] * evs[2] * r
    scratch = np.zeros((1, 1, 1, ev.shape[3]), np.uint16)
    for ix in range(EX):
        qx = emin[0] + evs[0] * (ix + 0.5)
        for iy in range(EY):
            qy = emin[1] + evs[1] * (iy + 0.5)
            qz = emin[2] + evs[2] * 0.5
            wx = (A[0, 0] * qx + A[0, 1] * qy + A[0, 2] * qz + b[0] - wx0) * r
            wy = (A[1, 0] * qx + A[1, 1] * qy + A[1, 2] * qz + b[1] - wy0) * r
            wz = (A[2, 0] * qx + A[2, 1] * qy + A[2, 2] * qz + b[2] - wz0) * r
            for iz in range(EZ):
                inside = wx >= 0.0 and wy >= 0.0 and wz >= 0.0 and wx < X and wy < Y and wz < Z
                l_old = np.float32(np.nan)
                mx, my, mz = 0, 0, 0
                if inside:
                    mx, my, mz = int(wx) + ox, int(wy) + oy, int(wz) + oz  # ring buffer: (lo + w) mod dims
                    if mx >= X:
                        mx -= X
                    if my >= Y:
                        my -= Y
                    if mz >= Z:
                        mz -= Z
                    l_old = occ[mx, my, mz]
                wx += dwx
                wy += dwy
                wz += dwz
                if use_obs and visible[ix, iy, iz] and scores[ix, iy, iz] >= min_score:
                    c = labels[ix, iy, iz]
                    s = scores[ix, iy, iz]
                    if c == free:
                        l = max((0.0 if math.isnan(l_old) else l_old) + miss * logodds(s, max_lo), cmin)
                        out[ix, iy, iz] = cls[mx, my, mz] if (l > 0.0 and inside) else free
                    else:
                        l, best = _observe_occupied(l_old, ev, mx, my, mz, inside, scratch, 0, 0, 0, c, s, dyn,
                                                    hit, max_lo, cmin, cmax, cmax_dyn, rate, decay_dyn)
                        out[ix, iy, iz] = best if (l > 0.0 and best >= 0) else free
                elif use_obs and ((labels[ix, iy, iz] != free and dyn[labels[ix, iy, iz]])
                                  or (inside and l_old > 0.0 and dyn[cls[mx, my, mz]])):
                    # unseen now: moving objects are not remembered out of sight, the frame's own
                    # guess decides wherever it or the map puts one
                    out[ix, iy, iz] = labels[ix, iy, iz]
                elif math.isnan(l_old) or (use_obs and l_old <= 0.0):
                    # unseen now and never seen, or free in memory: the frame's own label (out of
                    # sight, remembered free space is weaker evidence than the frame's guess)
                    out[ix, iy, iz] = UNKNOWN
                elif l_old > 0.0:
                    out[ix, iy, iz] = cls[mx, my, mz]
                else:
                    out[ix, iy, iz] = free
    return out


@njit(cache=True, nogil=True)
def cell_labels(occ, cls, free, out):
    """Per storage voxel: its class, ``free`` or :data:`UNKNOWN` (``out`` (X, Y, Z) uint8)."""
    X, Y, Z = occ.shape
    for x in range(X):
        for y in range(Y):
            for z in range(Z):
                l = occ[x, y, z]
                if math.isnan(l):
                    out[x, y, z] = UNKNOWN
                elif l > 0.0:
                    out[x, y, z] = cls[x, y, z]
                else:
                    out[x, y, z] = free
    return out
