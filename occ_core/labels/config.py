"""Settings of the label generator (``occ-label``), in one dataclass.

Frames used throughout :mod:`occ_core.labels`:

- ``scene``: the nuScenes global (``map``) frame shifted by the scene's first ego position
  (:attr:`SceneData.offset`), so that float32 keeps millimetres far from the map origin;
- ``base_link`` of a keyframe: its LiDAR's ego pose, the frame of the output grid (``frame``
  ``ego``, the default);
- ``LIDAR_TOP`` of a keyframe: the frame of the output grid with ``frame`` ``lidar`` (SurroundOcc
  and OpenOccupancy publish their labels in the LiDAR frame, yawed 90° against base_link in
  nuScenes);
- ``box``: an annotation box's own frame (origin at its centre, x along its length,
  y along its width, z up).

Vertical convention (DESIGN.md §3): the synthetic world and real nuScenes LiDAR put the road
at ego z ≈ 0, which is z-index 2 of the Occ3D grid. ``z_shift`` (metres) is added to every
point's z before voxelisation: 0 keeps that convention (``--vertical ego``, the default);
-0.8 puts the road at z-index 0 as the published Occ3D-nuScenes labels do
(``--vertical occ3d-real``).
"""

from __future__ import annotations

from dataclasses import dataclass

from occ_core.ego import NUSCENES_EGO_FOOTPRINT
from occ_core.errors import OccDataError
from occ_core.grid import OCC3D, GridSpec

#: ``--vertical`` name -> ``z_shift`` in metres.
VERTICAL_SHIFTS: dict[str, float] = {"ego": 0.0, "occ3d-real": -0.8}
DENSIFY_MODES = ("none", "poisson")
UNLABELLED_MODES = ("auto", "drop", "others")
CARVE_MODES = ("auto", "on", "off")
#: ``pose_z``: the ego poses' z as recorded, or rebuilt from their pitch.
POSE_Z_MODES = ("recorded", "pitch")
FRAMES = ("ego", "lidar")


@dataclass(frozen=True)
class LabelConfig:
    """What :func:`occ_core.labels.pipeline.label_scene` does.

    Attributes:
        grid: the output grid (base_link of each keyframe).
        window: keyframes on each side of the current one whose LiDAR is aggregated (the
            occupancy-for-nuscenes pipeline uses 10).
        use_sweeps: aggregate the LiDAR sweeps between those keyframes too (20 Hz in nuScenes),
            not only the keyframes.
        use_boxes: split points by annotation boxes and move object points box-to-box;
            False treats every point as static (carving then removes the trails).
        carve: free-space carving (:func:`occ_core.labels.visibility.carve`): ``on``, ``off``
            or ``auto`` (on only when no boxes are used: with boxes it removes more thin static
            structure, such as vegetation, than trails; see BENCHMARKS.md).
        ego_box: ((xmin, ymin, zmin), (xmax, ymax, zmax)) metres in base_link: LiDAR points
            inside belong to the ego vehicle and are dropped (lidarseg's ``vehicle.ego`` too); default
            :data:`occ_core.ego.NUSCENES_EGO_FOOTPRINT`, the box the loaders and the node use.
        box_scale: boxes are enlarged by this factor in length and width (SurroundOcc: 1.1)
            to catch every object point; the height is enlarged by the same factor upwards.
        ground_clearance: metres above an (enlarged) box's bottom below which points stay
            static (the road under and around the wheels).
        min_distance: points closer than this (metres) to their LiDAR are dropped (devkit's
            ``from_file_multisweep`` uses 1 m).
        nn_cap: metres; a sweep point takes the label of its nearest keyframe point only
            within this distance (occupancy-for-nuscenes: 0.5 m), else it is unlabelled.
        unlabelled: what voxels holding only unlabelled points become: ``drop`` (free),
            ``others`` (Occ3D class 0, geometry-only labels) or ``auto`` (``others`` when the
            dataroot has no lidarseg, ``drop`` when it has).
        object_cell: metres; accumulated object points are thinned to one per cell of this
            size (in box coordinates).
        ray_sweep_stride: every n-th LiDAR scan of the window (keyframes always) casts rays for
            ``mask_lidar`` and carving.
        carve_ratio, carve_min_passes, carve_margin: a static voxel is carved (made free) when
            rays pass through it at least ``carve_min_passes`` times and more than
            ``carve_ratio`` times as often as points end in it, and the current keyframe's
            own scan has no point in it; rays stop counting ``carve_margin`` metres before
            their end point (grazing rays would otherwise carve the surface they end on).
        carve_now_min: a static voxel that at least this many rays of the current scan cross
            (returns they stand for) is free now and carved, whatever other scans saw.
        ground_fill: metres; ground holes are closed from the nearest ground column within
            this distance (:func:`occ_core.labels.aggregate.fill_ground`; 0: off).
        ground_vote_cell: metres; ground points are thinned to one per class and square of
            this size before the vote, so a ground voxel takes the class covering most of its
            footprint (:func:`occ_core.labels.aggregate.area_weighted_ground`; 0: one vote per
            point).
        ray_cell: metres; a scan's returns in one cell of this size share one ray (weighted by
            their count) for ``mask_lidar`` and carving.
        camera_ray_step: radians between the camera rays cast for ``mask_camera``.
        z_shift: metres added to z before voxelisation (see the module docstring).
        pose_z: ``recorded`` uses the ego poses as they are; ``pitch`` rebuilds their z from
            their pitch (nuScenes keeps z = 0 on slopes, devkit issue 721, so scans aggregated
            along a slope stack the road in several layers; see BENCHMARKS.md, real data).
        densify: ``none``, or ``poisson``: Poisson surface reconstruction of the aggregated
            cloud (:mod:`occ_core.labels.densify`, SurroundOcc's parameters below); its
            vertices, labelled by their nearest point, fill voxels the points left free.
        poisson_depth, poisson_min_density: octree depth, and the density quantile below
            which mesh vertices are dropped (SurroundOcc: 10 and 0.1).
        poisson_cell: metres; the cloud is thinned to one point per cell of this size before
            meshing (0: not thinned, as SurroundOcc).
        poisson_max_gap: metres; vertices farther than this from every aggregated point are
            dropped too (surface the solver closed across empty space; 0: keep them all,
            as SurroundOcc does).
        frame: the output grid's frame: ``ego`` (the keyframe's base_link) or ``lidar`` (its
            LIDAR_TOP; needs ``z_shift`` 0).
        flow: also compute per-voxel flow (OpenOcc v2): each object voxel gets its box's
            velocity rotated into the output frame (:func:`occ_core.labels.aggregate.voxel_flow`).
    """

    grid: GridSpec = OCC3D
    window: int = 10
    use_sweeps: bool = True
    use_boxes: bool = True
    carve: str = "auto"
    ego_box: tuple[tuple[float, float, float], tuple[float, float, float]] = (NUSCENES_EGO_FOOTPRINT.lo,
                                                                            NUSCENES_EGO_FOOTPRINT.hi)
    box_scale: float = 1.1
    ground_clearance: float = 0.1
    min_distance: float = 1.0
    nn_cap: float = 0.5
    unlabelled: str = "auto"
    object_cell: float = 0.05
    ray_sweep_stride: int = 4
    ray_cell: float = 0.4
    ground_fill: float = 6.0
    ground_vote_cell: float = 0.1
    carve_ratio: float = 4.0
    carve_min_passes: int = 8
    carve_margin: float = 0.6
    carve_now_min: float = 2.0
    camera_ray_step: float = 0.008
    z_shift: float = 0.0
    pose_z: str = "recorded"
    densify: str = "none"
    poisson_depth: int = 10
    poisson_min_density: float = 0.1
    poisson_max_gap: float = 0.4
    poisson_cell: float = 0.0
    frame: str = "ego"
    flow: bool = False

    def __post_init__(self) -> None:
        if self.window < 0:
            raise OccDataError(f"window: expected an integer >= 0, got {self.window!r}")
        if self.densify not in DENSIFY_MODES:
            raise OccDataError(f"densify: expected one of {DENSIFY_MODES}, got {self.densify!r}")
        if not 1 <= self.poisson_depth <= 16:
            raise OccDataError(f"poisson_depth: expected an integer in 1..16, got {self.poisson_depth!r}")
        if not 0 <= self.poisson_min_density < 1:
            raise OccDataError(f"poisson_min_density: expected a quantile in [0, 1), got {self.poisson_min_density!r}")
        if not self.poisson_max_gap >= 0:
            raise OccDataError(f"poisson_max_gap: expected metres >= 0, got {self.poisson_max_gap!r}")
        if self.pose_z not in POSE_Z_MODES:
            raise OccDataError(f"pose_z: expected one of {POSE_Z_MODES}, got {self.pose_z!r}")
        if self.carve not in CARVE_MODES:
            raise OccDataError(f"carve: expected one of {CARVE_MODES}, got {self.carve!r}")
        if self.frame not in FRAMES:
            raise OccDataError(f"frame: expected one of {FRAMES}, got {self.frame!r}")
        if self.frame == "lidar" and self.z_shift:
            raise OccDataError(f"z_shift: labels in the LiDAR frame take no vertical shift, got {self.z_shift!r}")
        if self.unlabelled not in UNLABELLED_MODES:
            raise OccDataError(f"unlabelled: expected one of {UNLABELLED_MODES}, got {self.unlabelled!r}")
        if self.ray_sweep_stride < 1:
            raise OccDataError(f"ray_sweep_stride: expected an integer >= 1, got {self.ray_sweep_stride!r}")
        if not self.box_scale >= 1.0:
            raise OccDataError(f"box_scale: expected a number >= 1, got {self.box_scale!r}")
        for name in ("nn_cap", "object_cell", "camera_ray_step", "carve_ratio", "ray_cell"):
            if not getattr(self, name) > 0:
                raise OccDataError(f"{name}: expected a number > 0, got {getattr(self, name)!r}")
