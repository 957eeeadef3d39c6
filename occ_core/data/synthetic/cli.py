"""``occ-synth``: write the synthetic driving world as a nuScenes v1.0-mini dataroot.

Example::

    occ-synth --out data/synth --scenes 2 --samples-per-scene 20 --seed 0
    occ-synth --out data/bench/train --preset bench-train   # a named world (occ_core.data.synthetic.presets)
    python -c "from nuscenes.nuscenes import NuScenes; NuScenes('v1.0-mini', 'data/synth')"

Exit status 2, with one line naming the argument: bad numbers, an ``--out`` that is a file, not
empty (without ``--overwrite``) or whose folder cannot be written (checked before any scene is
generated). Scene workers die with the command, also on ``kill -9``; the next run removes the
temporary folder a killed run left.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys

from occ_core.cli import nonnegative_int, positive_int, run_cli
from occ_core.data.synthetic.dataset import SynthConfig, generate
from occ_core.data.synthetic.presets import PRESETS

#: the options a --preset fixes (dest names); giving one of them with --preset is an error
_WORLD_OPTIONS = ("scenes", "samples_per_scene", "seed", "image_size", "val_scenes")


def _image_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occ-synth", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="dataroot to create (must be empty or absent unless --overwrite)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named world (scenes, keyframes, seed, image size, val scenes); "
                        "the other world options may not be given with it")
    p.add_argument("--scenes", type=positive_int, default=2, help="number of scenes")
    p.add_argument("--samples-per-scene", type=positive_int, default=20, help="keyframes (2 Hz) per scene")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="world seed; the same seed gives identical files")
    p.add_argument("--image-size", type=_image_size, default=(640, 360), metavar="WxH", help="camera image size")
    p.add_argument("--sweeps", action=argparse.BooleanOptionalAction, default=True,
                   help="write 20 Hz LiDAR sweeps between keyframes")
    p.add_argument("--camera-sweeps", action=argparse.BooleanOptionalAction, default=False,
                   help="render 12 Hz camera sweeps between keyframes (slow)")
    p.add_argument("--val-scenes", type=nonnegative_int, default=None,
                   help="how many of the last scenes splits.json puts in val (default: 20 %%, at least 1 of 2+)")
    p.add_argument("--camera-adjacent", action="store_true",
                   help="render only the previous and next 12 Hz camera frame around each keyframe (OccNeRF's "
                        "source frames; cheaper than --camera-sweeps)")
    p.add_argument("--semantic2d", action="store_true",
                   help="write per-pixel 2D semantic maps of every camera image to semantic2d/")
    p.add_argument("--semantic2d-corrupt", action="store_true",
                   help="also write them corrupted like an open-vocabulary segmenter's output to semantic2d_corrupt/")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="processes generating scenes in parallel (default: one per CPU core)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad arguments or output folder)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.preset is not None:
            given = [o for o in _WORLD_OPTIONS if getattr(args, o) != parser.get_default(o)]
            if given:
                parser.error(f"--preset {args.preset} fixes the world; drop --{given[0].replace('_', '-')}")
    except SystemExit as e:  # argparse already printed the message
        return int(e.code or 0)
    return run_cli("occ-synth", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.preset is not None:
        base = PRESETS[args.preset]
        cfg = dataclasses.replace(base, sweeps=args.sweeps and base.sweeps, camera_sweeps=args.camera_sweeps or base.camera_sweeps,
                                  camera_adjacent=args.camera_adjacent, semantic2d=args.semantic2d,
                                  semantic2d_corrupt=args.semantic2d_corrupt)
    else:
        cfg = SynthConfig(scenes=args.scenes, samples_per_scene=args.samples_per_scene, seed=args.seed,
                          image_size=args.image_size, sweeps=args.sweeps, camera_sweeps=args.camera_sweeps,
                          val_scenes=args.val_scenes, camera_adjacent=args.camera_adjacent,
                          semantic2d=args.semantic2d, semantic2d_corrupt=args.semantic2d_corrupt)
    res = generate(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet, workers=args.workers)
    t = res.times
    print(f"wrote {res.dataroot}: {len(res.scene_names)} scenes, {res.samples} samples, {res.sample_data} sample_data, "
          f"{res.annotations} annotations (world {t.world:.1f} s, lidar {t.lidar:.1f} s, cameras {t.cameras:.1f} s, "
          f"ground truth {t.groundtruth:.1f} s, write {t.write:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
