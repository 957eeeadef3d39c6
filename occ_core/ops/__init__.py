"""Geometry ops, each with a torch reference and a Triton kernel chosen per call (the ray ops
also with a numba CPU kernel).

- :func:`raycast`: first-hit DDA of many rays through an occupancy grid (:class:`RayHits`).
- :func:`ray_traverse`: per voxel, the summed weights of the segments crossing it (optionally
  stopping at the first blocked voxel): the label generator's masks and carving counts.
- :func:`dynamic_voxelize`, :func:`hard_voxelize`: points -> voxels, mmdet3d semantics
  (coordinates ``[z, y, x]``).
- :func:`prepare_bev_pool`, :func:`bev_pool`: BEVPoolv2 lift-splat, forward and backward.
- :func:`ms_deform_attn`: multi-scale deformable attention (Deformable DETR / BEVFormer),
  forward and backward.

Dispatch: see :mod:`occ_core.ops.backend` (``backend=`` argument, ``$OCC_OPS_BACKEND``).
Importing this package never imports triton or numba; kernels load lazily when chosen.
"""

from occ_core.ops.backend import BACKEND_ENV, resolve_backend
from occ_core.ops.bev_pool import BevPoolPlan, bev_pool, prepare_bev_pool
from occ_core.ops.deform_attn import ms_deform_attn
from occ_core.ops.ray_traverse import TraverseCounts, ray_traverse
from occ_core.ops.raycast import RayHits, raycast, raycast_torch
from occ_core.ops.voxelize import DynamicVoxels, HardVoxels, dynamic_voxelize, hard_voxelize

__all__ = [
    "BACKEND_ENV", "resolve_backend",
    "RayHits", "raycast", "raycast_torch",
    "TraverseCounts", "ray_traverse",
    "DynamicVoxels", "HardVoxels", "dynamic_voxelize", "hard_voxelize",
    "BevPoolPlan", "bev_pool", "prepare_bev_pool",
    "ms_deform_attn",
]
