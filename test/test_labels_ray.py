"""occ-label --ray-address: the same work items as Ray tasks on a local Ray instance with 2 CPUs.

Each Ray run starts and stops a private local instance (~5-15 s), so the file holds two runs:
one that must match the process pool file for file, one whose task meets bad input.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import psutil
import pytest

from occ_core.labels import ray_runner
from occ_core.labels.cli import main

RAY_PROCESSES = ("raylet", "gcs_server")


def _ray_children() -> list[str]:
    """Names of this process's live descendants that are Ray's own servers."""
    names = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(r in p.name() for r in RAY_PROCESSES):
                names.append(p.name())
        except psutil.NoSuchProcess:
            pass
    return names


@pytest.fixture
def watch_ray(monkeypatch):
    """Records the Ray servers that run under this process while the driver reads task results."""
    seen: list[str] = []
    get = ray_runner._get

    def spy(ref):
        if not seen:
            seen.extend(_ray_children())
        return get(ref)

    monkeypatch.setattr(ray_runner, "_get", spy)
    return seen


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_importing_occ_label_does_not_import_ray():
    code = "import sys, occ_core.labels.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ray_and_pool_write_identical_files_and_leave_no_ray_processes(synthetic_dataroot, tmp_path, capsys,
                                                                       watch_ray):
    common = ["--dataroot", str(synthetic_dataroot), "--quiet", "--no-sweeps", "--workers", "2"]
    assert main([*common, "--out", str(tmp_path / "pool")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray-address", "local"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert "wrote 6 keyframes of 2 scenes" in summary[-1] and "wrote 6 keyframes of 2 scenes" in summary[-2]
    assert "raylet" in watch_ray and "gcs_server" in watch_ray  # the local instance ran under this process
    assert _ray_children() == []  # and is gone
    ref = sorted(p.relative_to(tmp_path / "pool") for p in (tmp_path / "pool").glob("*/*/labels.npz"))
    assert len(ref) == 6
    assert sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").glob("*/*/labels.npz")) == ref
    for rel in ref:
        a, b = _arrays(tmp_path / "pool" / rel), _arrays(tmp_path / "ray" / rel)
        assert set(a) == set(b) == {"semantics", "mask_lidar", "mask_camera"}
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), (rel, k)


def test_a_task_error_is_one_line_and_exit_2_and_ray_stops(synthetic_dataroot, tmp_path, capsys, watch_ray):
    root = tmp_path / "nuscenes"
    shutil.copytree(synthetic_dataroot, root, ignore=shutil.ignore_patterns("sweeps", "depth", "gts", "openocc_v2"))
    victim = sorted((root / "samples" / "LIDAR_TOP").glob("synth-0-0000__*.pcd.bin"))[1]
    victim.write_bytes(victim.read_bytes()[:-4])  # no longer N x 5 float32
    rc = main(["--dataroot", str(root), "--out", str(tmp_path / "o"), "--quiet", "--no-sweeps", "--workers", "2",
               "--scenes", "scene-0001", "--ray-address", "local"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"occ-label: {victim}: sample_data.filename: expected N x 5 float32 values, "
                               f"got {victim.stat().st_size // 4} values"]
    assert watch_ray and _ray_children() == []


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "--ray-address 127.0.0.1:1: nothing answers at 127.0.0.1:1"),
    ("ray://127.0.0.1:1", "--ray-address ray://127.0.0.1:1: nothing answers at 127.0.0.1:1"),
    ("head-without-port", "--ray-address: expected local, auto, HOST:PORT or ray://HOST:PORT"),
])
def test_an_unreachable_cluster_is_one_line_and_exit_2_at_once(synthetic_dataroot, tmp_path, capsys, address,
                                                                message):
    rc = main(["--dataroot", str(synthetic_dataroot), "--out", str(tmp_path / "o"), "--quiet",
               "--ray-address", address])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"occ-label: {message}")
