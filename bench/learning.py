"""The learning benchmark (issue 16): train configs on one synthetic world, score them on another.

Run from the repository root::

    .venv/bin/python bench/learning.py --configs fusion,lidar --steps 600 --seeds 0,1,2 [--threads 2]

1. The two preset worlds (:mod:`occ_core.data.synthetic.presets`) are generated once into
   ``--data`` (default ``data/bench``: ``train/`` = ``bench-train``, 24 scenes x 20 keyframes,
   seed 100; ``heldout/`` = ``bench-heldout``, 4 scenes x 20 keyframes, seed 900) and reused.
2. Every config is trained ``--steps`` steps once per seed (``seed`` and ``train.seed`` set to it: initial
   weights, data order, augmentation) with ``occ-train`` in a subprocess pinned to ``--threads``;
   the CPU minutes are the child's user + system time.
3. Each model predicts every held-out keyframe (``occ-predict``) and ``occ-eval`` scores it
   inside the camera mask: per-class IoU, mIoU, geometric IoU, RayIoU. Flow models (``flow:
   true``) also predict OpenOcc v2 and are scored with mAVE, beside the same predictions with
   the flow zeroed (zero flow is the floor a flow head must beat). The per-voxel prior fit
   on the training world's labels is scored the same way.
4. A table of mean +- std over the seeds (sample std; n = seeds), then per-class IoU means, is
   printed and written with every run's numbers to ``<out>/learning.json``.

``--variant NAME=KEY:VALUE[,KEY:VALUE...]`` adds a row that trains a config with some fields
changed (a recipe ablation), e.g. ``--variant no_ema=train.ema_decay:0`` or
``--variant no_lovasz=loss.lovasz:0,loss.sem_scal:0``; KEY is a dotted path into the config YAML
and VALUE is parsed as YAML. Each variant runs for every config and seed, as ``<config>+<NAME>``.

A run whose ``<out>/<run>/steps<N>/seed<k>/metrics.json`` exists is not repeated when the config
it was trained with (``config.yaml`` beside it) equals today's, apart from the train fields the
command line sets (``steps``, ``val_every``, ``ckpt_every``); delete it to redo, ``--fresh``
retrains everything. The world, the steps and the seeds name the budget;
compare configs only inside one table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.classes import OCC3D_CLASSES  # noqa: E402
from occ_core.data.synthetic import generate  # noqa: E402
from occ_core.data.synthetic.presets import preset  # noqa: E402
from occ_core.eval import cli as eval_cli  # noqa: E402
from occ_core.fileio import atomic_write_text  # noqa: E402
from occ_core.formats import occ3d  # noqa: E402
from occ_core.models.prior import PerVoxelPrior  # noqa: E402
from occ_core.paths import safe_component  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "config" / "models"


def ensure_world(name: str, root: Path) -> Path:
    """The preset world ``name`` at ``root``, generated unless its tables are already there."""
    if not (root / "v1.0-mini").is_dir():
        print(f"== generating preset {name} into {root}", flush=True)
        generate(preset(name), root, progress=True)
    return root


def child_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], threads: int) -> float:
    """Run ``cmd`` to completion; the CPU seconds it used. A failure stops the benchmark."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    import os

    c0 = child_cpu_s()
    status = subprocess.run(cmd, env={**os.environ, **env}).returncode
    if status != 0:
        raise SystemExit(f"bench/learning.py: failed (exit {status}): {' '.join(cmd)}")
    return child_cpu_s() - c0


def score(pred_dir: Path, heldout: Path, out_json: Path) -> dict:
    """occ-eval of ``pred_dir`` on every held-out scene: {'mIoU', 'IoU', 'RayIoU', 'per_class'} in %."""
    scenes = sorted({e.scene for e in occ3d.list_gt(heldout / "gts")})
    status = eval_cli.main(["--gt", str(heldout / "gts"), "--pred", str(pred_dir), "--scenes", ",".join(scenes),
                            "--dataroot", str(heldout), "--version", "v1.0-mini", "--metrics", "miou,iou,rayiou",
                            "--mask", "camera", "--json", str(out_json)])
    if status != 0:
        raise SystemExit(f"bench/learning.py: occ-eval failed on {pred_dir} (exit {status})")
    doc = json.loads(out_json.read_text())
    vox, ray = doc["reports"]["voxel"], doc["reports"]["ray"]["summary"]
    per_class = {r["name"]: r["values"].get("IoU") for r in vox["rows"]}
    return {"mIoU": 100 * vox["summary"]["mIoU"], "IoU": 100 * vox["summary"]["IoU (geometric)"],
            "RayIoU": 100 * ray["RayIoU"],
            "per_class": {k: (None if v is None else 100 * v) for k, v in per_class.items()}}


def score_flow(pred_dir: Path, heldout: Path, out_json: Path) -> dict:
    """occ-eval of OpenOcc v2 predictions with flow on every held-out scene, and of the same
    predictions with the flow zeroed: {'mAVE', 'mAVE_zero_flow', 'OccScore', 'RayIoU_openocc'}."""
    from occ_core.formats import openocc

    scenes = sorted({e.scene for e in occ3d.list_gt(heldout / "gts")})

    def mave_of(pred: Path, js: Path) -> dict:
        status = eval_cli.main(["--format", "openocc", "--gt", str(heldout / "openocc_v2"), "--pred", str(pred),
                                "--scenes", ",".join(scenes), "--dataroot", str(heldout), "--version", "v1.0-mini",
                                "--metrics", "rayiou,mave", "--json", str(js), "--no-progress"])
        if status != 0:
            raise SystemExit(f"bench/learning.py: occ-eval failed on {pred} (exit {status})")
        return json.loads(js.read_text())["reports"]["ray"]["summary"]

    zero = pred_dir.with_name(pred_dir.name + "_zeroflow")
    for f in sorted(pred_dir.glob("*.npz")):  # the same semantics, no motion
        sample = openocc.read(f)
        openocc.write(zero / f.name, openocc.OpenOccSample(sample.semantics, 0 * sample.flow))
    full = mave_of(pred_dir, out_json)
    still = mave_of(zero, out_json.with_name(out_json.stem + "_zeroflow.json"))
    shutil.rmtree(zero)
    return {"mAVE": full["mAVE"], "mAVE_zero_flow": still["mAVE"], "OccScore": 100 * full["OccScore"],
            "RayIoU_openocc": 100 * full["RayIoU"]}


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``"NAME=a.b:1,c:x"`` -> ``("NAME", {"a.b": 1, "c": "x"})``; a malformed one stops the benchmark."""
    name, sep, body = text.partition("=")
    if not sep or not body:
        raise SystemExit(f"bench/learning.py: --variant {text!r}: expected NAME=KEY:VALUE[,KEY:VALUE...]")
    items, depth, start = [], 0, 0
    for i, ch in enumerate(body):  # split on the commas outside [...] / {...}
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:])
    changes: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise SystemExit(f"bench/learning.py: --variant {text!r}: {item!r} is not KEY:VALUE")
        changes[key] = yaml.safe_load(value)
    return safe_component(name, "--variant"), changes


def apply_changes(cfg: dict, changes: dict[str, object], where: str) -> None:
    """Set each dotted ``key`` of ``changes`` in the config mapping ``cfg`` (sections are created)."""
    for key, value in changes.items():
        *sections, leaf = key.split(".")
        node = cfg
        for sec in sections:
            node = node.setdefault(sec, {})
            if not isinstance(node, dict):
                raise SystemExit(f"bench/learning.py: {where}: {key!r}: {sec!r} is not a section of the config")
        node[leaf] = value


#: train fields that the command line overrides (``--steps``, ``--val-every 0``, ``--ckpt-every``),
#: and ``calibrate_threshold``, which chooses the output threshold after training
OVERRIDDEN_TRAIN_KEYS = ("steps", "val_every", "ckpt_every", "calibrate_threshold")
#: top-level fields that set the output, not the training (``occ_threshold``: the run's own is used)
OUTPUT_KEYS = ("occ_threshold",)


def same_training(stored: dict, today: dict) -> bool:
    """Whether a stored run config trains the same model as today's, ignoring the train fields
    this script overrides on the command line (a config whose ``train.steps`` default changed
    trains the same run at ``--steps N``) and the output threshold (``occ_threshold``, chosen per
    run; ``train.calibrate_threshold`` asks for it after training)."""
    def strip(c: dict) -> dict:
        c = {k: v for k, v in c.items() if k not in OUTPUT_KEYS}
        c["train"] = {k: v for k, v in (c.get("train") or {}).items() if k not in OVERRIDDEN_TRAIN_KEYS}
        return c
    return strip(stored) == strip(today)


def needs_calibration(cfg: dict, res: dict) -> bool:
    """Whether a cached run's scores predate the calibrated threshold its config now asks for."""
    return bool((cfg.get("train") or {}).get("calibrate_threshold")) and res.get("occ_threshold") is None


def train_and_score(name: str, seed: int, args, train_root: Path, heldout: Path,
                    changes: dict[str, object] | None = None) -> dict:
    """Train config ``name`` (its run name: ``name`` or ``config+variant``) for one seed and score it.

    A cached run whose config now asks for ``train.calibrate_threshold`` is calibrated on the
    training world (``python -m occ_core.training.calibrate``) and scored again, not retrained."""
    config = name.split("+")[0]
    work = args.out / name / f"steps{args.steps}" / f"seed{seed}"
    metrics = work / "metrics.json"
    cfg = yaml.safe_load((CONFIG_DIR / f"{config}.yaml").read_text())
    apply_changes(cfg, changes or {}, name)
    cfg["seed"] = seed  # the initial weights (build_model)
    cfg.setdefault("train", {})["seed"] = seed  # data order and augmentation
    cfg_path = work / "config.yaml"
    py = sys.executable
    model = work / "run" / "model.pt"
    run_cfg = work / "run" / "config.yaml"  # as trained (and with the run's occ_threshold, when chosen)
    if metrics.exists() and not args.fresh:
        if cfg_path.exists() and same_training(yaml.safe_load(cfg_path.read_text()), cfg):
            res = json.loads(metrics.read_text())
            if not needs_calibration(cfg, res):
                print(f"== {name} seed {seed}: reusing {metrics}", flush=True)
                return res
            print(f"== {name} seed {seed}: calibrating the occupancy threshold of {model} on {train_root}", flush=True)
            run([py, "-m", "occ_core.training.calibrate", "--config", str(run_cfg), "--checkpoint", str(model),
                 "--dataroot", str(train_root), "--out", str(run_cfg), "--threads", str(args.threads)], args.threads)
            res.update(predict_and_score(name, seed, cfg, work, heldout, args))
            atomic_write_text(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
            atomic_write_text(metrics, json.dumps(res, indent=1))
            return res
        print(f"== {name} seed {seed}: {CONFIG_DIR / (config + '.yaml')} changed since {metrics}; retraining", flush=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_text(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
    print(f"== {name} seed {seed}: training {args.steps} steps on {train_root}", flush=True)
    t0 = time.perf_counter()
    cpu_train = run([py, "-m", "occ_core.training.train", "--config", str(cfg_path), "--dataroot", str(train_root),
                     "--work-dir", str(work / "run"), "--steps", str(args.steps), "--val-every", "0",
                     "--ckpt-every", str(max(50, args.steps // 4)), "--threads", str(args.threads), "--no-progress"],
                    args.threads)
    wall_train = time.perf_counter() - t0
    sd = torch.load(model, map_location="cpu")["model"]
    res = dict(config=name, seed=seed, steps=args.steps, threads=args.threads,
               params=sum(v.numel() for k, v in sd.items() if v.dtype.is_floating_point and "running_" not in k),
               cpu_min_train=cpu_train / 60, wall_min_train=wall_train / 60)
    res.update(predict_and_score(name, seed, cfg, work, heldout, args))
    atomic_write_text(metrics, json.dumps(res, indent=1))
    return res


def predict_and_score(name: str, seed: int, cfg: dict, work: Path, heldout: Path, args) -> dict:
    """The trained run in ``work/run`` predicts every held-out keyframe with its own config
    (``occ-predict``) and is scored (:func:`score`, and :func:`score_flow` for flow models);
    also its ``occ_threshold`` (None: the argmax) and the prediction's CPU / wall ms per frame."""
    py = sys.executable
    model, run_cfg, pred = work / "run" / "model.pt", work / "run" / "config.yaml", work / "pred"
    print(f"== {name} seed {seed}: predicting the held-out world", flush=True)
    t0 = time.perf_counter()
    cpu_pred = run([py, "-m", "occ_core.training.predict", "--config", str(run_cfg), "--checkpoint", str(model),
                    "--dataroot", str(heldout), "--split", "val", "--out", str(pred), "--overwrite"], args.threads)
    frames = len(list(pred.glob("*.npz")))
    wall_pred = time.perf_counter() - t0
    res = score(pred, heldout, work / "eval.json")
    res.update(occ_threshold=yaml.safe_load(run_cfg.read_text()).get("occ_threshold"),
               cpu_ms_per_frame=1000 * cpu_pred / max(frames, 1), wall_ms_per_frame=1000 * wall_pred / max(frames, 1))
    shutil.rmtree(pred)  # 80 grids per run; the scores are kept
    if cfg.get("flow"):
        pred_oo = work / "pred_openocc"
        run([py, "-m", "occ_core.training.predict", "--config", str(run_cfg), "--checkpoint", str(model),
             "--dataroot", str(heldout), "--split", "val", "--out", str(pred_oo), "--overwrite", "--format", "openocc"],
            args.threads)
        res.update(score_flow(pred_oo, heldout, work / "eval_openocc.json"))
        shutil.rmtree(pred_oo)
    return res


def prior_scores(train_root: Path, heldout: Path, out: Path) -> dict:
    metrics = out / "prior" / "metrics.json"
    if metrics.exists():
        return json.loads(metrics.read_text())
    prior = PerVoxelPrior.fit(occ3d.read_gt(e.path).semantics for e in occ3d.list_gt(train_root / "gts"))
    pred = out / "prior" / "pred"
    labels = prior.predict()
    for e in occ3d.list_gt(heldout / "gts"):
        occ3d.write_prediction(pred / f"{e.token}.npz", labels)
    res = score(pred, heldout, out / "prior" / "eval.json")
    shutil.rmtree(pred)
    atomic_write_text(metrics, json.dumps(res, indent=1))
    return res


def mean_std(values: list[float]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="fusion", help="comma-separated config/models/<name>.yaml names")
    p.add_argument("--steps", type=int, default=600, help="training steps per run (the budget)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (at least 3 for a std)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of every training and prediction")
    p.add_argument("--data", type=Path, default=REPO / "data" / "bench", help="where the preset worlds live")
    p.add_argument("--out", type=Path, default=REPO / "work_dirs" / "learning")
    p.add_argument("--fresh", action="store_true", help="retrain runs that already have scores")
    p.add_argument("--json", type=Path, default=None, help="where the table's numbers go (default <out>/learning.json)")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=KEY:VALUE[,KEY:VALUE...]: also train each config with these fields changed")
    p.add_argument("--variants-only", action="store_true", help="train only the --variant rows, not the configs as shipped")
    args = p.parse_args(argv)
    configs = [safe_component(n, "--configs") for n in args.configs.split(",") if n]
    variants = dict(parse_variant(v) for v in args.variant)
    plan = ({} if args.variants_only and variants else {c: {} for c in configs}) | {f"{c}+{v}": ch for c in configs for v, ch in variants.items()}
    names = list(plan)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    train_root = ensure_world("bench-train", args.data / "train")
    heldout = ensure_world("bench-heldout", args.data / "heldout")
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = {n: [train_and_score(n, s, args, train_root, heldout, plan[n]) for s in seeds] for n in names}
    prior = prior_scores(train_root, heldout, args.out)

    print(f"\n# learning benchmark, {started:%Y-%m-%d %H:%M} UTC, {cpu_model()}, {args.threads} threads, "
          f"load average {load_average()}")
    print(f"# train: bench-train ({train_root}); scored: every keyframe of bench-heldout ({heldout}), camera mask; "
          f"{args.steps} steps; seeds {seeds}; mean ± std over seeds\n")
    print("| model | params | CPU min (train) | ms / frame | mIoU % | IoU % | RayIoU % |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for n, rs in runs.items():
        print(f"| {n} | {rs[0]['params']:,} | {mean_std([r['cpu_min_train'] for r in rs])} | "
              f"{mean_std([r['wall_ms_per_frame'] for r in rs])} | {mean_std([r['mIoU'] for r in rs])} | "
              f"{mean_std([r['IoU'] for r in rs])} | {mean_std([r['RayIoU'] for r in rs])} |")
    print(f"| per-voxel prior | | | | {prior['mIoU']:.2f} | {prior['IoU']:.2f} | {prior['RayIoU']:.2f} |")
    flows = [n for n in names if "mAVE" in runs[n][0]]
    if flows:
        print("\nflow (OpenOcc v2 classes, no mask; mAVE m/s on true-positive rays; zero flow = the same semantics, flow 0)\n")
        print("| model | RayIoU % | mAVE | mAVE, zero flow | OccScore % |")
        print("|---|--:|--:|--:|--:|")
        for n in flows:
            rs = runs[n]
            print(f"| {n} | {mean_std([r['RayIoU_openocc'] for r in rs])} | {mean_std([r['mAVE'] for r in rs])} | "
                  f"{mean_std([r['mAVE_zero_flow'] for r in rs])} | {mean_std([r['OccScore'] for r in rs])} |")
    classes = [c for c in OCC3D_CLASSES if c != "free"]
    print("\nper-class IoU % (mean over seeds; n/a: class absent from the held-out labels)\n")
    print("| class | " + " | ".join(names) + " | prior |")
    print("|---|" + "--:|" * (len(names) + 1))
    for c in classes:
        cells = [mean_std([r["per_class"].get(c) for r in runs[n]]) for n in names]
        pc = prior["per_class"].get(c)
        print(f"| {c} | " + " | ".join(cells) + f" | {'n/a' if pc is None else f'{pc:.2f}'} |")
    atomic_write_text(args.json or args.out / "learning.json", json.dumps(
        {"started_utc": started.isoformat(), "cpu": cpu_model(), "threads": args.threads, "steps": args.steps,
         "seeds": seeds, "variants": {n: ch for n, ch in plan.items() if ch}, "runs": runs, "prior": prior}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
