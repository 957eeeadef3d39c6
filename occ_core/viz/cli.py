"""``occ-render``: PNG renders (3D voxel view + BEV map) of occupancy grids, predictions and bags.

Examples::

    occ-render gts/scene-0001/<token>/labels.npz --mask camera -o renders/
    occ-render predictions/*.npz -o renders/ --view bev
    occ-render my_bag/ --topic /occupancy/voxels --every 5 -o renders/

Writes ``<out>/<name>_3d.png`` and ``<out>/<name>_bev.png`` (atomically) per grid; ``<name>``
is the file stem (``<sample token>_gt`` for a ``labels.npz`` ground-truth file) or
``<bag>_<stamp_ns>``; a name that repeats within one run gets ``_2``, ``_3``, ... so no render
overwrites another (a prediction ``<token>.npz`` and its GT render side by side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import cv2
from tqdm import tqdm

from occ_core.errors import OccDataError
from occ_core.fileio import atomic_write_bytes
from occ_core.grid import GRIDS
from occ_core.viz.render import Camera3D, add_legend, render_3d, render_bev
from occ_core.viz.sources import NamedGrid, bag_grids, is_bag, read_grid_file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="occ-render", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help=".npz labels/predictions, .npy grids or rosbag2 folders/files")
    p.add_argument("-o", "--out", type=Path, default=Path("renders"), help="output folder (default: renders)")
    p.add_argument("--view", choices=("3d", "bev", "both"), default="both")
    p.add_argument("--grid", choices=sorted(GRIDS), default="occ3d", help="grid of the inputs (default occ3d)")
    p.add_argument("--mask", choices=("none", "camera", "lidar"), default="none",
                   help="GT files only: show only voxels inside this visibility mask")
    p.add_argument("--topic", default="/occupancy/voxels", help="voxel cloud topic of bags")
    p.add_argument("--every", type=int, default=1, help="bags: render every N-th message")
    p.add_argument("--azimuth", type=float, default=Camera3D.azimuth_deg, help="3D view: degrees from +x, CCW")
    p.add_argument("--elevation", type=float, default=Camera3D.elevation_deg, help="3D view: degrees above the ground")
    p.add_argument("--size", type=int, nargs=2, default=(Camera3D.width, Camera3D.height), metavar=("W", "H"))
    args = p.parse_args(argv)
    if args.every < 1:
        p.error(f"--every: expected >= 1, got {args.every}")
    return args


def _grids(args: argparse.Namespace) -> Iterator[NamedGrid]:
    spec = GRIDS[args.grid]
    for path in args.inputs:
        if is_bag(path):
            yield from bag_grids(path, spec, args.topic, args.every)
        else:
            name = f"{path.parent.name}_gt" if path.name == "labels.npz" else path.stem
            yield NamedGrid(name, read_grid_file(path, spec, args.mask))


def _unique(names: Iterator[NamedGrid]) -> Iterator[NamedGrid]:
    """The grids with names made unique within the run (``name``, ``name_2``, ...)."""
    seen: dict[str, int] = {}
    for g in names:
        n = seen.get(g.name, 0) + 1
        seen[g.name] = n
        yield g if n == 1 else NamedGrid(f"{g.name}_{n}", g.labels)


def _write_png(path: Path, img) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OccDataError(f"{path}: OpenCV could not encode the render")
    atomic_write_bytes(path, buf.tobytes())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = GRIDS[args.grid]
    camera = Camera3D(azimuth_deg=args.azimuth, elevation_deg=args.elevation, width=args.size[0], height=args.size[1])
    written = 0
    try:
        for g in tqdm(_unique(_grids(args)), desc="occ-render", unit="grid"):
            if args.view in ("3d", "both"):
                _write_png(args.out / f"{g.name}_3d.png", add_legend(render_3d(g.labels, spec, camera), g.labels, title=g.name))
                written += 1
            if args.view in ("bev", "both"):
                _write_png(args.out / f"{g.name}_bev.png", add_legend(render_bev(g.labels, spec), g.labels, title=g.name))
                written += 1
    except OccDataError as e:
        print(f"occ-render: {e}", file=sys.stderr)
        return 2
    print(f"occ-render: wrote {written} PNG(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
