"""Headless visualization of occupancy grids (PNG renders; numpy + OpenCV, no display)."""

from occ_core.viz.render import Camera3D, add_legend, exposed_faces, render_3d, render_bev
from occ_core.viz.sources import NamedGrid, bag_grids, read_grid_file, voxel_cloud_to_grid

__all__ = ["Camera3D", "add_legend", "exposed_faces", "render_3d", "render_bev", "NamedGrid", "bag_grids",
           "read_grid_file", "voxel_cloud_to_grid"]
