"""``occ-render``: PNG renders (3D voxel view + BEV map) of occupancy grids, predictions and bags;
with ``--compare``, prediction beside ground truth per keyframe.

Examples::

    occ-render gts/scene-0001/<token>/labels.npz --mask camera -o renders/
    occ-render predictions/*.npz -o renders/ --view bev
    occ-render my_bag/ --topic /occupancy/voxels --every 5 -o renders/
    occ-render --compare predictions/ --dataroot data/synthetic --scenes scene-0005 -o renders/ --gif renders/scene-0005.gif
    occ-render --compare predictions_bag/ --dataroot data/synthetic -o renders/

``--compare PRED``: ``PRED`` is one prediction folder (``<token>.npz``, as ``occ-predict`` writes)
or one bag of the node's ``/occupancy/voxels`` (each message matched to the keyframe with the
nearest LIDAR_TOP stamp, within 20 ms); ``--dataroot`` is the nuScenes-format dataroot with the
tables, camera images and Occ3D ``gts/``. Per keyframe with a prediction it writes
``<out>/<scene>_<kk>_<token>_compare.png`` (kk = keyframe index in the scene): the six cameras,
ground truth / prediction / difference BEV maps with range rings and the ego marker, ground
truth / prediction 3D views, the legend and a title with the frame's mIoU and IoU (layout:
:mod:`occ_core.viz.compare`). Grids, difference and scores cover the ``--mask`` voxels (default
camera; ``none`` shows everything). ``--gif PATH`` adds an animated GIF of the written frames
in order (downscaled to ``--gif-width``; pick one scene with ``--scenes`` for a scene's clip).

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
import numpy as np
from tqdm import tqdm

from occ_core.cli import check_output_dir, check_output_file, positive_int, run_cli
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_write_bytes
from occ_core.grid import GRIDS
from occ_core.paths import safe_component
from occ_core.viz.compare import COMPARE_VIEW
from occ_core.viz.render import Camera3D, add_legend, render_3d, render_bev
from occ_core.viz.sources import NamedGrid, bag_grids, is_bag, read_grid_file


def _colors(text: str) -> int:
    n = positive_int(text)
    if not 2 <= n <= 256:
        raise argparse.ArgumentTypeError(f"expected 2..256 colours, got {n}")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="occ-render", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help=".npz labels/predictions, .npy grids or rosbag2 folders/files; "
                   "with --compare: one prediction folder or one bag")
    p.add_argument("-o", "--out", type=Path, default=Path("renders"), help="output folder (default: renders)")
    p.add_argument("--view", choices=("3d", "bev", "both"), default=None, help="which renders (default both; not with "
                   "--compare)")
    p.add_argument("--grid", choices=sorted(GRIDS), default="occ3d", help="grid of the inputs (default occ3d)")
    p.add_argument("--mask", choices=("none", "camera", "lidar"), default=None,
                   help="GT files: show only voxels inside this visibility mask (default none); --compare: the voxels "
                        "shown, compared and scored (default camera)")
    c = p.add_argument_group("comparison (--compare)")
    c.add_argument("--compare", action="store_true", help="prediction beside ground truth per keyframe (see above)")
    c.add_argument("--dataroot", type=Path, default=None, help="nuScenes-format dataroot with gts/ (needed by --compare)")
    c.add_argument("--scenes", default=None, help="comma-separated scene names (default: every scene with predictions)")
    c.add_argument("--model-name", default=None, help="the model named in the title (default: the prediction folder's "
                   "or bag's name)")
    c.add_argument("--gif", type=Path, default=None, help="also write an animated GIF of the composites to this path")
    c.add_argument("--gif-width", type=positive_int, default=720, help="GIF frame width in pixels (default 720)")
    c.add_argument("--gif-ms", type=positive_int, default=500, help="GIF frame duration in ms (default 500: the 2 Hz "
                   "keyframes in real time)")
    p.add_argument("--topic", default="/occupancy/voxels", help="voxel cloud topic of bags")
    p.add_argument("--every", type=positive_int, default=1, help="bags: render every N-th message")
    p.add_argument("--azimuth", type=float, default=Camera3D.azimuth_deg, help="3D view: degrees from +x, CCW")
    p.add_argument("--elevation", type=float, default=None,
                   help=f"3D view: degrees above the ground (default {Camera3D.elevation_deg:g}; --compare "
                        f"{COMPARE_VIEW['elevation_deg']:g})")
    p.add_argument("--colors", type=_colors, default=None, metavar="N",
                   help="write palette PNGs of N colours (2-256; several times smaller, e.g. for docs); default: "
                        "full colour")
    p.add_argument("--size", type=positive_int, nargs=2, default=None, metavar=("W", "H"),
                   help=f"3D view size in pixels (default {Camera3D.width} {Camera3D.height}; not with --compare)")
    a = p.parse_args(argv)
    if a.compare:
        for flag, value in (("--view", a.view), ("--size", a.size)):
            if value is not None:
                p.error(f"{flag}: not used with --compare (the composite has a fixed layout)")
        if a.dataroot is None:
            p.error("--compare needs --dataroot (the nuScenes-format dataroot with the ground truth and cameras)")
        if len(a.inputs) != 1:
            p.error(f"--compare takes one prediction folder or bag, got {len(a.inputs)} inputs")
        a.mask = a.mask or "camera"
        a.elevation = COMPARE_VIEW["elevation_deg"] if a.elevation is None else a.elevation
        if a.scenes is not None:
            a.scenes = [x.strip() for x in a.scenes.split(",") if x.strip()]
            if not a.scenes:
                p.error("--scenes: empty list")
    else:
        used = [f for f, v in (("--dataroot", a.dataroot), ("--scenes", a.scenes), ("--model-name", a.model_name),
                               ("--gif", a.gif)) if v is not None]
        if used:
            p.error(f"{', '.join(used)}: only with --compare")
        a.mask, a.view = a.mask or "none", a.view or "both"
        a.size = a.size or (Camera3D.width, Camera3D.height)
        a.elevation = Camera3D.elevation_deg if a.elevation is None else a.elevation
    return a


def check_inputs(args: argparse.Namespace) -> None:
    """Every input exists and is of a kind occ-render reads; ``-o`` (and ``--gif``) can be written;
    ``--dataroot`` holds nuScenes tables. Raises OccDataError naming the input or option, before
    anything is rendered."""
    if args.compare:
        from occ_core.data.nuscenes_dataset import check_dataroot

        src = args.inputs[0]
        if not src.exists():
            raise OccDataError(f"{src}: input not found (expected a prediction folder of <token>.npz or a rosbag2)")
        if not is_bag(src) and not src.is_dir():
            raise OccDataError(f"{src}: --compare expects a prediction folder (<token>.npz files) or a rosbag2 "
                               f"(folder with metadata.yaml, .mcap, .db3)")
        check_dataroot(args.dataroot)
        check_output_dir(args.out, "--out")
        if args.gif is not None:
            check_output_file(args.gif, "--gif")
        return
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


def _write_png(path: Path, img, colors: int | None = None) -> None:
    """``img`` (BGR) as a PNG, atomically; with ``colors``, a palette PNG of that many colours
    (Pillow's fast octree quantizer: several times smaller, for docs and web pages)."""
    if colors is not None:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img[:, :, ::-1])).quantize(
            colors=colors, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", optimize=True)
        atomic_write_bytes(path, buf.getvalue())
        return
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
    if args.compare:
        return _run_compare(args)
    spec = GRIDS[args.grid]
    camera = Camera3D(azimuth_deg=args.azimuth, elevation_deg=args.elevation, width=args.size[0], height=args.size[1])
    written = 0
    for g in tqdm(_unique(_grids(args)), desc="occ-render", unit="grid"):
        if args.view in ("3d", "both"):
            _write_png(args.out / safe_component(f"{g.name}_3d.png", "render name"),
                       add_legend(render_3d(g.labels, spec, camera), g.labels, title=g.name), args.colors)
            written += 1
        if args.view in ("bev", "both"):
            _write_png(args.out / safe_component(f"{g.name}_bev.png", "render name"),
                       add_legend(render_bev(g.labels, spec), g.labels, title=g.name), args.colors)
            written += 1
    print(f"occ-render: wrote {written} PNG(s) to {args.out}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from nuscenes.nuscenes import NuScenes

    from occ_core.data.nuscenes_dataset import find_version, label_path
    from occ_core.formats import occ3d
    from occ_core.eval.occupancy import select_mask
    from occ_core.viz.compare import comparison_layout, frame_scores, render_comparison, title_lines
    from occ_core.viz.sources import bag_predictions, camera_images, folder_predictions, keyframes

    spec = GRIDS[args.grid]
    src = args.inputs[0]
    nusc = NuScenes(find_version(args.dataroot), str(args.dataroot), verbose=False)
    frames = keyframes(nusc, args.scenes)
    if is_bag(src):
        pairs, unmatched = bag_predictions(src, frames, spec, args.topic, args.every)
        if unmatched:
            print(f"occ-render: {unmatched} message(s) of {src} matched no keyframe of the selected scenes")
    else:
        pairs = folder_predictions(src, frames)
    if not pairs:
        raise OccDataError(f"{src}: no prediction for any keyframe of {args.scenes or 'the dataroot'} "
                           f"({'no message stamp near a keyframe LIDAR_TOP stamp' if is_bag(src) else 'no <token>.npz'})")
    model = args.model_name or (src.stem if src.is_file() else src.resolve().name)
    camera = Camera3D.for_grid(spec, **{**COMPARE_VIEW, "azimuth_deg": args.azimuth, "elevation_deg": args.elevation})
    _, _, cams_w, cams_h = comparison_layout(spec, camera3d=camera).panels["cameras"]
    gif_frames = []
    for info, pred in tqdm(pairs, desc="occ-render --compare", unit="frame"):
        gt = occ3d.read_gt(label_path(args.dataroot, info.scene, info.token), spec.dims)
        if isinstance(pred, Path):
            pred = occ3d.read_prediction(pred, spec.dims)
        mask = select_mask(args.mask, gt.mask_camera, gt.mask_lidar, str(label_path(args.dataroot, info.scene, info.token)))
        cams = camera_images(nusc, args.dataroot, info.token, (cams_h // 2, cams_w // 3))
        comp = render_comparison(gt.semantics, pred, spec, mask, cams,
                                 title_lines(info, model, frame_scores(gt.semantics, pred, mask), args.mask),
                                 pred_name=model, mask_name=args.mask, camera3d=camera)
        _write_png(args.out / safe_component(f"{info.scene}_{info.index:02d}_{info.token}_compare.png", "render name"),
                   comp.image, args.colors)
        if args.gif is not None:
            h, w = comp.image.shape[:2]
            gw = min(args.gif_width, w)
            gif_frames.append(cv2.resize(comp.image, (gw, int(round(h * gw / w))), interpolation=cv2.INTER_AREA))
    print(f"occ-render: wrote {len(pairs)} comparison PNG(s) to {args.out}")
    if args.gif is not None:
        write_gif(args.gif, gif_frames, args.gif_ms)
        print(f"occ-render: wrote {args.gif} ({len(gif_frames)} frames)")
    return 0


def write_gif(path: Path, frames: list, duration_ms: int) -> None:
    """An endlessly looping GIF of BGR frames (same size), ``duration_ms`` each, written atomically."""
    from PIL import Image

    from occ_core.fileio import atomic_path

    images = [Image.fromarray(np.ascontiguousarray(f[:, :, ::-1])).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
              for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


if __name__ == "__main__":
    sys.exit(main())
