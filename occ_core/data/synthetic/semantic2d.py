"""2D semantic maps of the synthetic cameras, exact or corrupted like an open-vocabulary
segmenter's output (the stand-in for OccNeRF's Grounded-SAM labels).

The exact map is the Occ3D class of each pixel's first hit (17 where the ray hits nothing,
i.e. sky). :func:`corrupt_semantic2d` degrades it the way prompted segmenters fail:

- **ragged borders**: every label is looked up through a smooth random pixel displacement
  (amplitude ``ragged_px``), so object outlines wobble and leak into their neighbours;
- **confused classes**: whole objects (one instance) switch to a look-alike class with
  probability ``confuse_object`` (truck <-> car, bus -> truck, bicycle <-> motorcycle, ...), and
  blobs of stuff classes switch (sidewalk -> other_flat, terrain <-> vegetation, ...) over about
  ``confuse_stuff`` of their area;
- **dropped regions**: blobs covering about ``drop_area`` of the image get no label (255), and
  each object instance is missed entirely (255) with probability ``drop_object``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from occ_core.classes import OCC3D_INDEX
from occ_core.formats.image_maps import SEMANTIC_NO_LABEL

C = OCC3D_INDEX
#: look-alike classes a segmenter confuses (object classes: per instance; stuff: per blob).
CONFUSIONS: dict[int, tuple[int, ...]] = {
    C["car"]: (C["truck"],), C["truck"]: (C["car"], C["construction_vehicle"], C["bus"]),
    C["bus"]: (C["truck"],), C["trailer"]: (C["truck"],), C["construction_vehicle"]: (C["truck"],),
    C["bicycle"]: (C["motorcycle"],), C["motorcycle"]: (C["bicycle"],), C["pedestrian"]: (C["others"],),
    C["traffic_cone"]: (C["barrier"], C["others"]), C["barrier"]: (C["manmade"],),
    C["sidewalk"]: (C["other_flat"], C["driveable_surface"]), C["other_flat"]: (C["sidewalk"],),
    C["terrain"]: (C["vegetation"],), C["vegetation"]: (C["terrain"],), C["manmade"]: (C["others"],),
    C["driveable_surface"]: (C["other_flat"],),
}
STUFF = (C["driveable_surface"], C["other_flat"], C["sidewalk"], C["terrain"], C["manmade"], C["vegetation"])


@dataclass(frozen=True)
class Corruption:
    """How strongly :func:`corrupt_semantic2d` degrades a map (see the module docstring)."""

    ragged_px: float = 3.0
    confuse_object: float = 0.15
    confuse_stuff: float = 0.1
    drop_area: float = 0.08
    drop_object: float = 0.1


def _blobs(rng: np.random.Generator, hw: tuple[int, int], area: float, cell: int = 24) -> np.ndarray:
    """(H, W) bool smooth random blobs covering about ``area`` of the image."""
    H, W = hw
    g = rng.random((max(2, H // cell + 2), max(2, W // cell + 2))).astype(np.float32)
    up = cv2.resize(g, (W, H), interpolation=cv2.INTER_CUBIC)
    return up > np.quantile(up, 1.0 - area) if area > 0 else np.zeros(hw, bool)


def corrupt_semantic2d(cls: np.ndarray, inst: np.ndarray, rng: np.random.Generator,
                       c: Corruption = Corruption()) -> np.ndarray:
    """A corrupted copy of one exact 2D semantic map.

    Args:
        cls: (H, W) uint8 Occ3D class per pixel (17 = sky).
        inst: (H, W) int object instance per pixel (0 = stuff).
        rng: the generator all randomness comes from (seed it per image for reproducible files).

    Returns:
        (H, W) uint8: classes 0..17, :data:`SEMANTIC_NO_LABEL` (255) where dropped.
    """
    H, W = cls.shape
    out = cls.astype(np.uint8).copy()
    ids = np.unique(inst[inst > 0])
    # confused and missed objects (decided per instance)
    for i in ids:
        m = inst == i
        k = int(np.bincount(cls[m]).argmax())
        u = rng.random()
        if u < c.drop_object:
            out[m] = SEMANTIC_NO_LABEL
        elif u < c.drop_object + c.confuse_object and k in CONFUSIONS:
            alts = CONFUSIONS[k]
            out[m] = alts[int(rng.integers(len(alts)))]
    # confused stuff blobs
    blob = _blobs(rng, (H, W), c.confuse_stuff, cell=32)
    for k in STUFF:
        m = blob & (out == k)
        if m.any():
            alts = CONFUSIONS[k]
            out[m] = alts[int(rng.integers(len(alts)))]
    # ragged borders: nearest-label lookup through a smooth random displacement field
    if c.ragged_px > 0:
        dx = cv2.resize(rng.normal(0, c.ragged_px, (H // 6 + 2, W // 6 + 2)).astype(np.float32), (W, H),
                        interpolation=cv2.INTER_CUBIC)
        dy = cv2.resize(rng.normal(0, c.ragged_px, (H // 6 + 2, W // 6 + 2)).astype(np.float32), (W, H),
                        interpolation=cv2.INTER_CUBIC)
        u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
        out = cv2.remap(out, u + dx, v + dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    # dropped regions
    out[_blobs(rng, (H, W), c.drop_area)] = SEMANTIC_NO_LABEL
    return out
