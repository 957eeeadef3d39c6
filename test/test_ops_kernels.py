"""Triton kernels against their torch references, on the CPU under the Triton interpreter.

TRITON_INTERPRET=1 is set here at import, before any kernel module (and, in this process,
normally before triton itself) is imported: the interpreter is chosen when a kernel is
decorated. It is slow, so sizes are tiny. On a GPU machine the same tests run the compiled
kernels on CUDA tensors when OCC_OPS_TEST_DEVICE=cuda.
"""

import os
import subprocess
import sys
from pathlib import Path

if os.environ.get("OCC_OPS_TEST_DEVICE", "cpu") == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from occ_core.grid import GridSpec  # noqa: E402
from occ_core.ops import backend as ops_backend  # noqa: E402
from occ_core.ops.voxelize import (dynamic_voxelize, hard_voxelize, point_voxel_coords,  # noqa: E402
                                   scatter_mean)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:triton.*")

DEV = torch.device(os.environ.get("OCC_OPS_TEST_DEVICE", "cpu"))
GRID = GridSpec("vox", (-2.0, -1.0, -0.5), (0.5, 0.25, 0.5), (8, 8, 3))


def test_import_ops_does_not_import_triton():
    code = ("import sys, occ_core.ops, occ_core.ops.voxelize, occ_core.ops.bev_pool, occ_core.ops.ray_traverse; "
            "print('triton' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.stdout.strip() == "False False"


def test_backend_switch(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(ops_backend.BACKEND_ENV, raising=False)
    assert ops_backend.resolve_backend(None, cpu) == "torch"
    assert ops_backend.resolve_backend(None, cuda) == "triton"
    assert ops_backend.resolve_backend("torch", cuda) == "torch"
    monkeypatch.setenv(ops_backend.BACKEND_ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ops_backend.resolve_backend(None, cpu) == "triton"
    assert ops_backend.resolve_backend("torch", cpu) == "torch"  # the argument wins
    monkeypatch.setenv(ops_backend.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match="OCC_OPS_BACKEND"):
        ops_backend.resolve_backend(None, cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        ops_backend.resolve_backend("triton", cpu)


# ----------------------------------------------------------------------------- voxelize
def _points(rng, n, c=4, margin=0.7):
    lo, hi = np.asarray(GRID.range_min), np.asarray(GRID.range_max)
    xyz = rng.uniform(lo - margin, hi + margin, size=(n, 3))
    # Some points exactly on voxel faces (the division must round as torch does).
    xyz[: n // 8] = np.round(xyz[: n // 8] / 0.25) * 0.25
    return torch.tensor(np.concatenate([xyz, rng.normal(size=(n, c - 3))], 1), dtype=torch.float32, device=DEV)


def test_voxel_coords_kernel_matches_reference():
    pts = _points(np.random.default_rng(0), 700)
    ref = point_voxel_coords(pts, GRID, backend="torch")
    ker = point_voxel_coords(pts, GRID, backend="triton")
    assert torch.equal(ref.coords, ker.coords) and torch.equal(ref.flat, ker.flat)
    assert (ref.flat < 0).any() and (ref.flat >= 0).any()
    # Strided input (a column slice) and float64.
    wide = torch.cat([pts, pts[:, :2]], 1)[:, :4]
    assert torch.equal(point_voxel_coords(wide, GRID, backend="triton").flat, ref.flat)
    assert torch.equal(point_voxel_coords(pts.double(), GRID, backend="triton").flat,
                       point_voxel_coords(pts.double(), GRID, backend="torch").flat)


def test_scatter_mean_kernel_and_voxelizers_match_reference():
    rng = np.random.default_rng(1)
    pts = _points(rng, 500, c=70)  # more channels than one channel block
    pts = torch.cat([pts, pts[:100]])
    idx = torch.tensor(rng.integers(-1, 40, len(pts)), device=DEV)
    m_ref, c_ref = scatter_mean(pts, idx, 40, backend="torch")
    m_ker, c_ker = scatter_mean(pts, idx, 40, backend="triton")
    assert torch.equal(c_ref, c_ker)
    torch.testing.assert_close(m_ker, m_ref, rtol=1e-5, atol=1e-6)
    d_ref = dynamic_voxelize(pts, GRID, backend="torch")
    d_ker = dynamic_voxelize(pts, GRID, backend="triton")
    assert torch.equal(d_ref.coords, d_ker.coords) and torch.equal(d_ref.point_voxel, d_ker.point_voxel)
    torch.testing.assert_close(d_ker.features, d_ref.features, rtol=1e-5, atol=1e-6)
    h_ref = hard_voxelize(pts, GRID, 3, 50, backend="torch")
    h_ker = hard_voxelize(pts, GRID, 3, 50, backend="triton")
    assert torch.equal(h_ref.coords, h_ker.coords) and torch.equal(h_ref.voxels, h_ker.voxels)


def test_voxelize_kernels_empty_input():
    empty = torch.zeros(0, 4, device=DEV)
    d = dynamic_voxelize(empty, GRID, backend="triton")
    assert d.features.shape == (0, 4) and d.point_voxel.shape == (0,)
    assert hard_voxelize(empty, GRID, 2, 5, backend="triton").voxels.shape == (0, 2, 4)


# ----------------------------------------------------------------------------- bev_pool
def _bev_inputs(rng, B=2, N=2, D=3, H=3, W=4, C=5, dtype=torch.float32):
    from occ_core.ops.bev_pool import prepare_bev_pool

    grid = GridSpec("bev", (-2.0, -2.0, -1.0), (0.5, 0.5, 1.0), (8, 8, 2))
    lo, hi = np.asarray(grid.range_min) - 1.0, np.asarray(grid.range_max) + 1.0
    pts = torch.tensor(rng.uniform(lo, hi, size=(B, N, D, H, W, 3)), device=DEV)
    pts[0, 0, :, 0, 0] = pts[0, 0, 0, 0, 0]  # all depth bins of one pixel in one voxel
    plan = prepare_bev_pool(pts, grid)
    depth = torch.tensor(rng.random((B * N, D, H, W)), dtype=dtype, device=DEV, requires_grad=True)
    feat = torch.tensor(rng.normal(size=(B * N, H, W, C)), dtype=dtype, device=DEV, requires_grad=True)
    return plan, depth, feat


@pytest.mark.parametrize("C", [5, 130])  # one and several channel blocks
def test_bev_pool_kernel_forward_backward_match_reference(C):
    from occ_core.ops.bev_pool import bev_pool

    rng = np.random.default_rng(3)
    plan, depth, feat = _bev_inputs(rng, C=C)
    gout = torch.tensor(rng.normal(size=(2, C, 2, 8, 8)), dtype=torch.float32, device=DEV)
    grads = {}
    for be in ("torch", "triton"):
        out = bev_pool(depth, feat, plan, backend=be)
        gd, gf = torch.autograd.grad((out * gout).sum(), (depth, feat))
        grads[be] = (out.detach(), gd, gf)
    for a, b in zip(grads["torch"], grads["triton"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert grads["torch"][0].abs().sum() > 0 and grads["torch"][2].abs().sum() > 0
    bev = bev_pool(depth, feat, plan, flatten_z=True, backend="triton")
    torch.testing.assert_close(bev, bev_pool(depth, feat, plan, flatten_z=True, backend="torch"), rtol=1e-5, atol=1e-5)


def test_bev_pool_kernel_gradcheck():
    from occ_core.ops.bev_pool import bev_pool

    rng = np.random.default_rng(4)
    plan, depth, feat = _bev_inputs(rng, B=1, N=1, D=2, H=2, W=2, C=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d, f: bev_pool(d, f, plan, backend="triton"), (depth, feat))


# ----------------------------------------------------------------------------- raycast
RGRID = GridSpec("aniso", (-2.0, -1.5, -0.5), (0.5, 0.3, 0.25), (8, 10, 6))


def test_raycast_kernel_matches_reference(monkeypatch):
    from occ_core.ops.raycast import raycast

    rng = np.random.default_rng(5)
    occ = torch.tensor(rng.random(RGRID.dims) < 0.12, device=DEV)
    n = 600
    lo, hi = np.asarray(RGRID.range_min), np.asarray(RGRID.range_max)
    o = rng.uniform(lo - 1.5, hi + 1.5, size=(n, 3))  # many origins outside the grid
    d = rng.normal(size=(n, 3))
    d[:100, 1:] = 0.0  # along x
    d[100:150, :2] = 0.0  # along z
    d[150:200, 2] = 0.0  # in an xy plane
    o[200:210] = RGRID.voxel_centers(np.argwhere(occ.cpu().numpy())[:10])  # origin in an occupied voxel
    o, d = torch.tensor(o, device=DEV), torch.tensor(d, device=DEV)
    for md in (None, 1.5):
        ref = raycast(occ, o, d, RGRID, max_distance=md, backend="torch")
        ker = raycast(occ, o, d, RGRID, max_distance=md, backend="triton")
        assert torch.equal(ref.hit, ker.hit) and torch.equal(ref.voxel, ker.voxel)
        torch.testing.assert_close(ker.distance, ref.distance)
        assert ref.hit.any() and (~ref.hit).any() and ref.hit[200:210].all()
    # The environment switch reaches the kernel too (same answers through the dispatcher).
    monkeypatch.setenv(ops_backend.BACKEND_ENV, "triton")
    via_env = raycast(occ, o[:50], d[:50], RGRID)
    assert torch.equal(via_env.voxel, raycast(occ, o[:50], d[:50], RGRID, backend="torch").voxel)
    empty = raycast(occ, o[:0], d[:0], RGRID, backend="triton")
    assert empty.hit.shape == (0,) and empty.voxel.shape == (0, 3)


def test_bev_pool_kernel_all_points_outside():
    from occ_core.ops.bev_pool import bev_pool, prepare_bev_pool

    grid = GridSpec("bev", (-2.0, -2.0, -1.0), (0.5, 0.5, 1.0), (8, 8, 2))
    plan = prepare_bev_pool(torch.full((1, 1, 2, 2, 2, 3), 50.0, device=DEV), grid)
    depth = torch.ones(1, 2, 2, 2, device=DEV, requires_grad=True)
    feat = torch.ones(1, 2, 2, 4, device=DEV, requires_grad=True)
    out = bev_pool(depth, feat, plan, backend="triton")
    assert out.shape == (1, 4, 2, 8, 8) and (out == 0).all()
    gd, gf = torch.autograd.grad(out.sum(), (depth, feat))
    assert (gd == 0).all() and (gf == 0).all()
