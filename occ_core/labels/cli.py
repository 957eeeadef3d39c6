"""``occ-label``: Occ3D-style occupancy labels from the LiDAR of a nuScenes-format dataroot.

    occ-label --dataroot DIR --out DIR [--version V] [--scenes NAME ...]
              [--grid occ3d|surroundocc|openoccupancy] [--window K] [--densify none|poisson]
              [--workers N] [--shard i/n] [--overwrite] [--no-boxes] [--carve auto|on|off] [--no-sweeps]
              [--vertical ego|occ3d-real] [--quiet]

Writes ``<out>/<scene_name>/<sample_token>/labels.npz`` (``semantics`` uint8, 17 = free;
``mask_lidar``, ``mask_camera`` uint8 0/1), the layout and keys of Occ3D's ``gts/``, one file per
keyframe, atomically. A keyframe whose file exists is skipped (a killed run resumes where it
stopped) unless ``--overwrite``. Scenes are the work items: ``--workers`` processes label
different scenes; ``--shard i/n`` keeps every n-th scene from the i-th (0-based) of the sorted
scene list, for job arrays. See :mod:`occ_core.labels` for the stages.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from occ_core.cli import check_input_dir, check_output_dir, nonnegative_int, positive_int, run_cli
from occ_core.errors import OccDataError
from occ_core.formats.occ3d import sample_path
from occ_core.grid import GRIDS
from occ_core.labels.config import CARVE_MODES, DENSIFY_MODES, VERTICAL_SHIFTS, LabelConfig

PROG = "occ-label"
GRID_CHOICES = ("occ3d", "surroundocc", "openoccupancy")

_NUSC = None  # the loaded NuScenes tables, shared with forked workers
_COUNTER = None  # keyframes written, shared with workers


def parse_shard(text: str) -> tuple[int, int]:
    """argparse type: ``i/n`` with 0 <= i < n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n, got {text!r}")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--dataroot", required=True, help="nuScenes-format folder (tables under v1.0-*)")
    p.add_argument("--version", default=None, help="table folder, e.g. v1.0-mini (default: the one found)")
    p.add_argument("--out", required=True, help="output folder: <out>/<scene>/<sample_token>/labels.npz")
    p.add_argument("--scenes", nargs="+", default=None, help="scene names (default: all)")
    p.add_argument("--grid", choices=GRID_CHOICES, default="occ3d")
    p.add_argument("--window", type=nonnegative_int, default=10, help="keyframes aggregated on each side (default 10)")
    p.add_argument("--densify", choices=DENSIFY_MODES, default="none",
                   help="poisson: close holes with Poisson surface reconstruction (SurroundOcc; Open3D, ~5x slower)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes, one scene each at a time")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="i/n", help="keep scenes i, i+n, ... (0-based)")
    p.add_argument("--overwrite", action="store_true", help="recompute keyframes whose labels exist")
    p.add_argument("--no-boxes", action="store_true", help="ignore annotation boxes (carving removes trails)")
    p.add_argument("--carve", choices=CARVE_MODES, default="auto",
                   help="free-space carving; auto: only when no boxes are used (default)")
    p.add_argument("--no-sweeps", action="store_true", help="aggregate keyframes only")
    p.add_argument("--vertical", choices=tuple(VERTICAL_SHIFTS), default="ego",
                   help="ego: road at ego z = 0 (Occ3D z-index 2); occ3d-real: road at z-index 0 as published Occ3D")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@dataclass
class SceneResult:
    """What one scene's work item did."""

    scene: str
    written: int
    seconds: float


def _scene_job(args: tuple) -> SceneResult:
    from occ_core.formats.occ3d import Occ3DSample, write_gt
    from occ_core.labels.pipeline import label_keyframe, prepare_scene

    dataroot, out, scene, todo, cfg = args
    t0 = time.perf_counter()
    prep = prepare_scene(_NUSC, dataroot, scene, cfg)
    written = 0
    for k, i in enumerate(prep.scene.keyframes):
        token = prep.scene.sweeps[i].sample_token
        if token not in todo:
            continue
        lab = label_keyframe(prep, k, cfg)
        write_gt(sample_path(out, scene, token), Occ3DSample(lab.semantics, lab.mask_lidar, lab.mask_camera))
        written += 1
        if _COUNTER is not None:
            with _COUNTER.get_lock():
                _COUNTER.value += 1
    return SceneResult(scene, written, time.perf_counter() - t0)


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def _load_nusc(dataroot: Path, version: str | None):
    from nuscenes.nuscenes import NuScenes

    from occ_core.data.nuscenes_dataset import find_version

    version = version or find_version(dataroot)
    if not (dataroot / version / "sample.json").is_file():
        raise OccDataError(f"--version: {dataroot / version / 'sample.json'} does not exist")
    try:
        return NuScenes(version, str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError) as e:
        raise OccDataError(f"--dataroot: {dataroot} does not load as nuScenes {version} ({e})") from None


def _main(a: argparse.Namespace) -> int:
    global _NUSC
    dataroot = check_input_dir(a.dataroot, "--dataroot")
    out = check_output_dir(a.out, "--out")
    cfg = LabelConfig(grid=GRIDS[a.grid], window=a.window, use_sweeps=not a.no_sweeps, use_boxes=not a.no_boxes,
                      carve=a.carve, z_shift=VERTICAL_SHIFTS[a.vertical], densify=a.densify)
    nusc = _load_nusc(dataroot, a.version)
    names = sorted(s["name"] for s in nusc.scene)
    if a.scenes:
        missing = [s for s in a.scenes if s not in names]
        if missing:
            raise OccDataError(f"--scenes: {missing} not in the scene table of {dataroot} (has {len(names)} scenes)")
        names = sorted(set(a.scenes))
    i, n = a.shard
    names = names[i::n]
    jobs, skipped, total = [], 0, 0
    for name in names:
        scene = next(s for s in nusc.scene if s["name"] == name)
        tokens, tok = [], scene["first_sample_token"]
        while tok:
            tokens.append(tok)
            tok = nusc.get("sample", tok)["next"]
        todo = {t for t in tokens if a.overwrite or not sample_path(out, name, t).is_file()}
        total += len(tokens)
        skipped += len(tokens) - len(todo)
        if todo:
            jobs.append((dataroot, out, name, frozenset(todo), cfg))
    _NUSC = nusc
    n_todo = sum(len(j[3]) for j in jobs)
    workers = max(1, min(a.workers, len(jobs)))
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    counter = ctx.Value("l", 0)
    results: list[SceneResult] = []
    with tqdm(total=n_todo, desc=PROG, unit="keyframe", disable=a.quiet or n_todo == 0, file=sys.stderr) as bar:
        if workers == 1:
            _init_worker(counter)
            for job in jobs:
                results.append(_scene_job(job))
                bar.update(counter.value - bar.n)
            _init_worker(None)
        else:
            with ctx.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
                pending = [pool.apply_async(_scene_job, (job,)) for job in jobs]
                while not all(p.ready() for p in pending):
                    time.sleep(0.5)
                    bar.update(counter.value - bar.n)
                results = [p.get() for p in pending]
        bar.update(counter.value - bar.n)
    wall = time.perf_counter() - t0
    written = sum(r.written for r in results)
    busy = sum(r.seconds for r in results)
    per = f", {busy / written:.2f} s per keyframe per worker" if written else ""
    print(f"{PROG}: wrote {written} keyframes of {len(results)} scenes to {out} in {wall:.1f} s{per}; "
          f"{skipped} of {total} keyframes already done (skipped)")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(a))


if __name__ == "__main__":
    sys.exit(main())
