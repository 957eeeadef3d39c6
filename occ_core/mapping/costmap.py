"""A 2D costmap from the semantic map, in the layout of ``nav_msgs/OccupancyGrid`` (nav2's static
layer ``map_topic`` or a ``costmap_2d``-style subscriber takes it as is).

Per map column (x, y) of the rolling window, the voxels overlapping a height band above the
robot's base (``[z_base + min_height, z_base + max_height]``, base_link's z in odom = the
ground for REP 105 robots) decide the cell: each known voxel costs its class's entry of a
class -> cost table (free 0; flat, drivable classes 0 by default; every other class lethal
100); the cell is the largest cost among its known voxels, and -1 (unknown) when the band holds
no known voxel. Cells are row-major from the window's lower-left corner: ``data[y * width + x]``,
x along odom x, the origin the outer corner of cell (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from occ_core.classes import FLAT_CLASSES, OCC3D_CLASSES, OCC3D_FREE, OCC3D_INDEX
from occ_core.errors import OccDataError
from occ_core.mapping.rolling import UNKNOWN

#: nav_msgs/OccupancyGrid values.
LETHAL, FREE_COST, UNKNOWN_COST = 100, 0, -1


def cost_table(costs: Mapping[str, int] | None = None, where: str = "class costs") -> np.ndarray:
    """(256,) int16 cost per label value: ``costs`` (Occ3D class name -> 0..100) over the
    defaults (free and the flat classes 0, every other class 100); 255 (unknown) -> -1.

    Raises:
        OccDataError: an unknown class name or a cost outside 0..100, named with ``where``.
    """
    table = np.full(256, UNKNOWN_COST, np.int16)
    table[:OCC3D_FREE] = LETHAL
    table[[OCC3D_INDEX[c] for c in FLAT_CLASSES]] = FREE_COST
    table[OCC3D_FREE] = FREE_COST
    for name, cost in (costs or {}).items():
        if name not in OCC3D_INDEX:
            raise OccDataError(f"{where}: unknown class {name!r}; expected one of {list(OCC3D_CLASSES)}")
        if isinstance(cost, bool) or not isinstance(cost, (int, np.integer)) or not 0 <= cost <= 100:
            raise OccDataError(f"{where}: cost of {name!r} must be an integer in 0..100, got {cost!r}")
        table[OCC3D_INDEX[name]] = cost
    return table


def parse_class_costs(entries: Iterable[str], where: str = "class costs") -> dict[str, int]:
    """``["driveable_surface=0", "terrain=50"]`` -> ``{"driveable_surface": 0, "terrain": 50}``
    (the string-array form a ROS parameter holds). Raises OccDataError naming the bad entry."""
    out: dict[str, int] = {}
    for e in entries:
        name, sep, value = str(e).partition("=")
        name = name.strip()
        try:
            cost = int(value.strip()) if sep else None
        except ValueError:
            cost = None
        if cost is None:
            raise OccDataError(f"{where}: expected 'class=cost' entries such as 'terrain=50', got {e!r}")
        if name in out:
            raise OccDataError(f"{where}: class {name!r} is given twice")
        out[name] = cost
    cost_table(out, where)  # names and ranges
    return out


@dataclass(frozen=True)
class Costmap:
    """A 2D grid in the map's frame.

    Attributes:
        data: (H, W) int8, row ``y``, column ``x`` (``data.ravel()`` is nav_msgs' row-major
            order); 0..100 cost, -1 unknown.
        origin: (x, y, z) metres: outer corner of cell (0, 0) in the map frame (z = the band's
            base, the robot's z).
        resolution: metres per cell.
    """

    data: np.ndarray
    origin: tuple[float, float, float]
    resolution: float

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])


def costmap_from_labels(labels: np.ndarray, origin: np.ndarray, voxel_size: float, base_z: float,
                        min_height: float, max_height: float, table: np.ndarray) -> Costmap:
    """The costmap of a labelled window (:meth:`RollingSemanticMap.labels`).

    Args:
        labels: (X, Y, Z) uint8 window labels (class, 17 free, 255 unknown), axes along the map
            frame's x, y, z, voxel (0, 0, 0) with its outer corner at ``origin`` (3,).
        voxel_size: cubic voxel edge (m), also the cell size.
        base_z: z of the robot's base in the map frame; the band is relative to it.
        min_height, max_height: the band (m above the base), min < max.
        table: (256,) costs per label (:func:`cost_table`).
    """
    if not max_height > min_height:
        raise OccDataError(f"costmap: max_height ({max_height}) must be above min_height ({min_height})")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise OccDataError(f"costmap: labels must be (X, Y, Z), got shape {labels.shape}")
    z_lo = origin[2] + voxel_size * np.arange(labels.shape[2])
    band = (z_lo < base_z + max_height) & (z_lo + voxel_size > base_z + min_height)
    X, Y = labels.shape[:2]
    if not band.any():
        cells = np.full((X, Y), UNKNOWN_COST, np.int16)
    else:
        cells = np.asarray(table, np.int16)[labels[:, :, band]].max(axis=2)  # unknown -1 loses to any known
    return Costmap(np.ascontiguousarray(cells.T.astype(np.int8)), (float(origin[0]), float(origin[1]), float(base_z)),
                   float(voxel_size))


def map_costmap(m, T_odom_from_ego: np.ndarray, min_height: float, max_height: float, table: np.ndarray) -> Costmap:
    """The costmap of a :class:`~occ_core.mapping.rolling.RollingSemanticMap`'s window, the band
    relative to the ego pose's z."""
    return costmap_from_labels(m.labels(), m.origin, m.voxel_size, float(np.asarray(T_odom_from_ego)[2, 3]),
                               min_height, max_height, table)


__all__ = ["LETHAL", "FREE_COST", "UNKNOWN_COST", "UNKNOWN", "Costmap", "cost_table", "parse_class_costs",
           "costmap_from_labels", "map_costmap"]
