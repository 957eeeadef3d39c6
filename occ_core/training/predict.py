"""``occ-predict``: write Occ3D predictions of a trained model for a split.

    occ-predict --config config/models/fusion.yaml --checkpoint runs/fusion/model.pt \\
                --dataroot data/synthetic --split val --out runs/fusion/pred
    occ-eval --gt data/synthetic/gts --pred runs/fusion/pred --scenes <val scenes>

Each keyframe of the split goes through the same path as the ROS node: a
:class:`~occ_core.frame.SensorFrame` from the dataroot (multi-sweep LiDAR in base_link) ->
:meth:`OccupancyPredictor.predict` -> ``<out>/<sample_token>.npz`` (key ``semantics``, uint8
(200, 200, 16), written atomically). Tokens whose file already exists are skipped, so an
interrupted run continues where it stopped (``--overwrite`` redoes them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from occ_core.errors import OccDataError
from occ_core.formats import occ3d


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occ-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model config, config/models/*.yaml")
    p.add_argument("--checkpoint", help="model.pt or checkpoints/latest.pt from occ-train (omit: seeded random init)")
    p.add_argument("--dataroot", required=True, help="nuScenes-format dataroot")
    p.add_argument("--split", default="val", help="train or val (default val)")
    p.add_argument("--out", required=True, type=Path, help="folder for <sample_token>.npz")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="rewrite predictions that already exist")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from occ_core.data.nuscenes_dataset import NuScenesOccDataset, scene_splits
        from occ_core.models.predictor import load_predictor

        predictor = load_predictor(args.config, args.checkpoint, args.device)
        cfg = predictor.cfg
        splits = scene_splits(args.dataroot)
        if args.split not in splits:
            raise OccDataError(f"--split: {args.split!r} is not one of {sorted(splits)}")
        sweeps = cfg.lidar.max_sweeps if cfg.lidar is not None else 1
        ds = NuScenesOccDataset(args.dataroot, splits[args.split], cfg.grid_spec, sweeps, image_hw=cfg.image_hw)
        written = 0
        for scene, token in tqdm(ds.samples, desc=f"predict {args.split}", disable=args.no_progress):
            path = args.out / f"{token}.npz"
            if path.exists() and not args.overwrite:
                continue
            pred = predictor.predict(ds.load_frame(token))
            occ3d.write_prediction(path, pred.labels)
            written += 1
        print(f"occ-predict: {written} predictions written, {len(ds.samples) - written} kept, in {args.out}")
        return 0
    except OccDataError as e:
        print(f"occ-predict: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
