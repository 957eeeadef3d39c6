"""``docs/fused_map.png``: one keyframe's per-frame prediction beside its fused prediction (the
rolling map cropped to the ego grid), the ground truth, and the costmap of the map at that time.

Reads the per-frame and fused predictions ``bench/fusion.py`` wrote (``<work>/per-frame``,
``<work>/fused``), runs the scene's keyframes through a map once more for the costmap (the
frames' visibility cast through the per-frame predictions, as ``occ-predict --fuse`` does), and
writes a PNG (quantised to a small palette to stay well under 300 KB).

    PYTHONPATH=. .venv/bin/python bench/fusion_figure.py --dataroot data/synthetic --work /tmp/fuse-demo \\
        --scene scene-0005 --keyframe 7 --out docs/fused_map.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.nuscenes_dataset import NuScenesOccDataset  # noqa: E402
from occ_core.formats import occ3d  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from occ_core.mapping import MapConfig, RollingSemanticMap  # noqa: E402
from occ_core.mapping.costmap import cost_table, map_costmap  # noqa: E402
from occ_core.mapping.visibility import frame_visibility  # noqa: E402
from occ_core.viz.render import Camera3D, render_3d  # noqa: E402


def titled(img: np.ndarray, title: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, title, (14, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
    return out


def costmap_image(data: np.ndarray, size: int) -> np.ndarray:
    """(H, W) int8 costmap (rows y, columns x) -> BGR drawn as render_bev draws grids: odom x up,
    y to the left; free white, lethal dark, unknown grey."""
    img = np.full(data.shape + (3,), 255, np.uint8)
    img[data == -1] = (200, 200, 200)
    img[data == 100] = (40, 40, 40)
    img[(data > 0) & (data < 100)] = (0, 140, 255)
    img = np.ascontiguousarray(np.transpose(img, (1, 0, 2))[::-1, ::-1])
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--scene", default="scene-0005")
    p.add_argument("--keyframe", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path("docs/fused_map.png"))
    a = p.parse_args()
    ds = NuScenesOccDataset(a.dataroot, [a.scene], OCC3D, image_hw=(96, 176))
    m = RollingSemanticMap(MapConfig(), OCC3D)
    T0 = None
    for i, (scene, token) in enumerate(ds.samples[:a.keyframe + 1]):
        pf = occ3d.read_prediction(occ3d.prediction_path(a.work / "per-frame", token))
        pose = ds.ego_pose(token)
        T0 = np.linalg.inv(pose) if T0 is None else T0
        seen = frame_visibility(pf, ds.load_frame(token), OCC3D)
        m.update(pf, np.full(OCC3D.dims, 0.9, np.float32), seen, T0 @ pose)  # scores: not stored by occ-predict
    scene, token = ds.samples[a.keyframe]
    fused = occ3d.read_prediction(occ3d.prediction_path(a.work / "fused", token))
    gt = ds.load_targets(scene, token).semantics
    cam = Camera3D(width=760, height=520, distance=80.0)
    panels = [titled(render_3d(pf, OCC3D, cam), "per-frame prediction"),
              titled(render_3d(fused, OCC3D, cam), "fused (rolling map, odom)"),
              titled(render_3d(gt, OCC3D, cam), "ground truth")]
    cm = map_costmap(m, T0 @ ds.ego_pose(token), 0.1, 2.0, cost_table())
    cmi = titled(costmap_image(cm.data, 520), "costmap (free / lethal / unknown)")
    top = np.concatenate(panels[:2], axis=1)
    bottom = np.concatenate([panels[2], np.full((520, 760 - 520, 3), 255, np.uint8), cmi], axis=1)
    img = np.concatenate([top, bottom], axis=0)
    img = cv2.resize(img, (img.shape[1] * 3 // 4, img.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    import io

    from PIL import Image

    from occ_core.fileio import atomic_write_bytes

    pal = Image.fromarray(img[:, :, ::-1]).quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", optimize=True)
    buf = buf.getvalue()
    atomic_write_bytes(a.out, buf)
    print(f"{a.out}: {len(buf) / 1024:.0f} KB, keyframe {a.keyframe} of {scene} ({token})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
