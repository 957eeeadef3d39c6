"""Densification by Poisson surface reconstruction (SurroundOcc's label pipeline), through Open3D.

The aggregated LiDAR cloud of a keyframe is sparse: rings leave the ground unhit between them
and walls seen at a grazing angle keep holes. SurroundOcc closes them by meshing: per keyframe,
normals from the ``knn`` nearest points oriented towards the LiDAR origin, screened Poisson
reconstruction at octree ``depth``, the vertices of lowest density (the ``min_density``
quantile: surface the solver invented far from any point) dropped, and each remaining mesh
vertex labelled by its nearest labelled point. :func:`poisson_vertices` does that;
the label pipeline votes the vertices into voxels that the points left free
(:func:`occ_core.labels.pipeline.label_keyframe`).

Frames: everything is in one frame, the keyframe's base_link (metres).

Open3D's Linux wheel links ``libusb-1.0.so.0`` (for its RealSense support), which minimal
machines lack; :func:`import_open3d` then loads the copy that the ``libusb-package`` wheel ships
before importing Open3D.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
from pathlib import Path

import numpy as np

from occ_core.classes import IGNORE_LABEL
from occ_core.errors import OccDataError

#: SurroundOcc's settings (tools/generate_occupancy_nuscenes/config.yaml).
POISSON_DEPTH = 10
POISSON_MIN_DENSITY = 0.1
NORMAL_KNN = 20

_O3D = None


def import_open3d():
    """The ``open3d`` module, loading the bundled libusb first when the system has none.

    Raises:
        OccDataError: Open3D is not installed or does not load (the message says why).
    """
    global _O3D
    if _O3D is not None:
        return _O3D
    if importlib.util.find_spec("open3d") is None:
        raise OccDataError("densify: 'poisson' needs Open3D (open3d-cpu, pinned in requirements.lock), "
                           "which is not installed")
    if ctypes.util.find_library("usb-1.0") is None:
        spec = importlib.util.find_spec("libusb_package")
        if spec is not None and spec.origin:
            lib = Path(spec.origin).parent / "libusb-1.0.so"
            if lib.is_file():
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    try:
        import open3d
    except ImportError as e:
        raise OccDataError(f"densify: 'poisson' needs Open3D, which does not load here ({e})") from None
    open3d.utility.set_verbosity_level(open3d.utility.VerbosityLevel.Error)
    _O3D = open3d
    return open3d


def poisson_vertices(points: np.ndarray, labels: np.ndarray, origin: np.ndarray, depth: int = POISSON_DEPTH,
                     min_density: float = POISSON_MIN_DENSITY, max_gap: float = 0.0, knn: int = NORMAL_KNN,
                     threads: int = 1, cell: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the Poisson surface of a point cloud, each with its nearest point's label.

    Args:
        points: (N, 3) metres (one frame, e.g. a keyframe's base_link), the aggregated cloud.
        labels: (N,) uint8 Occ3D class per point, 255 where unknown. Vertices take the label of
            the nearest point with a known label (of the nearest point at all when none is
            known: geometry-only labels keep 255 and the caller decides what that becomes).
        origin: (3,) the LiDAR position the normals are oriented towards (the sensor sees the
            outside of every surface).
        depth: Poisson octree depth (cells of extent / 2**depth).
        min_density: vertices whose density (how many points support them) is below this
            quantile of all densities are dropped; 0 keeps all.
        max_gap: metres; vertices farther than this from every point are dropped (0: none are).
        knn: neighbours for the normal estimate.
        threads: Open3D's solver threads (1: one core per worker process).
        cell: metres; the cloud is thinned to one point per cubic cell of this size first (the
            cost of normals and solver grows with the points; 0: no thinning, as SurroundOcc).

    Returns:
        ``(vertices (M, 3) float64, labels (M,) uint8)``; empty when fewer than ``knn`` points.
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, np.float64)
    labels = np.asarray(labels, np.uint8)
    if cell > 0 and len(pts):
        _, first = np.unique(np.floor(pts / cell).astype(np.int64), axis=0, return_index=True)
        pts, labels = pts[first], labels[first]
    if len(pts) < max(knn, 4):
        return np.zeros((0, 3)), np.zeros(0, np.uint8)
    o3d = import_open3d()
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(pts)
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn))
    cloud.orient_normals_towards_camera_location(np.asarray(origin, np.float64))
    mesh, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(cloud, depth=depth, n_threads=threads)
    verts = np.asarray(mesh.vertices)
    density = np.asarray(density)
    if min_density > 0 and len(density):
        verts = verts[density >= np.quantile(density, min_density)]
    if len(verts) == 0:
        return np.zeros((0, 3)), np.zeros(0, np.uint8)
    if max_gap > 0:
        gap, _ = cKDTree(pts).query(verts, k=1, distance_upper_bound=max_gap)
        verts = verts[np.isfinite(gap)]
        if len(verts) == 0:
            return np.zeros((0, 3)), np.zeros(0, np.uint8)
    known = labels != IGNORE_LABEL
    ref = pts[known] if known.any() else pts
    ref_lab = labels[known] if known.any() else labels
    _, idx = cKDTree(ref).query(verts, k=1)
    return verts, ref_lab[idx]
