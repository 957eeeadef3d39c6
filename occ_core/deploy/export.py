"""``occ-export``: a trained occupancy model -> one ONNX file (see :mod:`occ_core.deploy.graph`).

::

    occ-export --config config/models/camera.yaml --checkpoint model.pt --out camera.onnx
               [--opset 18] [--image-size 96x176] [--cameras 6] [--fixed-rig config/rigs/nuscenes.yaml]

Graph inputs (B = 1): ``images`` (1, N, 3, H, W) normalised network-input images,
``intrinsics`` (1, N, 3, 3) and ``T_base_from_cam`` (1, N, 4, 4) (camera optical -> base_link), so
one file serves every rig with N cameras; ``lidar_features`` (1, Cl, X', Y', Z') for LiDAR and
fusion models (the spconv encoder stays in torch: :data:`~occ_core.deploy.graph.NOT_EXPORTABLE`).
``--fixed-rig`` bakes the LSS frustum -> voxel indices of one rig file's cameras into the file
(no geometry inputs). Outputs: ``logits`` (1, K, X, Y, Z) in base_link, ``flow`` (1, X, Y, Z, 2)
for flow models.

The file's metadata (``metadata_props``) records the config, the checkpoint's SHA-256, image size,
camera count, opset and the inputs, which :mod:`occ_core.deploy.runtime` reads back.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from occ_core.cli import check_input_file, check_output_file, positive_int, run_cli
from occ_core.deploy.graph import NOT_EXPORTABLE, DeployGraph, ExportError
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_path
from occ_core.models.config import ModelConfig, config_to_dict, load_config

PROG = "occ-export"
#: Default ONNX opset (GridSample needs >= 16; ScatterElements with reduction "add" >= 16).
DEFAULT_OPSET = 18
MIN_OPSET = 16
#: Bumped when the exported graph changes for the same model, so that cached files are rebuilt.
GRAPH_VERSION = 2  # 2: the LSS splat as ScatterElements (ScatterND lost updates in ONNX Runtime)


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file holds (also stored in its ``metadata_props`` as JSON ``occ_export``).

    Attributes:
        config: the model config as a dict (:func:`~occ_core.models.config.config_to_dict`).
        checkpoint_sha256: SHA-256 of the checkpoint file ("" for seeded random-init weights).
        image_hw: (H, W) network-input size the file takes.
        cameras: N, camera count of the ``images`` / geometry inputs (0 for LiDAR-only models).
        opset: ONNX opset.
        inputs, outputs: graph input / output names.
        fixed_rig: rig file whose geometry is baked in, or "" (geometry inputs).
        graph_version: :data:`GRAPH_VERSION` at export.
    """

    config: dict
    checkpoint_sha256: str
    image_hw: tuple[int, int]
    cameras: int
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fixed_rig: str = ""
    graph_version: int = GRAPH_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str, where: str) -> "ExportInfo":
        try:
            d = json.loads(text)
            d["image_hw"] = tuple(d["image_hw"])
            d["inputs"], d["outputs"] = tuple(d["inputs"]), tuple(d["outputs"])
            return ExportInfo(**d)
        except (ValueError, TypeError, KeyError) as e:
            raise OccDataError(f"{where}: metadata 'occ_export' is not an occ-export record ({e})") from None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_image_size(text: str) -> tuple[int, int]:
    """argparse type: ``HxW`` (e.g. ``96x176``) -> (H, W), both > 0."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m or int(m[1]) <= 0 or int(m[2]) <= 0:
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers (e.g. 96x176), got {text!r}")
    return int(m[1]), int(m[2])


def with_image_size(cfg: ModelConfig, image_hw: tuple[int, int] | None) -> ModelConfig:
    """``cfg`` with ``image.size`` replaced (None: unchanged)."""
    if image_hw is None or not cfg.uses_camera:
        return cfg
    return dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=tuple(image_hw)))


def rig_geometry(rig_file: str | Path, cameras: int, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, N, 3, 3) K scaled and cropped to ``image_hw`` as the data pipeline does, and (1, N, 4, 4)
    T_base_from_cam of the first ``cameras`` cameras of a rig file."""
    from occ_core.data.transforms import resize_crop_matrix
    from occ_core.rig import load_rig

    rig = load_rig(rig_file)
    if len(rig.cameras) < cameras:
        raise OccDataError(f"{rig_file}: the rig has {len(rig.cameras)} cameras, the export asks for {cameras}")
    cams = rig.cameras[:cameras]
    K = [resize_crop_matrix((c.height, c.width), image_hw)[0] @ c.K for c in cams]
    return (torch.tensor(np.stack(K), dtype=torch.float32)[None],
            torch.tensor(np.stack([c.T_base_from_cam for c in cams]), dtype=torch.float32)[None])


def example_inputs(graph: DeployGraph, cfg: ModelConfig, cameras: int, rig_file: str | Path | None = None) -> tuple:
    """Tensors of the graph's input shapes (geometry of ``rig_file`` or the nuScenes rig)."""
    from occ_core.rig import NUSCENES_RIG_PATH

    out = []
    if graph.uses_camera:
        H, W = cfg.image.size
        K, T = rig_geometry(rig_file or NUSCENES_RIG_PATH, cameras, (H, W))
        out.append(torch.zeros(1, cameras, 3, H, W))
        if graph.fixed_ranks is None:
            out += [K, T]
    if graph.uses_lidar:
        X, Y, Z = cfg.feature_grid.dims
        out.append(torch.zeros(1, graph.model.lidar.channels, X, Y, Z))
    return tuple(out)


def export_model(model: torch.nn.Module, cfg: ModelConfig, out: str | Path, *, opset: int = DEFAULT_OPSET,
                 cameras: int = 6, checkpoint_sha256: str = "", fixed_rig: str | Path | None = None) -> ExportInfo:
    """Export a built (trained) model to ONNX at ``out``, written atomically.

    Args:
        model: the model of ``cfg`` (weights loaded).
        cfg: its config; ``cfg.image.size`` is the exported input size.
        out: the ``.onnx`` file.
        opset: ONNX opset (>= :data:`MIN_OPSET`).
        cameras: N of the camera inputs.
        checkpoint_sha256: recorded in the metadata.
        fixed_rig: a rig file: bake its geometry into an LSS graph (no geometry inputs).

    Raises:
        ExportError: a model part that cannot be exported (named), a bad opset or camera count.
        BackendUnavailableError: the ``onnx`` / ``onnxscript`` packages are missing.
    """
    from occ_core.deploy.runtime import require_module

    require_module("onnx", "export")
    require_module("onnxscript", "export")
    if opset < MIN_OPSET:
        raise ExportError(f"--opset: expected >= {MIN_OPSET} (GridSample, ScatterElements with reduction='add'), got {opset}")
    if cfg.uses_camera and cameras < 1:
        raise ExportError(f"--cameras: a camera model needs >= 1 camera, got {cameras}")
    if not cfg.uses_camera:
        cameras = 0
    model = model.eval()
    ranks = None
    if fixed_rig is not None:
        if cfg.name == "bevformer" or not cfg.uses_camera:
            raise ExportError(f"--fixed-rig: a precomputed-geometry graph exists for LSS models (camera, fusion) only, "
                              f"not {cfg.name!r}")
        probe = DeployGraph(model, cfg)
        K, T = rig_geometry(fixed_rig, cameras, cfg.image.size)
        with torch.no_grad():
            ranks = probe.lss_ranks(K, T, exact=True)
    graph = DeployGraph(model, cfg, fixed_ranks=ranks)
    args = example_inputs(graph, cfg, cameras, fixed_rig)
    info = ExportInfo(config_to_dict(cfg), checkpoint_sha256, tuple(cfg.image.size) if cfg.uses_camera else (0, 0),
                      cameras, opset, tuple(graph.input_names), tuple(graph.output_names),
                      str(fixed_rig) if fixed_rig is not None else "")
    import onnx

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, args, None, input_names=graph.input_names, output_names=graph.output_names,
                                    opset_version=opset, dynamo=True, external_data=False, verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "occ_export", info.to_json()
    onnx.checker.check_model(proto)
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    return info


def read_export_info(path: str | Path) -> ExportInfo:
    """The :class:`ExportInfo` stored in an exported file (without loading its weights)."""
    from occ_core.deploy.runtime import require_module

    require_module("onnx", "onnxruntime")
    import onnx

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends on damaged files
        raise OccDataError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if "occ_export" not in meta:
        raise OccDataError(f"{path}: no 'occ_export' metadata: not written by occ-export")
    return ExportInfo.from_json(meta["occ_export"], str(path))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="model config YAML (config/models/*.yaml)")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint (absent: seeded random-init weights)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--image-size", type=parse_image_size, default=None,
                   help="network-input HxW (default: the config's image.size)")
    p.add_argument("--cameras", type=positive_int, default=6, help="camera count N of the inputs (default 6)")
    p.add_argument("--fixed-rig", default=None,
                   help="rig file whose camera geometry is baked in (LSS models; no geometry inputs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> int:
        from occ_core.models.predictor import load_predictor

        config = check_input_file(args.config, "--config")
        ckpt = check_input_file(args.checkpoint, "--checkpoint") if args.checkpoint else None
        rig = check_input_file(args.fixed_rig, "--fixed-rig") if args.fixed_rig else None
        out = check_output_file(args.out, "--out")
        cfg = with_image_size(load_config(config), args.image_size)
        predictor = load_predictor(config, ckpt)
        info = export_model(predictor.model, cfg, out, opset=args.opset, cameras=args.cameras,
                            checkpoint_sha256=file_sha256(ckpt) if ckpt else "", fixed_rig=rig)
        print(f"{PROG}: wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {info.opset}); inputs "
              f"{', '.join(info.inputs)}; outputs {', '.join(info.outputs)}")
        if cfg.lidar is not None:
            print(f"{PROG}: not exported: {NOT_EXPORTABLE['lidar']}")
        return 0

    return run_cli(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
