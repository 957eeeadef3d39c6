"""The ego vehicle's own body in LiDAR sweeps: a footprint box in base_link, and the filter.

A roof LiDAR sees its own car: on real nuScenes 22-41 % of a sweep (the roof and bonnet) lies
within 2 m of the sensor. Models and labels must not take that for an obstacle, so the loaders
(:mod:`occ_core.data.nuscenes_dataset`, hence ``occ-train`` and ``occ-predict``), the label
generator (``LabelConfig.ego_box``) and the node (parameter ``ego_footprint``) drop every point
inside one axis-aligned box in base_link.

Default, :data:`NUSCENES_EGO_FOOTPRINT`: x in [-1.2, 3.9], y in [-1.1, 1.1], z in [-0.5, 2.1] m
(the nuScenes Renault Zoe, base_link at the rear axle on the ground). Measured on the 13 real
sweeps of ``../shared/data/nuscenes_real`` (A, B and the 11 keyframes of H, 2026-11-30): every
point within 2 m of the sensor lies in x [-0.22, 2.83], |y| <= 0.66, z [0.86, 1.84] m (the
roof, the LiDAR mount and the bonnet; H's labels call all of them ``others``, the class that
holds lidarseg's ``vehicle.ego``), and no other point of H's sweeps labelled as anything but
``others`` lies inside the box (a pedestrian 1.75 m to the side of the car in H6 stays outside).
The box is the car's size with margin rather than the measured hull, because the bumpers and
doors the roof LiDAR cannot see are there too (another car's LiDAR sees them from outside, and
the ground under the car is never seen). The same box is ``occ-label``'s ego box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from occ_core.errors import OccDataError


@dataclass(frozen=True)
class EgoFootprint:
    """An axis-aligned box in base_link holding the ego vehicle's body.

    Attributes:
        lo: (xmin, ymin, zmin) metres.
        hi: (xmax, ymax, zmax) metres.
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo, np.float64), np.asarray(self.hi, np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise OccDataError(f"ego footprint: expected finite (xmin, ymin, zmin) and (xmax, ymax, zmax), "
                               f"got {self.lo!r}, {self.hi!r}")
        if not (lo < hi).all():
            raise OccDataError(f"ego footprint: expected min < max on every axis, got min {tuple(lo)} max {tuple(hi)}")

    @classmethod
    def from_list(cls, values: Sequence[float], field: str = "ego_footprint") -> "EgoFootprint | None":
        """``[xmin, ymin, zmin, xmax, ymax, zmax]`` -> a footprint; ``[]`` -> None (no filtering).

        Raises:
            OccDataError: naming ``field``: not 0 or 6 finite numbers, or a min not below its max.
        """
        vals = list(values)
        if not vals:
            return None
        try:
            arr = np.asarray(vals, np.float64)
        except (TypeError, ValueError):
            raise OccDataError(f"{field}: expected 6 numbers [xmin, ymin, zmin, xmax, ymax, zmax], got {vals!r}") from None
        if arr.shape != (6,):
            raise OccDataError(f"{field}: expected [] (off) or 6 numbers [xmin, ymin, zmin, xmax, ymax, zmax] "
                               f"metres in base_link, got {len(vals)} values")
        try:
            return cls(tuple(arr[:3].tolist()), tuple(arr[3:].tolist()))
        except OccDataError as e:
            raise OccDataError(f"{field}: {e}") from None

    def as_list(self) -> list[float]:
        """``[xmin, ymin, zmin, xmax, ymax, zmax]``."""
        return [float(v) for v in (*self.lo, *self.hi)]

    def inside(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: which of the (N, >=3) points (x, y, z in base_link) lie in the box (bounds included)."""
        xyz = np.asarray(points)[:, :3]
        lo, hi = np.asarray(self.lo, np.float32), np.asarray(self.hi, np.float32)
        return ((xyz >= lo) & (xyz <= hi)).all(axis=1)

    def remove(self, points: np.ndarray) -> tuple[np.ndarray, int]:
        """``(points outside the box, how many were inside)``; every column is kept."""
        inside = self.inside(points)
        n = int(inside.sum())
        return (points[~inside] if n else points), n


#: The nuScenes car with margin (module docstring), base_link metres.
NUSCENES_EGO_FOOTPRINT = EgoFootprint((-1.2, -1.1, -0.5), (3.9, 1.1, 2.1))


def remove_ego_points(points: np.ndarray, footprint: EgoFootprint | None) -> tuple[np.ndarray, int]:
    """:meth:`EgoFootprint.remove`, or ``(points, 0)`` when ``footprint`` is None."""
    return (points, 0) if footprint is None else footprint.remove(points)
