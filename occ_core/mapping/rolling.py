"""A rolling semantic voxel map in a fixed frame (``odom``), fed with per-frame predictions.

Each frame gives an ego grid (``base_link``, e.g. Occ3D 200 x 200 x 16 at 0.4 m) of labels
(Occ3D 0-16, 17 = free), their confidences, and which voxels the frame actually saw
(:func:`occ_core.mapping.visibility.frame_visibility`: camera rays through the prediction),
plus the ego pose ``T_odom_from_ego`` (the dataset's ego pose, or TF ``odom -> base_link``).
:meth:`RollingSemanticMap.update` moves the window with the robot, folds the seen voxels in
(rule: :mod:`occ_core.mapping.config`) and returns the fused labels of that frame's ego grid.

Geometry:

- The map is an axis-aligned lattice of odom with cubic voxels of ``voxel_size``; global voxel
  ``g`` spans ``anchor + voxel_size * [g, g + 1)``. ``anchor`` is the ego grid's lower corner
  modulo the voxel size, so that a level ego standing on a lattice point has its voxels on
  the map's (no half-voxel offset in z for the Occ3D grid, whose z starts at -1.0 m).
- The window is ``dims`` voxels from global voxel ``lo``; it follows the robot in whole
  voxels, centred on it in x, y and on the ego grid's height band in z. It is a ring buffer:
  voxel ``g`` is stored at ``g mod dims``, so a shift only clears the slabs that enter the
  window (voxels that left it are forgotten). Memory is fixed: ``X * Y * Z * (4 + 2 * 17 + 1)``
  bytes (44.9 MB for the default 240 x 240 x 20).
- Ego grid -> map: nearest neighbour on voxel centres, as a gather (each map voxel takes the
  ego voxel containing its centre under the full 3D pose; the ego may yaw, pitch and roll).
  Map -> ego grid (:meth:`crop`): each ego voxel takes the map voxel containing its centre.
"""

from __future__ import annotations

import numpy as np

from occ_core.classes import OCC3D_FREE
from occ_core.errors import OccDataError
from occ_core.grid import OCC3D, GridSpec
from occ_core.mapping import _kernels
from occ_core.mapping.config import MapConfig

UNKNOWN = _kernels.UNKNOWN
#: Number of occupied classes the map keeps evidence for (Occ3D 0-16).
NUM_OCCUPIED = OCC3D_FREE


class RollingSemanticMap:
    """The map. Not thread-safe: one owner calls :meth:`update` (the node's worker thread).

    Args:
        cfg: the settings.
        ego_grid: the grid of the frames it is fed (and the default of :meth:`crop`).
    """

    def __init__(self, cfg: MapConfig | None = None, ego_grid: GridSpec = OCC3D):
        self.cfg = cfg or MapConfig()
        self.ego = ego_grid
        self.dims: tuple[int, int, int] = self.cfg.dims
        vs = self.cfg.voxel_size
        self.voxel_size = float(vs)
        self.anchor = np.mod(np.asarray(ego_grid.range_min, np.float64), vs)
        self.anchor[np.isclose(self.anchor, vs)] = 0.0
        self.occupancy = np.full(self.dims, np.nan, np.float32)
        self.evidence = np.zeros((*self.dims, NUM_OCCUPIED), np.uint16)
        self.classes = np.zeros(self.dims, np.uint8)
        self.lo: np.ndarray | None = None
        self.last_position: np.ndarray | None = None
        self.updates = 0
        self.resets = 0
        self._dyn = self.cfg.dynamic_mask()

    # ------------------------------------------------------------------ window
    @property
    def origin(self) -> np.ndarray:
        """(3,) odom position of the window's lower corner (voxel (0, 0, 0) of :meth:`labels`)."""
        if self.lo is None:
            raise OccDataError("the map has no window yet: update() or move_to() it with a pose first")
        return self.anchor + self.voxel_size * self.lo

    def window_for(self, T_odom_from_ego: np.ndarray) -> np.ndarray:
        """(3,) int64 first global voxel of the window for an ego pose (centred on the robot in
        x, y; in z on the ego grid's height band)."""
        p = np.asarray(T_odom_from_ego, np.float64)[:3, 3]
        vs, d = self.voxel_size, np.asarray(self.dims)
        lo = np.empty(3, np.int64)
        lo[:2] = np.floor((p[:2] - self.anchor[:2]) / vs).astype(np.int64) - d[:2] // 2
        ego_h = self.ego.dims[2] * self.ego.voxel_size[2]
        bottom = p[2] + self.ego.range_min[2] - 0.5 * (d[2] * vs - ego_h)
        lo[2] = int(np.round((bottom - self.anchor[2]) / vs))
        return lo

    def reset(self) -> None:
        """Forget everything (the window is placed again by the next update)."""
        self.occupancy.fill(np.nan)
        self.evidence.fill(0)
        self.classes.fill(0)
        self.lo = None
        self.last_position = None
        self.resets += 1

    def move_to(self, T_odom_from_ego: np.ndarray) -> np.ndarray:
        """Scroll the window to the pose (whole voxels); returns the (3,) int64 shift. A jump
        farther than ``reset_distance`` since the last pose clears the map first."""
        T = _check_pose(T_odom_from_ego)
        p = T[:3, 3]
        if self.last_position is not None and np.linalg.norm(p - self.last_position) > self.cfg.reset_distance:
            self.reset()
        self.last_position = p.copy()
        new = self.window_for(T)
        if self.lo is None:
            self.lo = new
            return np.zeros(3, np.int64)
        shift = new - self.lo
        for axis in range(3):
            self._clear_entering(axis, int(shift[axis]))
        self.lo = new
        return shift

    def _clear_entering(self, axis: int, k: int) -> None:
        """Clear the storage slabs of the voxels that enter the window when it moves by ``k``
        along ``axis`` (the slabs the leaving voxels occupied)."""
        if k == 0:
            return
        d, lo = self.dims[axis], int(self.lo[axis])
        if abs(k) >= d:
            idx = np.arange(d)
        elif k > 0:
            idx = np.arange(lo + d, lo + d + k) % d
        else:
            idx = np.arange(lo + k, lo) % d
        sel = (slice(None),) * axis + (idx,)
        self.occupancy[sel] = np.nan
        self.evidence[sel] = 0
        self.classes[sel] = 0

    # ------------------------------------------------------------------ update / read
    def _params(self):
        c = self.cfg
        return (np.uint8(OCC3D_FREE), self._dyn, float(c.hit), float(c.miss), float(c.max_logodds), float(c.clamp_min),
                float(c.clamp_max), float(c.clamp_max_dynamic), float(c.evidence_rate), float(c.decay_dynamic),
                float(c.min_score))

    def _ego_arrays(self, grid: GridSpec):
        return np.asarray(grid.range_min, np.float64), np.asarray(grid.voxel_size, np.float64)

    def _footprint(self, T_odom_from_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global voxel box [lo, hi) of the ego grid's 8 corners in odom, inside the window."""
        lo_c, hi_c = np.asarray(self.ego.range_min), np.asarray(self.ego.range_max)
        corners = np.array([[x, y, z] for x in (lo_c[0], hi_c[0]) for y in (lo_c[1], hi_c[1])
                            for z in (lo_c[2], hi_c[2])])
        pts = corners @ T_odom_from_ego[:3, :3].T + T_odom_from_ego[:3, 3]
        g_lo = np.floor((pts.min(0) - self.anchor) / self.voxel_size).astype(np.int64)
        g_hi = np.floor((pts.max(0) - self.anchor) / self.voxel_size).astype(np.int64) + 1
        lo = np.maximum(g_lo, self.lo)
        hi = np.minimum(g_hi, self.lo + np.asarray(self.dims))
        return lo, np.maximum(hi, lo)

    def _check_frame(self, labels, scores, visible):
        dims = tuple(self.ego.dims)
        labels = np.ascontiguousarray(labels, np.uint8)
        scores = np.ascontiguousarray(scores, np.float32)
        visible = np.ascontiguousarray(visible, np.bool_)
        for name, a in (("labels", labels), ("scores", scores), ("visible", visible)):
            if a.shape != dims:
                raise OccDataError(f"map update: {name} has shape {a.shape}, expected the ego grid's {dims}")
        if labels.size and int(labels.max()) > OCC3D_FREE:
            raise OccDataError(f"map update: labels hold {int(labels.max())}, expected Occ3D classes 0-{OCC3D_FREE}")
        return labels, scores, visible

    def integrate(self, labels: np.ndarray, scores: np.ndarray, visible: np.ndarray,
                  T_odom_from_ego: np.ndarray) -> int:
        """Fold one frame in (the window must already be at the pose: :meth:`move_to`).

        Args:
            labels: (X, Y, Z) uint8 Occ3D labels of the ego grid (17 = free).
            scores: (X, Y, Z) float32 confidence in [0, 1] (1 where only labels exist).
            visible: (X, Y, Z) bool, the voxels the frame saw; the others keep their state.
            T_odom_from_ego: (4, 4) ego pose in odom.

        Returns:
            how many map voxels were observed.
        """
        T = _check_pose(T_odom_from_ego)
        labels, scores, visible = self._check_frame(labels, scores, visible)
        if self.lo is None:
            self.move_to(T)
        Ti = np.linalg.inv(T)
        box_lo, box_hi = self._footprint(T)
        emin, evs = self._ego_arrays(self.ego)
        n = _kernels.integrate(self.occupancy, self.evidence, self.classes, labels, scores, visible, np.ascontiguousarray(Ti[:3, :3]),
                               np.ascontiguousarray(Ti[:3, 3]), emin, evs, self.anchor, self.voxel_size, box_lo,
                               box_hi, *self._params())
        self.updates += 1
        return int(n)

    def crop(self, T_odom_from_ego: np.ndarray, grid: GridSpec | None = None, labels: np.ndarray | None = None,
             scores: np.ndarray | None = None, visible: np.ndarray | None = None) -> np.ndarray:
        """The map in an ego grid at a pose: (X, Y, Z) uint8 Occ3D labels, 17 = free, 255 = unknown.

        With ``labels``, ``scores``, ``visible`` (a frame on ``grid``), the visible voxels show
        the posterior after that frame's observation at the ego voxel itself (what
        :meth:`update` returns); the map is not changed.
        """
        T = _check_pose(T_odom_from_ego)
        grid = grid or self.ego
        out = np.empty(grid.dims, np.uint8)
        if self.lo is None:
            out.fill(UNKNOWN)
            if labels is None:
                return out
            lo = np.zeros(3, np.int64)
        else:
            lo = self.lo
        use = labels is not None
        if use:
            if grid != self.ego:
                raise OccDataError(f"map crop: a frame's observation needs the map's ego grid {self.ego.name}")
            labels, scores, visible = self._check_frame(labels, scores, visible)
        else:
            labels = np.zeros((1, 1, 1), np.uint8)
            scores = np.zeros((1, 1, 1), np.float32)
            visible = np.zeros((1, 1, 1), np.bool_)
        emin, evs = self._ego_arrays(grid)
        occ = self.occupancy if self.lo is not None else np.full((1, 1, 1), np.nan, np.float32)
        ev = self.evidence if self.lo is not None else np.zeros((1, 1, 1, NUM_OCCUPIED), np.uint16)
        cls = self.classes if self.lo is not None else np.zeros((1, 1, 1), np.uint8)
        return _kernels.crop(occ, ev, cls, out, np.ascontiguousarray(T[:3, :3]), np.ascontiguousarray(T[:3, 3]), emin, evs,
                             self.anchor, self.voxel_size, lo, use, labels, scores, visible, *self._params())

    def update(self, labels: np.ndarray, scores: np.ndarray | None, visible: np.ndarray,
               T_odom_from_ego: np.ndarray) -> np.ndarray:
        """Move to the pose, fold the frame in and return its fused ego grid.

        Args: as :meth:`integrate` (``scores`` None: 1 everywhere, one-hot labels).

        Returns:
            (X, Y, Z) uint8: the fused labels of this frame's ego grid (17 = free, 255 where the
            map knows nothing and the frame did not see the voxel).
        """
        if scores is None:
            scores = np.ones(self.ego.dims, np.float32)
        self.move_to(T_odom_from_ego)
        fused = self.crop(T_odom_from_ego, None, labels, scores, visible)
        self.integrate(labels, scores, visible, T_odom_from_ego)
        return fused

    def labels(self) -> np.ndarray:
        """The window as (X, Y, Z) uint8 labels in window order (index 0 at :attr:`origin`,
        axes along odom x, y, z): class, 17 = free, 255 = unknown."""
        out = _kernels.cell_labels(self.occupancy, self.classes, np.uint8(OCC3D_FREE), np.empty(self.dims, np.uint8))
        if self.lo is None:
            return out
        return np.roll(out, tuple(int(-(v % d)) for v, d in zip(self.lo, self.dims)), axis=(0, 1, 2))

    def window_grid(self) -> GridSpec:
        """The window as a :class:`GridSpec` in odom (range_min = :attr:`origin`)."""
        vs = self.voxel_size
        return GridSpec("map", tuple(float(v) for v in self.origin), (vs, vs, vs), self.dims)

    @property
    def nbytes(self) -> int:
        return int(self.occupancy.nbytes + self.evidence.nbytes + self.classes.nbytes)


def _check_pose(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise OccDataError(f"map: the ego pose must be a finite (4, 4) T_odom_from_ego, got shape {T.shape}")
    return T
