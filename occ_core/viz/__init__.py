"""Headless visualization of occupancy grids (PNG renders; numpy + OpenCV, no display)."""

from occ_core.viz.compare import (Composite, FrameInfo, camera_mosaic, comparison_layout, diff_columns,
                                  render_comparison, render_diff_bev)
from occ_core.viz.render import (Camera3D, add_legend, bev_pixel, draw_ego, draw_range_rings, exposed_faces, render_3d,
                                 render_bev)
from occ_core.viz.sources import NamedGrid, bag_grids, read_grid_file, voxel_cloud_to_grid

__all__ = ["Camera3D", "add_legend", "bev_pixel", "draw_ego", "draw_range_rings", "exposed_faces", "render_3d",
           "render_bev", "Composite", "FrameInfo", "camera_mosaic", "comparison_layout", "diff_columns",
           "render_comparison", "render_diff_bev", "NamedGrid", "bag_grids", "read_grid_file", "voxel_cloud_to_grid"]
