"""Geometry ops, each with a torch reference and a Triton kernel chosen per call.

- :func:`raycast`: first-hit DDA of many rays through an occupancy grid.

Dispatch: see :mod:`occ_core.ops.backend` (``backend=`` argument, ``$OCC_OPS_BACKEND``).
Importing this package never imports triton; kernels load lazily when chosen.
"""

from occ_core.ops.backend import BACKEND_ENV, resolve_backend
from occ_core.ops.raycast import RayHits, raycast, raycast_torch

__all__ = ["BACKEND_ENV", "resolve_backend", "RayHits", "raycast", "raycast_torch"]
