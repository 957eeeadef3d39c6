"""Voxel grid specifications and voxel <-> point helpers.

A grid covers the axis-aligned box ``[range_min, range_max)`` of the ego (``base_link``) frame
with voxels of ``voxel_size`` metres, indexed ``[x, y, z]``. The centre of voxel ``i`` along an
axis is ``range_min + voxel_size * (i + 0.5)`` (DESIGN.md §3).

Presets:

=================  ===============  =====  ================================  =========
name               dims (X, Y, Z)   size   range [xmin,ymin,zmin,xmax,...]   source
=================  ===============  =====  ================================  =========
``OCC3D``          200 × 200 × 16   0.4    [-40, -40, -1, 40, 40, 5.4]       Occ3D-nuScenes
``OPENOCC``        200 × 200 × 16   0.4    [-40, -40, -1, 40, 40, 5.4]       OpenOcc v2
``OPENOCCUPANCY``  512 × 512 × 40   0.2    [-51.2, -51.2, -5, 51.2, 51.2, 3] nuScenes-Occupancy
``SURROUNDOCC``    200 × 200 × 16   0.5    [-50, -50, -5, 50, 50, 3]         SurroundOcc
=================  ===============  =====  ================================  =========
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Grids up to this many voxels keep a table of every voxel centre per dtype (occ3d: 640k
#: voxels, 7.7 MB in float32), which makes :meth:`GridSpec.flat_centers` one gather.
CENTER_TABLE_MAX_VOXELS = 2_000_000


@dataclass(frozen=True)
class GridSpec:
    """An axis-aligned voxel grid in the ego frame.

    Attributes:
        name: a short identifier (``"occ3d"``, ...).
        range_min: (3,) lower corner ``[xmin, ymin, zmin]`` in metres.
        voxel_size: (3,) edge lengths in metres.
        dims: (3,) voxel counts ``[X, Y, Z]``.
    """

    name: str
    range_min: tuple[float, float, float]
    voxel_size: tuple[float, float, float]
    dims: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.range_min) != 3 or len(self.voxel_size) != 3 or len(self.dims) != 3:
            raise ValueError(f"GridSpec {self.name!r}: range_min, voxel_size and dims need 3 values each")
        if min(self.voxel_size) <= 0:
            raise ValueError(f"GridSpec {self.name!r}: voxel_size must be > 0, got {self.voxel_size}")
        if min(self.dims) <= 0:
            raise ValueError(f"GridSpec {self.name!r}: dims must be > 0, got {self.dims}")

    @classmethod
    def from_range(cls, name: str, point_range: tuple[float, ...] | list[float], voxel_size: float | tuple[float, float, float]) -> "GridSpec":
        """Build a grid from ``[xmin, ymin, zmin, xmax, ymax, zmax]`` and a voxel size.

        The extent must be a whole number of voxels along each axis.
        """
        pr = np.asarray(point_range, dtype=np.float64)
        if pr.shape != (6,):
            raise ValueError(f"GridSpec {name!r}: point_range needs 6 values, got {pr.shape}")
        vs = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
        n = (pr[3:] - pr[:3]) / vs
        dims = np.rint(n).astype(np.int64)
        if np.any(np.abs(n - dims) > 1e-6):
            raise ValueError(f"GridSpec {name!r}: extent {pr[3:] - pr[:3]} is not a multiple of voxel size {vs}")
        return cls(name, tuple(float(v) for v in pr[:3]), tuple(float(v) for v in vs), tuple(int(d) for d in dims))

    # ----------------------------------------------------------------- derived values
    @property
    def range_max(self) -> tuple[float, float, float]:
        """(3,) upper corner ``[xmax, ymax, zmax]`` in metres."""
        return tuple(float(m + s * d) for m, s, d in zip(self.range_min, self.voxel_size, self.dims))

    @property
    def point_range(self) -> tuple[float, ...]:
        """``[xmin, ymin, zmin, xmax, ymax, zmax]`` as the research configs write it."""
        return (*self.range_min, *self.range_max)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.dims))

    # ----------------------------------------------------------------- conversions
    def points_to_voxels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxel indices of points.

        Args:
            points: (N, >=3) points in the grid's frame (only x, y, z are used).

        Returns:
            ``(idx, inside)``: idx (N, 3) int64 ``[ix, iy, iz]`` (meaningful where inside),
            inside (N,) bool, True where the point lies in ``[range_min, range_max)``.
        """
        xyz = np.asarray(points)[:, :3].astype(np.float64, copy=False)
        lo = np.asarray(self.range_min)
        vs = np.asarray(self.voxel_size)
        idx = np.floor((xyz - lo) / vs).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(self.dims)), axis=1)
        return idx, inside

    def voxel_centers(self, idx: np.ndarray) -> np.ndarray:
        """Centres (N, 3) float64 in metres of voxel indices ``idx`` (N, 3)."""
        idx = np.asarray(idx)
        return np.asarray(self.range_min) + np.asarray(self.voxel_size) * (idx + 0.5)

    def axis_centers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along each axis: (X,), (Y,), (Z,) float64 in metres.

        Gathering from these tables (``xs[ix]``) is the cheap way to get the centres of many
        voxels at once.
        """
        return tuple(self.range_min[a] + self.voxel_size[a] * (np.arange(self.dims[a]) + 0.5) for a in range(3))

    def all_voxel_centers(self) -> np.ndarray:
        """Centres of every voxel, (X, Y, Z, 3) float64, indexed ``[x, y, z]``."""
        return np.stack(np.meshgrid(*self.axis_centers(), indexing="ij"), axis=-1)

    def flat_centers(self, flat: np.ndarray, dtype: np.dtype | type = np.float64) -> np.ndarray:
        """Centres (N, 3) in metres of voxels given by row-major flat indices ``flat`` (N,).

        Equal to ``voxel_centers(unravel(flat)).astype(dtype)``; small grids (at most
        :data:`CENTER_TABLE_MAX_VOXELS`) gather from a cached table of every centre.
        """
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if self.num_voxels <= CENTER_TABLE_MAX_VOXELS:
            return _center_table(self, np.dtype(dtype).str).take(flat, axis=0)
        ijk = np.unravel_index(flat, self.dims)
        return np.stack([table.astype(dtype)[i] for table, i in zip(self.axis_centers(), ijk)], axis=1)

    def flat_index(self, idx: np.ndarray) -> np.ndarray:
        """Row-major flat index ``(ix * Y + iy) * Z + iz`` of (N, 3) voxel indices."""
        idx = np.asarray(idx, dtype=np.int64)
        return np.ravel_multi_index((idx[:, 0], idx[:, 1], idx[:, 2]), self.dims)


@lru_cache(maxsize=8)
def _center_table(spec: GridSpec, dtype: str) -> np.ndarray:
    """Read-only (X * Y * Z, 3) centres of every voxel of ``spec`` in row-major order."""
    table = np.ascontiguousarray(spec.all_voxel_centers().reshape(-1, 3).astype(dtype))
    table.flags.writeable = False
    return table


OCC3D = GridSpec.from_range("occ3d", (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)
OPENOCC = GridSpec.from_range("openocc", (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 0.4)
OPENOCCUPANCY = GridSpec.from_range("openoccupancy", (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0), 0.2)
SURROUNDOCC = GridSpec.from_range("surroundocc", (-50.0, -50.0, -5.0, 50.0, 50.0, 3.0), 0.5)

GRIDS: dict[str, GridSpec] = {g.name: g for g in (OCC3D, OPENOCC, OPENOCCUPANCY, SURROUNDOCC)}
