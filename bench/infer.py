"""Model inference time and accuracy per engine, side by side in one run: eager torch,
``torch.compile``, ONNX Runtime (fp32), ONNX Runtime with int8 dynamic quantization and with fp16
weights, and for LSS models the fixed-rig graph (precomputed geometry).

Run from the repository root::

    .venv/bin/python bench/infer.py [--config config/models/fusion.yaml] [--checkpoint config/models/fusion_demo.pt]
                                    [--threads 2] [--repeats 20] [--frames 6] [--dataroot DIR] [--no-compile]

Threads are pinned (``--threads`` for torch's intra-op pool and every ONNX Runtime session; one
inter-op thread). Each engine runs ``predictor.predict(frame)`` (network-input preparation,
LiDAR encoder, network, softmax/argmax: what the node calls) on held-out keyframes: ``--frames``
keyframes of a world generated with seed 7 (no shipped model saw it; ``--dataroot`` takes an
existing one, its val split or else every scene). Time: median (p50) over ``--repeats``
calls cycling over the frames after one warm-up per frame, and the minimum (the least disturbed
call on a shared machine) and the process's CPU time per call (both threads summed). Accuracy: Occ3D mIoU and IoU inside
the camera mask over those frames, and the share of voxels whose label equals eager torch's.

``torch.compile``: the whole model is compiled (the spconv LiDAR encoder falls back to eager at a
graph break); its compile time is printed. ``int8``: ``onnxruntime.quantization.quantize_dynamic``
(weights int8, activations quantized per call). ``fp16``: weights and activations converted to
float16 with ``keep_io_types`` (``onnxruntime.transformers.float16``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model, load_average  # noqa: E402
from occ_core.data.nuscenes_dataset import NuScenesOccDataset, label_path, scene_splits  # noqa: E402
from occ_core.eval.occupancy import occ3d_miou  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402


def held_out_frames(dataroot: Path | None, count: int, max_sweeps: int, work: Path):
    """[(SensorFrame, gt labels (X, Y, Z) uint8, camera mask (X, Y, Z) bool)] of ``count`` keyframes."""
    if dataroot is None:
        from occ_core.data.synthetic import SynthConfig, generate

        dataroot = work / "unseen"
        generate(SynthConfig(scenes=1, samples_per_scene=count, seed=7, sweeps=max_sweeps > 1), dataroot, progress=False)
    splits = scene_splits(dataroot)
    scenes = splits["val"] or splits["train"]
    ds = NuScenesOccDataset(dataroot, scenes, OCC3D, max_sweeps=max_sweeps)
    out = []
    for scene, tok in ds.samples[:count]:
        gt = np.load(label_path(dataroot, scene, tok))
        out.append((ds.load_frame(tok), gt["semantics"], gt["mask_camera"].astype(bool)))
    return out


def measure(predictor, frames, repeats: int):
    """(p50 s, min s, p50 CPU s, predictions per frame); CPU: this process's CPU time per call, all
    threads summed (less sensitive to other processes than wall time)."""
    preds = [predictor.predict(f) for f, _, _ in frames]  # warm-up and the accuracy predictions
    ts, cpu = [], []
    for i in range(repeats):
        f = frames[i % len(frames)][0]
        t, c = time.perf_counter(), time.process_time()
        predictor.predict(f)
        ts.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(ts)), float(np.min(ts)), float(np.median(cpu)), preds


def accuracy(preds, frames, eager_preds) -> tuple[float, float, float]:
    """(mIoU %, IoU %, label agreement with eager %) over the frames, camera mask."""
    m = occ3d_miou("camera")
    for p, (_, gt, mask) in zip(preds, frames):
        m.update(gt, p.labels, mask)
    agree = np.mean([(p.labels == e.labels).mean() for p, e in zip(preds, eager_preds)])
    return 100 * m.miou(), 100 * m.geometric_iou(), 100 * float(agree)


class CompiledPredictor:
    """An OccupancyPredictor whose model is ``torch.compile``d."""

    def __init__(self, inner):
        self.inner = inner
        t = time.perf_counter()
        inner.model = torch.compile(inner.model)
        self.wrap_s = time.perf_counter() - t

    def predict(self, frame):
        return self.inner.predict(frame)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "config/models/fusion.yaml")
    p.add_argument("--checkpoint", type=Path, default=REPO / "config/models/fusion_demo.pt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--dataroot", type=Path, default=None)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default: a temporary folder)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from occ_core.deploy.export import export_model, file_sha256
    from occ_core.deploy.runtime import OnnxPredictor, cached_export
    from occ_core.models.predictor import load_predictor

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = args.cache_dir or work / "engines"
        eager = load_predictor(args.config, args.checkpoint)
        cfg = eager.cfg
        sweeps = cfg.lidar.max_sweeps if cfg.lidar is not None else 1
        frames = held_out_frames(args.dataroot, args.frames, 1 if args.dataroot is None else sweeps, work)
        rows = []
        p50, pmin, pcpu, eager_preds = measure(eager, frames, args.repeats)
        rows.append(("torch eager", p50, pmin, pcpu, accuracy(eager_preds, frames, eager_preds), ""))

        lidar = getattr(eager.model, "lidar", None)
        t = time.perf_counter()
        cached = cached_export(args.config, args.checkpoint, cache, len(frames[0][0].camera_names), model=eager.model)
        export_s = time.perf_counter() - t
        variants = [("onnxruntime fp32", cached.path, f"export {export_s:.0f} s")]
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = work / "int8.onnx"
        quantize_dynamic(str(cached.path), str(int8), weight_type=QuantType.QInt8)
        variants.append(("onnxruntime int8 dynamic", int8, "quantize_dynamic"))
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        fp16 = work / "fp16.onnx"
        # the LSS scatter-add (ScatterElements, reduction "add") is kept in float32: float16 sums of
        # hundreds of frustum points per voxel would lose the small ones
        m16 = convert_float_to_float16(onnx.load(str(cached.path)), keep_io_types=True,
                                       op_block_list=["ScatterElements", "ArgMax"])
        onnx.save(m16, str(fp16))
        variants.append(("onnxruntime fp16", fp16, "scatter-add kept fp32"))
        if cfg.uses_camera and cfg.name != "bevformer":
            from occ_core.rig import NUSCENES_RIG_PATH

            fixed = work / "fixed.onnx"
            export_model(eager.model, cfg, fixed, cameras=len(frames[0][0].camera_names),
                         checkpoint_sha256=file_sha256(args.checkpoint) if args.checkpoint else "",
                         fixed_rig=NUSCENES_RIG_PATH)
            variants.append(("onnxruntime fp32, fixed rig", fixed, "geometry precomputed (nuScenes rig)"))
        for name, path, note in variants:
            try:
                pred = OnnxPredictor(path, cfg, lidar, ["CPUExecutionProvider"], threads=args.threads)
                p50, pmin, pcpu, preds = measure(pred, frames, args.repeats)
                rows.append((name, p50, pmin, pcpu, accuracy(preds, frames, eager_preds), note))
            except Exception as e:  # noqa: BLE001 - a variant ORT cannot run is reported, not fatal
                rows.append((name, float("nan"), float("nan"), float("nan"), (float("nan"),) * 3, f"fails: {type(e).__name__}: {str(e)[:80]}"))

        if not args.no_compile:
            comp = load_predictor(args.config, args.checkpoint)
            try:
                c = CompiledPredictor(comp)
                t = time.perf_counter()
                c.predict(frames[0][0])
                first = time.perf_counter() - t
                p50, pmin, pcpu, preds = measure(c, frames, args.repeats)
                rows.append(("torch.compile (inductor)", p50, pmin, pcpu, accuracy(preds, frames, eager_preds),
                             f"first call {first:.0f} s"))
            except Exception as e:  # noqa: BLE001
                rows.append(("torch.compile (inductor)", float("nan"), float("nan"), float("nan"), (float("nan"),) * 3,
                             f"fails: {type(e).__name__}: {str(e)[:80]}"))

    print(f"# bench/infer.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, "
          f"{os.cpu_count()} CPUs, load average {load_average()}, threads {args.threads}, torch {torch.__version__}")
    import onnxruntime

    print(f"# model {args.config.name} + {args.checkpoint.name if args.checkpoint else 'random init'}; "
          f"{len(frames)} held-out keyframes ({'seed-7 world' if args.dataroot is None else args.dataroot}), "
          f"{args.repeats} timed calls; onnxruntime {onnxruntime.__version__}")
    print("| engine | p50 ms | min ms | CPU ms (p50) | mIoU % | IoU % | labels = eager % | note |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, p50, pmin, pcpu, (miou, iou, agree), note in rows:
        print(f"| {name} | {p50 * 1e3:.1f} | {pmin * 1e3:.1f} | {pcpu * 1e3:.1f} | {miou:.2f} | {iou:.2f} | {agree:.3f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
