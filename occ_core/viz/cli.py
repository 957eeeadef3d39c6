"""``occ-render``: PNG renders (3D voxel view + BEV map) of occupancy grids, predictions and bags.

Examples::

    occ-render gts/scene-0001/<token>/labels.npz --mask camera -o renders/
    occ-render predictions/*.npz -o renders/ --view bev
    occ-render my_bag/ --topic /occupancy/voxels --every 5 -o renders/

Writes ``<out>/<name>_3d.png`` and ``<out>/<name>_bev.png`` (atomically) per grid; ``<name>``
is the file stem (``<sample token>_gt`` for a ``labels.npz`` ground-truth file) or
``<bag>_<stamp_ns>``; a name that repeats within one run gets ``_2``, ``_3``, ... so no render
overwrites another (a prediction ``<token>.npz`` and its GT render side by side). Every name is
checked as one file name before it is written (:func:`occ_core.paths.safe_component`).

Exit status 2, with one line naming the argument or file: bad numbers, an input that does not
exist or is not a grid file or bag, an ``-o`` folder that cannot be written (checked before
anything is rendered).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import cv2
from tqdm import tqdm

from occ_core.cli import check_output_dir, positive_int, run_cli
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_write_bytes
from occ_core.grid import GRIDS
from occ_core.paths import safe_component
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
    p.add_argument("--every", type=positive_int, default=1, help="bags: render every N-th message")
    p.add_argument("--azimuth", type=float, default=Camera3D.azimuth_deg, help="3D view: degrees from +x, CCW")
    p.add_argument("--elevation", type=float, default=Camera3D.elevation_deg, help="3D view: degrees above the ground")
    p.add_argument("--size", type=positive_int, nargs=2, default=(Camera3D.width, Camera3D.height), metavar=("W", "H"),
                   help="3D view size in pixels")
    return p.parse_args(argv)


def check_inputs(args: argparse.Namespace) -> None:
    """Every input exists and is of a kind occ-render reads; ``-o`` can be written. Raises
    OccDataError naming the input or ``--out``, before anything is rendered."""
    for path in args.inputs:
        if not path.exists():
            raise OccDataError(f"{path}: input not found (expected an .npz/.npy grid or a rosbag2)")
        if not is_bag(path) and not (path.is_file() and path.suffix in (".npz", ".npy")):
            raise OccDataError(f"{path}: not an .npz/.npy grid file or a rosbag2 (folder with metadata.yaml, "
                               f".mcap, .db3)")
    check_output_dir(args.out, "--out")


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
    """Entry point of ``occ-render``; returns the exit status (0 ok, 2 bad input: one line)."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse printed usage and the error (or --help)
        return int(e.code or 0)
    return run_cli("occ-render", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    check_inputs(args)
    spec = GRIDS[args.grid]
    camera = Camera3D(azimuth_deg=args.azimuth, elevation_deg=args.elevation, width=args.size[0], height=args.size[1])
    written = 0
    for g in tqdm(_unique(_grids(args)), desc="occ-render", unit="grid"):
        if args.view in ("3d", "both"):
            _write_png(args.out / safe_component(f"{g.name}_3d.png", "render name"),
                       add_legend(render_3d(g.labels, spec, camera), g.labels, title=g.name))
            written += 1
        if args.view in ("bev", "both"):
            _write_png(args.out / safe_component(f"{g.name}_bev.png", "render name"),
                       add_legend(render_bev(g.labels, spec), g.labels, title=g.name))
            written += 1
    print(f"occ-render: wrote {written} PNG(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
