"""``occ-predict``: write Occ3D or OpenOcc v2 predictions of a trained model for a split.

    occ-predict --config config/models/fusion.yaml --checkpoint runs/fusion/model.pt \\
                --dataroot data/synthetic --split val --out runs/fusion/pred
    occ-eval --gt data/synthetic/gts --pred runs/fusion/pred --scenes <val scenes>

    occ-predict --config config/models/fusion_flow.yaml --checkpoint runs/flow/model.pt \\
                --dataroot data/synthetic --split val --out runs/flow/pred_openocc --format openocc
    occ-eval --format openocc --gt data/synthetic/openocc_v2 --pred runs/flow/pred_openocc \\
             --metrics miou,iou,rayiou,mave --dataroot data/synthetic --version v1.0-mini --scenes <val scenes>

Each keyframe of the split goes through the same path as the ROS node: a
:class:`~occ_core.frame.SensorFrame` from the dataroot (multi-sweep LiDAR in base_link) ->
:meth:`OccupancyPredictor.predict` -> ``<out>/<sample_token>.npz``, written atomically:

- ``--format occ3d`` (default): key ``semantics``, uint8 (200, 200, 16) Occ3D labels (17 = free).
- ``--format depth``: rendered depth of every camera image of the keyframe as
  ``<out>/<CAM>/<image file stem>.png``, uint16 metres x 256 at the source image size (the
  synthetic world's ``depth/`` encoding, :mod:`occ_core.formats.image_maps`); needs a model with
  a ``render`` section (OccNeRF, or a RenderOcc-style camera model). Score it with
  ``occ-eval --metrics depth --gt <dataroot>/depth --pred <out>``.
- ``--format openocc``: OpenOcc v2 (:mod:`occ_core.formats.openocc`): ``semantics`` uint8
  (200, 200, 16) in the OpenOcc class order (16 = free; Occ3D ``others``, which has no OpenOcc
  class, is written as free and counted in the summary line) and ``flow`` float32
  (200, 200, 16, 2), the model's (vx, vy) in m/s in base_link. Needs a model with a flow head
  (``flow: true``, e.g. ``config/models/fusion_flow.yaml``); otherwise exit status 2.

``--fuse``: each scene's keyframes go, in order, through a rolling semantic map in ``odom``
(:mod:`occ_core.mapping`; ego motion from the dataset's ego poses, the map cleared between
scenes) and each keyframe's file holds the map's posterior cropped to its ego grid, in the
same format, so ``occ-eval`` scores the fused predictions against the per-frame ones.
``--map-config`` names a YAML of :class:`occ_core.mapping.MapConfig` fields (default: its
defaults). With ``--fuse`` a scene is skipped only when all its files exist (the map needs
every keyframe), else the whole scene is redone.

    occ-predict --config config/models/fusion.yaml --checkpoint config/models/fusion_demo.pt \
                --dataroot data/synthetic --split val --out runs/fused --fuse

Tokens whose file already exists are skipped, so an interrupted run continues where it stopped
(``--overwrite`` redoes them).

Temporal models (a ``temporal`` section, :mod:`occ_core.models.temporal`) run each scene in
keyframe order with their state, reset at the start of every scene (and wherever the reset rule
says, from the stamps and ego poses of the keyframes), exactly as the node runs a stream. A scene
with any prediction missing is therefore predicted from its first keyframe again (the files that
exist are left as they are unless ``--overwrite``); the summary line counts the resets by reason. Sample tokens come from the dataroot's tables and are checked as
single file names before anything is predicted (:func:`occ_core.paths.safe_component`): a token
such as ``../x`` stops the run instead of writing outside ``--out``.

Exit status 2, with one line naming the argument, file or table field: bad arguments; a missing
or wrong-kind ``--config``, ``--checkpoint`` or ``--dataroot``; an ``--out`` that cannot be
written (checked before the model is loaded); an unknown ``--device`` or CUDA on a CPU torch; a
split that is unknown or holds no scenes; names in the tables that would leave their folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from occ_core.classes import OCC3D_INDEX, OCC3D_NUM_CLASSES, OPENOCC_FREE
from occ_core.cli import check_device, check_input_file, check_output_dir, run_cli
from occ_core.errors import OccDataError
from occ_core.formats import occ3d, openocc
from occ_core.formats.convert import occ3d_to_openocc
from occ_core.frame import OccupancyPrediction

FORMATS: tuple[str, ...] = ("occ3d", "openocc", "depth")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occ-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model config, config/models/*.yaml")
    p.add_argument("--checkpoint", help="model.pt or checkpoints/latest.pt from occ-train (omit: seeded random init)")
    p.add_argument("--dataroot", required=True, help="nuScenes-format dataroot")
    p.add_argument("--split", default="val", help="train or val (default val)")
    p.add_argument("--out", required=True, type=Path, help="folder for <sample_token>.npz")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="occ3d",
                   help="occ3d (default): Occ3D semantics; openocc: OpenOcc v2 semantics + flow (needs a flow model)")
    p.add_argument("--fuse", action="store_true",
                   help="fuse each scene's keyframes in order in a rolling map (odom) and write the fused grids")
    p.add_argument("--map-config", help="with --fuse: YAML of occ_core.mapping.MapConfig fields (default: defaults)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="rewrite predictions that already exist")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def check_format(fmt: str, cfg, config_path: str) -> None:
    """Raise OccDataError when the model of ``config_path`` cannot write ``fmt`` predictions."""
    if fmt == "depth":
        if cfg.render is None:
            raise OccDataError(f"--format depth renders depth from the model's occupancy field and needs a model with "
                               f"a 'render' section, but {config_path} has none; use e.g. config/models/occnerf.yaml")
        return
    if fmt != "openocc":
        return
    if not cfg.flow:
        raise OccDataError(f"--format openocc needs a model with a flow head, but {config_path} has none "
                           f"(flow: false); use a flow config such as config/models/fusion_flow.yaml")
    if cfg.num_classes != OCC3D_NUM_CLASSES:
        raise OccDataError(f"--format openocc: {config_path} predicts {cfg.num_classes} classes, expected the "
                           f"{OCC3D_NUM_CLASSES} Occ3D classes that map onto OpenOcc v2")


def write_openocc(path: Path, pred: OccupancyPrediction) -> int:
    """Write one OpenOcc v2 prediction; returns how many voxels were Occ3D ``others`` (written as free).

    Args:
        pred: labels (X, Y, Z) uint8 Occ3D, flow (X, Y, Z, 2) float32 m/s.
    """
    others = int(np.count_nonzero(pred.labels == OCC3D_INDEX["others"]))
    sem = occ3d_to_openocc(pred.labels, others_to=OPENOCC_FREE, name=str(path))
    openocc.write(path, openocc.OpenOccSample(sem, pred.flow))
    return others


def _map_config(args):
    """The MapConfig of ``--map-config`` (None: defaults); refuses --map-config without --fuse."""
    if args.map_config is None:
        return None
    if not args.fuse:
        raise OccDataError("--map-config: only used with --fuse")
    from occ_core.fileio import read_yaml
    from occ_core.mapping import MapConfig

    check_input_file(args.map_config, "--map-config")
    return MapConfig.from_dict(read_yaml(args.map_config, "--map-config"), where=f"--map-config {args.map_config}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``occ-predict``; returns the exit status (0 ok, 2 bad input: one line)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse printed usage and the error (or --help)
        return int(e.code or 0)
    return run_cli("occ-predict", lambda: _run(args))


def _run(args) -> int:
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset, check_dataroot, scene_splits
    from occ_core.models.config import load_config
    from occ_core.models.predictor import load_predictor

    # every input and the output, before the model is built and any frame is read
    check_input_file(args.config, "--config")
    if args.checkpoint is not None:
        check_input_file(args.checkpoint, "--checkpoint")
    check_dataroot(args.dataroot)
    device = check_device(args.device)
    splits = scene_splits(args.dataroot)
    if args.split not in splits:
        raise OccDataError(f"--split: {args.split!r} is not one of {sorted(splits)}")
    if not splits[args.split]:
        raise OccDataError(f"--split: the {args.split} split of {args.dataroot} holds no scenes, so there is "
                           f"nothing to predict")
    check_format(args.fmt, load_config(args.config), args.config)
    map_cfg = _map_config(args)
    check_output_dir(args.out, "--out")  # the last check: it creates the folder
    predictor = load_predictor(args.config, args.checkpoint, device)
    cfg = predictor.cfg
    sweeps = cfg.lidar.max_sweeps if cfg.lidar is not None else 1
    ds = NuScenesOccDataset(args.dataroot, splits[args.split], cfg.grid_spec, sweeps, image_hw=cfg.image_hw)
    written = others = 0
    if args.fmt == "depth":
        if args.fuse:
            raise OccDataError("--fuse: fuses occupancy grids through the map; it does not apply to --format depth")
        return _predict_depth(args, predictor, ds)
    temporal = predictor.state is not None
    fuser = None
    if args.fuse:
        from occ_core.mapping.fuse import SceneFuser

        fuser = SceneFuser(cfg.grid_spec, map_cfg)
    # temporal models and the map carry state along a scene: a scene with a missing keyframe runs
    # again from its first one (files that exist are left alone)
    sequential = temporal or fuser is not None
    todo = {scene for scene, token in ds.samples
            if args.overwrite or not occ3d.prediction_path(args.out, token).exists()}
    prev_scene = None
    for scene, token in tqdm(ds.samples, desc=f"predict {args.split}" + (" (fused)" if args.fuse else ""),
                             disable=args.no_progress):
        path = occ3d.prediction_path(args.out, token)
        exists = path.exists() and not args.overwrite
        if temporal and scene != prev_scene:
            predictor.reset()  # a new scene is a new sequence
        prev_scene = scene
        if exists and not (sequential and scene in todo):
            continue
        frame = ds.load_frame(token)
        pred = predictor.predict(frame)
        if fuser is not None:
            fused = fuser.step(scene, pred, frame, ds.ego_pose(token))
            pred = OccupancyPrediction(fused.labels, pred.scores, pred.flow)
        if exists:  # run only to carry the state to the missing keyframes
            continue
        if args.fmt == "openocc":
            others += write_openocc(path, pred)
        else:
            occ3d.write_prediction(path, pred.labels)
        written += 1
    note = f" ({others} voxels of Occ3D 'others' written as OpenOcc free)" if others else ""
    if temporal:
        st = predictor.state
        resets = ", ".join(f"{k} {v}" for k, v in st.resets.items() if v)
        note += f"; temporal state carried over {st.carried} frames, reset on {resets or 'none'}"
    print(f"occ-predict: {written} {args.fmt} predictions written, {len(ds.samples) - written} kept, "
          f"in {args.out}{note}")
    return 0


def _predict_depth(args, predictor, ds) -> int:
    """``--format depth``: one PNG per camera image; a keyframe whose PNGs all exist is skipped."""
    import torch

    from occ_core.formats.image_maps import map_path, write_depth_png
    from occ_core.training.render_eval import predict_depth, source_cameras

    written = kept = 0
    for _scene, token in tqdm(ds.samples, desc=f"predict depth {args.split}", disable=args.no_progress):
        sample = ds.nusc.get("sample", token)
        cams = [c for c in ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                            "CAM_BACK_RIGHT") if c in sample["data"]]
        paths = [map_path(args.out, cam, fn) for cam, fn, _, _ in source_cameras(ds.nusc, token, cams)]
        if not args.overwrite and paths and all(p.exists() for p in paths):
            kept += len(paths)
            continue
        with torch.no_grad():
            for cam, fn, depth in predict_depth(predictor.model, predictor.cfg, ds.load_frame(token), ds.nusc, token,
                                                predictor.device):
                path = map_path(args.out, cam, fn)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_depth_png(path, depth)
                written += 1
    print(f"occ-predict: {written} depth maps written, {kept} kept, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
