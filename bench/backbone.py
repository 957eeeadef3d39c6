"""Forward time and parameter counts of a camera model config, split into its parts (default:
the research-scale ``config/models/camera_r50.yaml``: ResNet-50 at 256 x 704, 200 x 200 BEV).

Run from the repository root::

    .venv/bin/python bench/backbone.py [--config config/models/camera_r50.yaml] [--cameras 6]
                                       [--repeats 3] [--threads 2] [--device cpu]

Inputs are random normalised images (batch 1, ``--cameras`` of the nuScenes rig, intrinsics
resized and cropped to the config's image size as the data pipeline does); the model is in eval mode under
``torch.no_grad``. Each timing is ``--repeats`` calls after one untimed warm-up: the median and
the minimum are printed (other processes on a shared machine inflate the wall time; the load
average is printed). "image encoder" is backbone + FPN on all cameras, "full forward" the whole
network (image encoder, LSS lifting and splatting, BEV encoder, head).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from statistics import median

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.transforms import resize_crop_matrix  # noqa: E402
from occ_core.models.config import load_config  # noqa: E402
from occ_core.models.occnet import OccInputs, build_model  # noqa: E402
from occ_core.rig import load_rig  # noqa: E402
from _machine import cpu_model, load_average, timed  # noqa: E402  (bench/ is on sys.path when run as a script)

DEFAULT = Path(__file__).resolve().parent.parent / "config" / "models" / "camera_r50.yaml"



def rig_inputs(image_hw: tuple[int, int], cameras: int, device: torch.device) -> OccInputs:
    """Random images of the nuScenes rig's first ``cameras`` cameras with their K resized and
    cropped to (H, W) as the data pipeline does (:func:`occ_core.data.transforms.resize_crop_matrix`)."""
    cams = load_rig().cameras[:cameras]
    K = [resize_crop_matrix((c.height, c.width), image_hw)[0] @ c.K for c in cams]
    g = torch.Generator().manual_seed(0)
    return OccInputs(torch.randn(1, len(cams), 3, *image_hw, generator=g),
                     torch.tensor(np.stack(K), dtype=torch.float32)[None],
                     torch.tensor(np.stack([c.T_base_from_cam for c in cams]), dtype=torch.float32)[None],
                     None).to(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT)
    p.add_argument("--cameras", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = load_config(args.config)
    if cfg.lss is None:
        p.error(f"{args.config}: not a camera model (no lss section)")
    model = build_model(cfg).eval().to(dev)
    x = rig_inputs(cfg.image_hw, args.cameras, dev)
    parts = {"backbone": model.image_encoder.backbone, "FPN neck": model.image_encoder.neck, "LSS depth net": model.lss,
             "BEV encoder": model.encoder, "head": model.head}
    with torch.no_grad():
        enc = timed(lambda: model.image_encoder(x.images.flatten(0, 1)), args.repeats, dev)
        full = timed(lambda: model(x), args.repeats, dev)
    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}, load average {load_average()}")
    print(f"{args.config.name}: batch 1 x {args.cameras} cameras at {cfg.image_hw[0]} x {cfg.image_hw[1]}, feature "
          f"grid {'x'.join(map(str, cfg.feature_grid.dims))}, {args.repeats} timed calls after 1 warm-up\n")
    print("| part | parameters |\n|---|--:|")
    for name, m in parts.items():
        print(f"| {name} | {sum(q.numel() for q in m.parameters()):,} |")
    print(f"| total | {sum(q.numel() for q in model.parameters()):,} |\n")
    print("| call | median s | min s |\n|---|--:|--:|")
    print(f"| image encoder (backbone + FPN) | {median(enc):.2f} | {min(enc):.2f} |")
    print(f"| full forward | {median(full):.2f} | {min(full):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
