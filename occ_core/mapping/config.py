"""Settings of the rolling semantic map (:class:`MapConfig`), loaded from a dict/YAML like the other configs.

The update rule the numbers feed (one observed voxel, class ``c`` with confidence ``s``, the
predicted probability of ``c``; Occ3D 17 = free):

- the observation's log-odds ``lo = min(logit(s), max_logodds)`` (0 for ``s <= 0.5``: an
  unsure prediction says nothing);
- occupancy log-odds ``L`` (unknown until first observed): ``L += hit * lo`` when ``c`` is an
  occupied class, ``L += miss * lo`` when ``c`` is free, then clamped to
  ``[clamp_min, clamp_max]``, or ``[clamp_min, clamp_max_dynamic]`` when the voxel's class is
  dynamic (octomap-style clamping keeps every belief revisable: one confident observation
  overturns it, one unsure one does not; dynamic voxels go with any free observation, so a
  moving object leaves no trail once seen free);
- class evidence of the 17 occupied classes, a confidence-weighted moving average updated on
  each occupied observation: ``E_k <- d_k * (1 - rate * s) * E_k + rate * s * [k == c]``, with
  ``d_k = decay_dynamic`` for the dynamic classes and 1 for the others; the voxel's class is
  ``argmax E``.

Voxels that are not observed in a frame keep their state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OPENOCC_DYNAMIC_CLASSES
from occ_core.errors import OccDataError


@dataclass(frozen=True)
class MapConfig:
    """A rolling semantic voxel map in a fixed frame (odom).

    Attributes:
        voxel_size: edge of one (cubic) map voxel in metres (the Occ3D 0.4 m by default).
        extent: (3,) metres of the window along odom x, y, z; rounded to whole voxels. The
            window follows the robot (whole-voxel shifts), centred on it in x, y; in z it
            spans the ego grid's height band plus the margin the extra height gives.
        hit, miss: factors of the observation log-odds added by an occupied / a free
            observation (hit > 0 > miss).
        max_logodds: cap of an observation's log-odds (a confidence of 0.98 gives 3.9).
        clamp_min, clamp_max: bounds of the occupancy log-odds of static voxels.
        clamp_max_dynamic: upper bound for voxels whose class is dynamic (< clamp_max: they
            are forgotten faster).
        evidence_rate: weight of one observation of confidence 1 in the class average, (0, 1].
        decay_dynamic: extra factor on the evidence of dynamic classes at each occupied
            observation, (0, 1].
        dynamic_classes: Occ3D class names counted as dynamic (default: the 8 OpenOcc ones).
        min_score: observations whose confidence is below this are ignored.
        reset_distance: metres; a pose that jumps farther than this between two updates
            clears the map (a relocalisation, a new scene).
    """

    voxel_size: float = 0.4
    extent: tuple[float, float, float] = (96.0, 96.0, 8.0)
    hit: float = 1.0
    miss: float = -1.5
    max_logodds: float = 4.0
    clamp_min: float = -4.0
    clamp_max: float = 2.5
    clamp_max_dynamic: float = 1.0
    evidence_rate: float = 0.7
    decay_dynamic: float = 0.5
    dynamic_classes: tuple[str, ...] = OPENOCC_DYNAMIC_CLASSES
    min_score: float = 0.0
    reset_distance: float = 10.0

    def __post_init__(self) -> None:
        def bad(field: str, value: Any, expected: str) -> OccDataError:
            return OccDataError(f"map config: {field} = {value!r}, expected {expected}")

        if not self.voxel_size > 0:
            raise bad("voxel_size", self.voxel_size, "> 0")
        if len(self.extent) != 3 or min(self.extent) < self.voxel_size:
            raise bad("extent", self.extent, f"3 lengths of at least one voxel ({self.voxel_size} m)")
        if not self.hit > 0 > self.miss:
            raise bad("hit/miss", (self.hit, self.miss), "hit > 0 > miss")
        if not self.clamp_min < 0 < self.clamp_max_dynamic <= self.clamp_max:
            raise bad("clamp_min/clamp_max_dynamic/clamp_max", (self.clamp_min, self.clamp_max_dynamic, self.clamp_max),
                      "clamp_min < 0 < clamp_max_dynamic <= clamp_max")
        for name in ("evidence_rate", "decay_dynamic"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise bad(name, v, "a value in (0, 1]")
        if not self.max_logodds > 0:
            raise bad("max_logodds", self.max_logodds, "> 0")
        unknown = [c for c in self.dynamic_classes if c not in OCC3D_CLASSES[:OCC3D_FREE]]
        if unknown:
            raise bad("dynamic_classes", list(self.dynamic_classes), f"Occ3D class names ({unknown} unknown)")
        if not 0.0 <= self.min_score <= 1.0:
            raise bad("min_score", self.min_score, "a value in [0, 1]")
        if not self.reset_distance > 0:
            raise bad("reset_distance", self.reset_distance, "> 0")

    @property
    def dims(self) -> tuple[int, int, int]:
        """(X, Y, Z) voxels of the window."""
        return tuple(max(1, int(round(e / self.voxel_size))) for e in self.extent)

    def dynamic_mask(self) -> np.ndarray:
        """(17,) bool: which occupied Occ3D classes are dynamic."""
        m = np.zeros(OCC3D_FREE, bool)
        m[[OCC3D_CLASSES.index(c) for c in self.dynamic_classes]] = True
        return m

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "map config") -> "MapConfig":
        """A config from a mapping (YAML); unknown keys raise naming ``where``."""
        if values is not None and not isinstance(values, Mapping):
            raise OccDataError(f"{where}: expected a mapping of MapConfig fields, got {type(values).__name__}")
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OccDataError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        for key in ("extent", "dynamic_classes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
