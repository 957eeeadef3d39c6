"""Class tables: Occ3D-nuScenes (the project's label space), OpenOcc v2, nuScenes-lidarseg and
nuScenes detection categories, with one RGB palette.

Occ3D indices (DESIGN.md §3): 0 others ... 16 vegetation, 17 free. OpenOcc v2 has no
``others`` and orders the rest differently, with free = 16.
"""

from __future__ import annotations

import numpy as np

OCC3D_CLASSES: tuple[str, ...] = (
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
    "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
    "sidewalk", "terrain", "manmade", "vegetation", "free",
)
OCC3D_FREE = 17
OCC3D_NUM_CLASSES = 18  # including free
OCC3D_INDEX: dict[str, int] = {n: i for i, n in enumerate(OCC3D_CLASSES)}

OPENOCC_CLASSES: tuple[str, ...] = (
    "car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
    "pedestrian", "traffic_cone", "barrier", "driveable_surface", "other_flat", "sidewalk",
    "terrain", "manmade", "vegetation", "free",
)
OPENOCC_FREE = 16
OPENOCC_NUM_CLASSES = 17
OPENOCC_INDEX: dict[str, int] = {n: i for i, n in enumerate(OPENOCC_CLASSES)}
#: The 8 dynamic OpenOcc classes over which mAVE is averaged (OpenOcc indices 0-7).
OPENOCC_DYNAMIC_CLASSES: tuple[str, ...] = OPENOCC_CLASSES[:8]

#: The flat classes a vehicle or robot can drive on (ground): free in a costmap by default, and
#: what ``marker_hidden_classes`` lists to hide the ground.
FLAT_CLASSES: tuple[str, ...] = ("driveable_surface", "other_flat", "sidewalk", "terrain")

IGNORE_LABEL = 255  # for points or voxels that carry no usable class

#: OpenOcc v2 index -> Occ3D index (a bijection onto Occ3D 1-17).
OPENOCC_TO_OCC3D = np.array([OCC3D_INDEX[n] for n in OPENOCC_CLASSES], dtype=np.uint8)
#: Occ3D index -> OpenOcc v2 index; Occ3D ``others`` (0) has no OpenOcc class -> IGNORE_LABEL.
OCC3D_TO_OPENOCC = np.full(OCC3D_NUM_CLASSES, IGNORE_LABEL, dtype=np.uint8)
OCC3D_TO_OPENOCC[OPENOCC_TO_OCC3D] = np.arange(OPENOCC_NUM_CLASSES, dtype=np.uint8)

#: The 32 nuScenes-lidarseg classes, by index (``lidarseg/<version>/*.bin`` values).
NUSCENES_LIDARSEG_CLASSES: tuple[str, ...] = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone",
    "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid",
    "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
    "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego",
)

# The 16 lidarseg-challenge classes keep their names in Occ3D; the general objects that the
# challenge ignores become Occ3D ``others``; noise and the ego vehicle carry no label.
_LIDARSEG_TO_OCC3D_NAME: dict[str, str | None] = {
    "noise": None,
    "animal": "others",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.personal_mobility": "others",
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.stroller": "others",
    "human.pedestrian.wheelchair": "others",
    "movable_object.barrier": "barrier",
    "movable_object.debris": "others",
    "movable_object.pushable_pullable": "others",
    "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": "others",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.emergency.ambulance": "others",
    "vehicle.emergency.police": "others",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.other": "others",
    "static.vegetation": "vegetation",
    "vehicle.ego": None,
}
#: nuScenes-lidarseg index (0-31) -> Occ3D index; IGNORE_LABEL for noise and the ego vehicle.
LIDARSEG_TO_OCC3D = np.array(
    [IGNORE_LABEL if _LIDARSEG_TO_OCC3D_NAME[n] is None else OCC3D_INDEX[_LIDARSEG_TO_OCC3D_NAME[n]]
     for n in NUSCENES_LIDARSEG_CLASSES],
    dtype=np.uint8,
)
NUSCENES_LIDARSEG_INDEX: dict[str, int] = {n: i for i, n in enumerate(NUSCENES_LIDARSEG_CLASSES)}

#: Occ3D class -> one representative nuScenes-lidarseg class (the inverse of LIDARSEG_TO_OCC3D
#: on these 17 names: ``LIDARSEG_TO_OCC3D[OCC3D_TO_LIDARSEG[c]] == c`` for c in 0..16). Used to
#: write lidarseg files and annotation categories for data labelled in Occ3D classes only (the
#: synthetic world; SurroundOcc-style per-point labels). ``others`` becomes ``static.other``;
#: the finer lidarseg class (bendy or rigid bus, adult or child) is not recoverable.
OCC3D_TO_LIDARSEG_NAME: dict[str, str] = {
    "others": "static.other",
    "barrier": "movable_object.barrier",
    "bicycle": "vehicle.bicycle",
    "bus": "vehicle.bus.rigid",
    "car": "vehicle.car",
    "construction_vehicle": "vehicle.construction",
    "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
    "trailer": "vehicle.trailer",
    "truck": "vehicle.truck",
    "driveable_surface": "flat.driveable_surface",
    "other_flat": "flat.other",
    "sidewalk": "flat.sidewalk",
    "terrain": "flat.terrain",
    "manmade": "static.manmade",
    "vegetation": "static.vegetation",
}
#: Occ3D index (0-17) -> nuScenes-lidarseg index of :data:`OCC3D_TO_LIDARSEG_NAME`; ``free``
#: (17) is no point class and maps to ``noise`` (0, ignored).
OCC3D_TO_LIDARSEG = np.array(
    [NUSCENES_LIDARSEG_INDEX[OCC3D_TO_LIDARSEG_NAME[n]] if n in OCC3D_TO_LIDARSEG_NAME else NUSCENES_LIDARSEG_INDEX["noise"]
     for n in OCC3D_CLASSES],
    dtype=np.uint8,
)

#: The 10 nuScenes detection classes and their Occ3D index (same names).
DETECTION_CLASSES: tuple[str, ...] = (
    "car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle",
    "bicycle", "pedestrian", "traffic_cone",
)
DETECTION_TO_OCC3D: dict[str, int] = {n: OCC3D_INDEX[n] for n in DETECTION_CLASSES}


def category_to_occ3d(category_name: str) -> int:
    """Occ3D index of a full nuScenes category name (``vehicle.car`` -> 4).

    Categories are the lidarseg class names; unknown names raise ``KeyError`` naming them.
    Returns IGNORE_LABEL for ``noise`` and ``vehicle.ego``.
    """
    try:
        return int(LIDARSEG_TO_OCC3D[NUSCENES_LIDARSEG_INDEX[category_name]])
    except KeyError:
        raise KeyError(f"unknown nuScenes category {category_name!r}; expected one of the 32 lidarseg classes") from None


#: One RGB colour per Occ3D class (uint8, (18, 3)), the palette used by the Occ3D/SurroundOcc
#: visualisers; free is white.
OCC3D_PALETTE = np.array(
    [
        [0, 0, 0],          # others
        [255, 120, 50],     # barrier
        [255, 192, 203],    # bicycle
        [255, 255, 0],      # bus
        [0, 150, 245],      # car
        [0, 255, 255],      # construction_vehicle
        [200, 180, 0],      # motorcycle
        [255, 0, 0],        # pedestrian
        [255, 240, 150],    # traffic_cone
        [135, 60, 0],       # trailer
        [160, 32, 240],     # truck
        [255, 0, 255],      # driveable_surface
        [139, 137, 137],    # other_flat
        [75, 0, 75],        # sidewalk
        [150, 240, 80],     # terrain
        [230, 230, 250],    # manmade
        [0, 175, 0],        # vegetation
        [255, 255, 255],    # free
    ],
    dtype=np.uint8,
)
