"""Whether a camera rig can feed a model's camera branch.

The camera branch takes any number of cameras of any size: every image is scaled to cover the
config's ``image.size`` (aspect kept) and cropped (centred horizontally, from the top), its K
updated to match, and the LSS frustum (depth bins ``lss.depth`` along each camera's optical z)
is splatted into the model's grid through the camera's extrinsics. Two things it cannot take:

- **An image the crop mostly discards.** A camera whose aspect ratio is far from the input's
  (a portrait camera for the 176×96 input) keeps under half of its rows or columns.
- **A camera whose view misses the grid.** Extrinsics in the body convention (x forward, z up)
  instead of the optical one (z forward, x right, y down), a camera pointing at the ground or
  the sky, or one placed far from ``base_link``: few of its frustum points land in the grid.
  The nuScenes cameras put 35–48 % of theirs inside the Occ3D grid with the shipped configs,
  the example robot's (config/rigs/robot_3cam.yaml, 0.45 m up) 29 %; the body-convention and
  straight-down mistakes put 0–8 %. An optical axis more than 45° above the horizon is
  refused on its own as well, naming the likely cause (a body-frame transform).

Also checked: each camera's principal point lies inside its image (K and width/height of one
resolution). The LiDAR branch takes points in ``base_link`` and has no rig requirement.
``python -m occ_core.models.rig_fit RIG MODEL_CONFIG`` prints the figures per camera.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

from occ_core.cli import check_input_file, run_cli
from occ_core.data.transforms import resize_crop_matrix
from occ_core.errors import OccDataError
from occ_core.grid import GRIDS
from occ_core.models.config import ModelConfig, load_config
from occ_core.models.lss import depth_bin_centres, frustum_points
from occ_core.rig import CameraCalib, Rig, load_rig

#: Fewest of an image's rows (and columns) the cover-and-crop to the model input may keep.
MIN_KEPT_FRACTION = 0.5
#: Smallest fraction of a camera's LSS frustum points (feature pixels × depth bins) inside the grid.
MIN_VIEW_IN_GRID = 0.10
#: Steepest upward tilt of a camera's optical axis (degrees above the base_link x-y plane).
MAX_ELEVATION_DEG = 45.0


@dataclass(frozen=True)
class CameraFit:
    """How one camera feeds the model.

    Attributes:
        name: the camera.
        kept_rows, kept_cols: fractions of the native image's rows and columns that survive the
            resize-and-crop to the model input (1.0 = none cropped).
        view_in_grid: fraction of the camera's frustum points (feature-map pixel centres ×
            depth-bin centres, in ``base_link``) that fall inside the model's grid.
        problems: what makes the camera unusable for the model (empty: it fits).
    """

    name: str
    kept_rows: float
    kept_cols: float
    view_in_grid: float
    problems: tuple[str, ...]


def camera_fit(cam: CameraCalib, cfg: ModelConfig) -> CameraFit:
    """Check one rig camera against a model with a camera branch (``cfg.lss`` set)."""
    h, w = cfg.image.size
    H, W = cam.height, cam.width
    problems = []
    cx, cy = float(cam.K[0, 2]), float(cam.K[1, 2])
    if not (0.0 <= cx <= W and 0.0 <= cy <= H):
        problems.append(f"principal point (cx, cy) = ({cx:.1f}, {cy:.1f}) lies outside its {W}x{H} image "
                        f"(K and width/height must be of the same resolution)")
    A, (Hr, Wr) = resize_crop_matrix((H, W), (h, w))
    kept_rows, kept_cols = h / Hr, w / Wr
    if min(kept_rows, kept_cols) < MIN_KEPT_FRACTION:
        axis, kept = ("rows", kept_rows) if kept_rows < kept_cols else ("columns", kept_cols)
        problems.append(f"its {W}x{H} image (aspect {W / H:.2f}) keeps only {100 * kept:.0f} % of its {axis} "
                        f"when cropped to the model input {w}x{h} (aspect {w / h:.2f}; at least "
                        f"{100 * MIN_KEPT_FRACTION:.0f} % needed): use a camera or crop of aspect "
                        f"{w / h * MIN_KEPT_FRACTION:.2f}..{w / h / MIN_KEPT_FRACTION:.2f}, or train with another image.size")
    axis = cam.T_base_from_cam[:3, 2]  # the optical axis (camera z) in base_link
    elevation = float(np.degrees(np.arcsin(np.clip(axis[2] / max(np.linalg.norm(axis), 1e-12), -1.0, 1.0))))
    if elevation > MAX_ELEVATION_DEG:
        problems.append(f"its optical axis points {elevation:.0f} deg above the horizon (at most "
                        f"{MAX_ELEVATION_DEG:.0f} deg): extrinsics of a body frame (x forward, z up)? Camera frames are "
                        f"optical: z forward, x right, y down")
    stride = cfg.backbone.out_stride
    K = torch.as_tensor(A @ cam.K, dtype=torch.float32)[None, None]
    T = torch.as_tensor(cam.T_base_from_cam, dtype=torch.float32)[None, None]
    pts = frustum_points(depth_bin_centres(cfg.lss), K, T, (h, w), (max(1, h // stride), max(1, w // stride)))
    grid = GRIDS[cfg.grid]
    lo = np.asarray(grid.range_min)
    hi = lo + np.asarray(grid.voxel_size) * np.asarray(grid.dims)
    p = pts.reshape(-1, 3).numpy()
    view = float(np.mean(np.all((p >= lo) & (p < hi), axis=1)))
    if view < MIN_VIEW_IN_GRID:
        problems.append(f"only {100 * view:.1f} % of its view (depths {cfg.lss.depth[0]:g}-{cfg.lss.depth[1]:g} m) "
                        f"falls inside the {grid.name} grid ({lo.tolist()} to {hi.tolist()} m in base_link; at least "
                        f"{100 * MIN_VIEW_IN_GRID:.0f} % needed): check its translation and quaternion_xyzw "
                        f"(camera -> base_link, optical frame: z forward, x right, y down)")
    return CameraFit(cam.name, kept_rows, kept_cols, view, tuple(problems))


def check_rig_fits_model(rig: Rig, camera_names: tuple[str, ...] | list[str], cfg: ModelConfig,
                         rig_name: str = "rig", model_name: str = "model") -> list[CameraFit]:
    """The fit of each camera in ``camera_names`` (all must be cameras of ``rig``).

    Returns:
        One :class:`CameraFit` per camera ([] for a model without a camera branch).

    Raises:
        OccDataError: one message naming the rig, the model and every camera that does not fit.
    """
    if cfg.lss is None:
        return []
    fits = [camera_fit(rig.camera(name), cfg) for name in camera_names]
    bad = [f for f in fits if f.problems]
    if bad:
        detail = "; ".join(f"camera {f.name}: {' and '.join(f.problems)}" for f in bad)
        raise OccDataError(f"{rig_name} cannot feed {model_name}: {detail}")
    return fits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m occ_core.models.rig_fit",
                                     description="Check that a rig file's cameras can feed a model config's camera "
                                                 "branch; print the figures per camera. Exit 2 when one cannot.")
    parser.add_argument("rig", help="rig file (config/rigs/*.yaml)")
    parser.add_argument("model_config", help="model config (config/models/*.yaml)")
    parser.add_argument("--cameras", nargs="+", metavar="NAME", help="the cameras used (default: all of the rig)")
    args = parser.parse_args(argv)

    def run() -> int:
        rig_path = check_input_file(args.rig, "rig")
        cfg_path = check_input_file(args.model_config, "model_config")
        rig, cfg = load_rig(rig_path), load_config(cfg_path)
        names = tuple(args.cameras or rig.camera_names)
        unknown = [n for n in names if n not in rig.camera_names]
        if unknown:
            raise OccDataError(f"--cameras: {unknown} are not cameras of {rig_path} (it has {list(rig.camera_names)})")
        if cfg.lss is None:
            print(f"{cfg_path}: no camera branch; the rig's cameras are not used")
            return 0
        fits = [camera_fit(rig.camera(n), cfg) for n in names]
        print(f"{'camera':<20} {'size':>10} {'rows kept':>9} {'cols kept':>9} {'view in grid':>12}")
        for f, cam in zip(fits, (rig.camera(n) for n in names)):
            print(f"{f.name:<20} {cam.width:>5}x{cam.height:<4} {100 * f.kept_rows:>8.0f}% {100 * f.kept_cols:>8.0f}% "
                  f"{100 * f.view_in_grid:>11.1f}%")
        check_rig_fits_model(rig, names, cfg, str(rig_path), str(cfg_path))
        print(f"{rig_path}: every camera fits {cfg_path}")
        return 0

    return run_cli(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
