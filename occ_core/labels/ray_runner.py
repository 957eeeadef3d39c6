"""``occ-label --ray-address``: the per-scene work items of :mod:`occ_core.labels.cli` as Ray tasks.

Imported only on that path (importing Ray costs ~0.4 s and starts nothing by itself).

Each task runs :func:`occ_core.labels.cli.scene_keyframes`, the pool path's work item, as a
streaming generator: it yields after each keyframe it wrote (the driver's progress bar moves per
keyframe) and finally its :class:`~occ_core.labels.cli.SceneResult`. A Ray worker may run on
another machine, so the task loads the NuScenes tables itself (once per worker process and
dataroot, kept for the worker's next scene) and reads the LiDAR files and writes the labels by
path: **--dataroot and --out must be on a file system every node sees at the same path**, and
every node needs this package and its dependencies (the same version as the driver).

``address="local"`` starts a private local Ray instance with ``num_cpus`` CPUs (its workers get
this checkout on ``PYTHONPATH``, so they run the driver's code) and stops it at the end; any
other address connects to a running cluster (``auto``, ``<head-ip>:6379``, ``ray://<head>:10001``)
and disconnects at the end, which ends the job's tasks. Either way Ray is shut down on success,
error or Ctrl-C. A task's :class:`~occ_core.errors.OccDataError` or ``OSError`` is re-raised in the
driver as itself, so ``occ-label`` prints the same one-line error and exits 2.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import ray

import occ_core
from occ_core.errors import OccDataError
from occ_core.labels.cli import SceneJob, SceneResult, load_tables, scene_keyframes

_TABLES: dict[tuple[str, str], object] = {}  # per worker process: (dataroot, version) -> NuScenes


def _tables(dataroot: Path, version: str):
    key = (str(dataroot), version)
    if key not in _TABLES:
        _TABLES.clear()  # one dataroot at a time per worker
        _TABLES[key] = load_tables(Path(dataroot), version)
    return _TABLES[key]


def _scene_task(job: SceneJob) -> Iterator[object]:
    """Ray task body: the sample token of each keyframe written, then the SceneResult."""
    t0 = time.perf_counter()
    written = 0
    for token in scene_keyframes(job, _tables(job.dataroot, job.version)):
        written += 1
        yield token
    yield SceneResult(job.scene, written, time.perf_counter() - t0)


def _get(ref):
    """``ray.get`` that re-raises a task's bad-input error as itself (not wrapped in Ray's
    RayTaskError, whose message holds the remote traceback)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, (OccDataError, OSError)):
            raise cause from None
        raise


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at a ``host:port`` or ``ray://host:port`` address (Ray
    itself retries an unreachable GCS for minutes); ``local`` and ``auto`` are not probed.

    Raises:
        OccDataError: a malformed address or one nothing answers at within ``timeout`` seconds.
    """
    if address in ("local", "auto"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise OccDataError(f"--ray-address: expected local, auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise OccDataError(f"--ray-address {address}: nothing answers at {host}:{port} "
                           f"({e.strerror or e}); is the Ray head running?") from None


def _init(address: str, num_cpus: int) -> None:
    check_reachable(address)
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    saved = os.environ.get("PYTHONPATH")
    if address == "local":
        # the local instance's processes inherit this environment: put this checkout first
        root = str(Path(occ_core.__file__).resolve().parent.parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, saved) if p)
        kwargs.update(address="local", num_cpus=num_cpus)
    else:
        kwargs.update(address=address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        msg = " ".join(str(e).split())
        raise OccDataError(f"--ray-address {address}: cannot start or reach Ray ({msg})") from None
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def run_on_ray(jobs: list[SceneJob], address: str, num_cpus: int,
               on_keyframe: Callable[[], None] | None = None) -> list[SceneResult]:
    """Run the work items as Ray tasks (one CPU each) and return their results in job order.

    Args:
        jobs: the work items (:class:`~occ_core.labels.cli.SceneJob`).
        address: ``local`` or a Ray cluster address.
        num_cpus: CPUs of the local instance (ignored when connecting to a cluster).
        on_keyframe: called in the driver once per keyframe written (the progress bar).

    Raises:
        OccDataError: Ray cannot be started or reached, or a task met bad input (its own error).
    """
    _init(address, num_cpus)
    try:
        task = ray.remote(num_cpus=1, num_returns="streaming", max_retries=0)(_scene_task)
        gens = [task.remote(job) for job in jobs]
        index = {id(g): i for i, g in enumerate(gens)}
        results: list[SceneResult | None] = [None] * len(gens)
        pending = list(gens)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for g in ready:
                try:
                    ref = next(g)
                except StopIteration:
                    continue
                item = _get(ref)
                if isinstance(item, SceneResult):
                    results[index[id(g)]] = item
                elif on_keyframe is not None:
                    on_keyframe()
                pending.append(g)
        missing = [jobs[i].scene for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"Ray tasks of scenes {missing} ended without a result")
        return results  # type: ignore[return-value]
    finally:
        ray.shutdown()
