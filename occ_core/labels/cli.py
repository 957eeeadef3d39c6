"""``occ-label``: Occ3D-style occupancy labels from the LiDAR of a nuScenes-format dataroot.

    occ-label --dataroot DIR --out DIR [--version V] [--scenes NAME ...]
              [--format occ3d|openocc|surroundocc|openoccupancy] [--grid occ3d|surroundocc|openoccupancy]
              [--window K] [--densify none|poisson] [--workers N] [--ray-address ADDR] [--shard i/n] [--overwrite]
              [--no-boxes] [--carve auto|on|off] [--no-sweeps] [--vertical ego|occ3d-real]
              [--pose-z recorded|pitch] [--quiet]

Writes ``<out>/<scene_name>/<sample_token>/labels.npz`` (``semantics`` uint8, 17 = free;
``mask_lidar``, ``mask_camera`` uint8 0/1), the layout and keys of Occ3D's ``gts/``, one file per
keyframe, atomically; ``--format`` writes OpenOcc v2 (with flow), SurroundOcc or OpenOccupancy
files instead (:mod:`occ_core.labels.outputs`). A keyframe whose file exists is skipped (a killed
run resumes where it stopped) unless ``--overwrite``. Scenes are the work items: ``--workers``
processes label different scenes; ``--ray-address`` runs the same work items as Ray tasks
(``local``: a local Ray instance with ``--workers`` CPUs; otherwise the address of a running
cluster, where ``--dataroot`` and ``--out`` must be on a file system every node sees at the same
path, and every node needs this package); ``--shard i/n`` keeps every n-th scene from the i-th
(0-based) of the sorted scene list, for job arrays. See :mod:`occ_core.labels` for the stages.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from occ_core.cli import check_input_dir, check_output_dir, nonnegative_int, positive_int, run_cli
from occ_core.errors import OccDataError
from occ_core.grid import GRIDS
from occ_core.labels.config import CARVE_MODES, DENSIFY_MODES, POSE_Z_MODES, VERTICAL_SHIFTS, LabelConfig
from occ_core.labels.outputs import FORMATS, check_dataroot_for, grid_for, keyframe_path
from occ_core.procs import DieWithParent

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
    p.add_argument("--out", required=True, help="output folder (occ3d: <out>/<scene>/<sample_token>/labels.npz)")
    p.add_argument("--scenes", nargs="+", default=None, help="scene names (default: all)")
    p.add_argument("--format", choices=tuple(FORMATS), default="occ3d",
                   help="occ3d (default), openocc (OpenOcc v2 with flow), surroundocc or openoccupancy (sparse, "
                        "LiDAR frame); see occ_core.labels.outputs")
    p.add_argument("--grid", choices=GRID_CHOICES, default=None,
                   help="output grid (default: the format's own; occ3d for --format occ3d)")
    p.add_argument("--window", type=nonnegative_int, default=10, help="keyframes aggregated on each side (default 10)")
    p.add_argument("--densify", choices=DENSIFY_MODES, default="none",
                   help="poisson: close holes with Poisson surface reconstruction (SurroundOcc; Open3D, ~5x slower)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="processes, one scene each at a time (with --ray-address local: the local Ray CPUs)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="run the scenes as Ray tasks: 'local' starts a local Ray instance with --workers CPUs; "
                        "else a cluster address (e.g. auto, ray://head:10001); --dataroot and --out must be "
                        "on a file system all nodes share")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="i/n", help="keep scenes i, i+n, ... (0-based)")
    p.add_argument("--overwrite", action="store_true", help="recompute keyframes whose labels exist")
    p.add_argument("--no-boxes", action="store_true", help="ignore annotation boxes (carving removes trails)")
    p.add_argument("--carve", choices=CARVE_MODES, default="auto",
                   help="free-space carving; auto: only when no boxes are used (default)")
    p.add_argument("--no-sweeps", action="store_true", help="aggregate keyframes only")
    p.add_argument("--vertical", choices=tuple(VERTICAL_SHIFTS), default="ego",
                   help="ego: road at ego z = 0 (Occ3D z-index 2); occ3d-real: road at z-index 0 as published Occ3D")
    p.add_argument("--pose-z", choices=POSE_Z_MODES, default="recorded",
                   help="ego pose z: as recorded, or rebuilt from the pitch (nuScenes keeps z = 0 on slopes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@dataclass(frozen=True)
class SceneJob:
    """One work item: label some keyframes of one scene and write them.

    Attributes:
        dataroot: the nuScenes-format folder; version: its table folder (``v1.0-mini``, ...).
        scene: the scene name.
        targets: ``(sample_token, output file)`` of each keyframe to label, in any order.
        cfg: the label settings; fmt: the ``--format``.
    """

    dataroot: Path
    version: str
    scene: str
    targets: tuple[tuple[str, Path], ...]
    cfg: LabelConfig
    fmt: str


@dataclass
class SceneResult:
    """What one scene's work item did."""

    scene: str
    written: int
    seconds: float


def scene_keyframes(job: SceneJob, nusc) -> Iterator[str]:
    """Run one work item: load and split the scene, label each target keyframe and write it in
    ``job.fmt``; yields each keyframe's sample token once its file is written. The pool and the
    Ray path both run this."""
    from occ_core.labels.outputs import write_keyframe
    from occ_core.labels.pipeline import label_keyframe, prepare_scene

    targets = dict(job.targets)
    prep = prepare_scene(nusc, job.dataroot, job.scene, job.cfg)
    for k, i in enumerate(prep.scene.keyframes):
        token = prep.scene.sweeps[i].sample_token
        if token not in targets:
            continue
        lab = label_keyframe(prep, k, job.cfg)
        write_keyframe(job.fmt, targets[token], lab.semantics, lab.mask_lidar, lab.mask_camera, lab.flow)
        yield token


def _scene_job(job: SceneJob) -> SceneResult:
    """The pool path's work item: the tables come from the parent by fork."""
    t0 = time.perf_counter()
    written = 0
    for _ in scene_keyframes(job, _NUSC):
        written += 1
        if _COUNTER is not None:
            with _COUNTER.get_lock():
                _COUNTER.value += 1
    return SceneResult(job.scene, written, time.perf_counter() - t0)


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def resolve_version(dataroot: Path, version: str | None) -> str:
    """``version`` or the table folder found under ``dataroot``, checked to hold ``sample.json``."""
    from occ_core.data.nuscenes_dataset import find_version

    version = version or find_version(dataroot)
    if not (dataroot / version / "sample.json").is_file():
        raise OccDataError(f"--version: {dataroot / version / 'sample.json'} does not exist")
    return version


def load_tables(dataroot: Path, version: str):
    """The NuScenes tables of ``dataroot``/``version``.

    Raises:
        OccDataError: the tables do not load.
    """
    from nuscenes.nuscenes import NuScenes

    try:
        return NuScenes(version, str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError) as e:
        raise OccDataError(f"--dataroot: {dataroot} does not load as nuScenes {version} ({e})") from None


def _run_pool(jobs: list[SceneJob], workers: int, bar: tqdm) -> list[SceneResult]:
    ctx = mp.get_context("fork")
    counter = ctx.Value("l", 0)
    results: list[SceneResult] = []
    if workers == 1:
        _init_worker(counter)
        try:
            for job in jobs:
                results.append(_scene_job(job))
                bar.update(counter.value - bar.n)
        finally:
            _init_worker(None)
    else:
        with ctx.Pool(workers, initializer=DieWithParent(_init_worker, counter)) as pool:
            pending = [pool.apply_async(_scene_job, (job,)) for job in jobs]
            while not all(p.ready() for p in pending):
                time.sleep(0.5)
                bar.update(counter.value - bar.n)
            results = [p.get() for p in pending]
    bar.update(counter.value - bar.n)
    return results


def _main(a: argparse.Namespace) -> int:
    global _NUSC
    dataroot = check_input_dir(a.dataroot, "--dataroot")
    out = check_output_dir(a.out, "--out")
    if a.ray_address is not None:
        from occ_core.labels.ray_runner import check_reachable

        check_reachable(a.ray_address)  # before the tables load: Ray alone retries for minutes
    fmt = FORMATS[a.format]
    grid = grid_for(fmt.name, GRIDS[a.grid] if a.grid else None)
    if fmt.frame == "lidar" and a.vertical != "ego":
        raise OccDataError(f"--vertical {a.vertical}: --format {fmt.name} labels lie in the LiDAR frame, "
                           "which takes no vertical shift")
    cfg = LabelConfig(grid=grid, window=a.window, use_sweeps=not a.no_sweeps, use_boxes=not a.no_boxes,
                      carve=a.carve, z_shift=VERTICAL_SHIFTS[a.vertical], densify=a.densify, pose_z=a.pose_z,
                      frame=fmt.frame, flow=fmt.flow)
    version = resolve_version(dataroot, a.version)
    nusc = load_tables(dataroot, version)
    check_dataroot_for(fmt.name, bool(getattr(nusc, "lidarseg", None)), dataroot)
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
        targets, tok = [], scene["first_sample_token"]
        while tok:
            sample = nusc.get("sample", tok)
            if "LIDAR_TOP" not in sample["data"]:
                raise OccDataError(f"scene {name}: sample {tok} has no LIDAR_TOP sample_data")
            sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            path = keyframe_path(fmt.name, out, name, scene["token"], tok, sd["token"], sd["filename"])
            total += 1
            if a.overwrite or not path.is_file():
                targets.append((tok, path))
            else:
                skipped += 1
            tok = sample["next"]
        if targets:
            jobs.append(SceneJob(dataroot, version, name, tuple(targets), cfg, fmt.name))
    _NUSC = nusc
    n_todo = sum(len(j.targets) for j in jobs)
    workers = max(1, min(a.workers, len(jobs)))
    t0 = time.perf_counter()
    with tqdm(total=n_todo, desc=PROG, unit="keyframe", disable=a.quiet or n_todo == 0, file=sys.stderr) as bar:
        if a.ray_address is not None:
            from occ_core.labels.ray_runner import run_on_ray

            results = run_on_ray(jobs, a.ray_address, a.workers, lambda: bar.update(1)) if jobs else []
        else:
            results = _run_pool(jobs, workers, bar)
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
