"""occ_core.ops.ray_traverse (reference, numba, Triton) and the numba raycast kernel.

Hand-made segments with known answers on a 1 m grid (every face exact in floating point),
segments against dense sampling (no shared code with the DDA), numba == reference exactly on
random inputs, Triton (the interpreter on CPU, as in test_ops_kernels) == reference on tiny
inputs, and the numba first-hit ray caster == the torch reference.
"""

import os

if os.environ.get("OCC_OPS_TEST_DEVICE", "cpu") == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (see test_ops_kernels)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from occ_core.grid import GridSpec  # noqa: E402
from occ_core.ops import backend as ops_backend  # noqa: E402
from occ_core.ops.numba.raycast_kernel import raycast_numba  # noqa: E402
from occ_core.ops.ray_traverse import ray_traverse  # noqa: E402
from occ_core.ops.raycast import raycast, raycast_torch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:triton.*")

UNIT = GridSpec("unit", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (4, 3, 2))
ANISO = GridSpec("aniso", (-2.0, -1.5, -0.5), (0.5, 0.3, 0.25), (8, 10, 6))
BACKENDS = ["torch", "numba", "triton"]


def _t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a, np.float64).reshape(-1, 3))


def _voxels(counts: torch.Tensor) -> dict[tuple[int, int, int], float]:
    """{(ix, iy, iz): count} of the non-zero voxels."""
    c = counts.numpy()
    return {tuple(int(i) for i in v): float(c[tuple(v)]) for v in np.argwhere(c != 0)}


@pytest.mark.parametrize("be", BACKENDS)
def test_hand_made_segments(be):
    def run(s, e, **kw):
        return ray_traverse(_t(s), _t(e), UNIT, backend=be, **kw)

    # Along +x from the centre of voxel 0 to the centre of voxel 3: voxels 0, 1, 2 (not the end's).
    r = run([0.5, 0.5, 0.5], [3.5, 0.5, 0.5], weights=torch.tensor([2.0]))
    assert _voxels(r.crossed) == {(0, 0, 0): 2.0, (1, 0, 0): 2.0, (2, 0, 0): 2.0}
    # margin 1.2 m: voxel 2 is left at x = 3, 0.5 m before the end: not early; voxel 1 at 1.5 m: early.
    r = run([0.5, 0.5, 0.5], [3.5, 0.5, 0.5], margin=1.2)
    assert _voxels(r.early) == {(0, 0, 0): 1.0, (1, 0, 0): 1.0}
    assert _voxels(r.crossed) == {(0, 0, 0): 1.0, (1, 0, 0): 1.0, (2, 0, 0): 1.0}
    # Diagonal exactly through the corners (1, 1) and (2, 2): the touched voxels are not visited.
    r = run([0.5, 0.5, 0.5], [2.5, 2.5, 0.5])
    assert _voxels(r.crossed) == {(0, 0, 0): 1.0, (1, 1, 0): 1.0}
    # Going down (-x, -y) through the same corners.
    r = run([2.5, 2.5, 1.5], [0.5, 0.5, 1.5])
    assert _voxels(r.crossed) == {(2, 2, 1): 1.0, (1, 1, 1): 1.0}
    # From outside the grid (x = -5) to voxel 2: counted from the entry, voxels 0 and 1.
    r = run([-5.0, 1.5, 0.5], [2.5, 1.5, 0.5])
    assert _voxels(r.crossed) == {(0, 1, 0): 1.0, (1, 1, 0): 1.0}
    # Through the whole grid and out: every voxel of the row, the last one included.
    r = run([-1.0, 2.5, 1.5], [9.0, 2.5, 1.5])
    assert _voxels(r.crossed) == {(i, 2, 1): 1.0 for i in range(4)}
    # Outside and parallel to the grid, and zero length: nothing.
    r = run([[-1.0, -0.5, 0.5], [1.5, 1.5, 1.5]], [[9.0, -0.5, 0.5], [1.5, 1.5, 1.5]])
    assert not r.crossed.any() and not r.early.any()
    # Blocked voxel (2, 0, 0): counted, then the segment stops; a blocked end voxel is not counted.
    blocked = torch.zeros(UNIT.dims, dtype=torch.bool)
    blocked[2, 0, 0] = True
    r = run([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], [[3.9, 0.5, 0.5], [2.5, 0.5, 0.5]], blocked=blocked)
    assert _voxels(r.crossed) == {(0, 0, 0): 2.0, (1, 0, 0): 2.0, (2, 0, 0): 1.0}
    # A segment starting in a blocked voxel counts it and stops.
    r = run([2.5, 0.5, 0.5], [0.2, 0.5, 0.5], blocked=blocked)
    assert _voxels(r.crossed) == {(2, 0, 0): 1.0}
    assert r.crossed.dtype == torch.float64 and r.crossed.shape == UNIT.dims


def _sampled_voxels(start: np.ndarray, end: np.ndarray, grid: GridSpec) -> set[tuple[int, int, int]]:
    """Brute force: voxels a segment visits before the voxel of its end, by dense sampling."""
    t = np.linspace(0, 1, 20001)
    idx, inside = grid.points_to_voxels(start + t[:, None] * (end - start))
    end_idx, end_inside = grid.points_to_voxels(end[None])
    at_end = (idx == end_idx[0]).all(1) & end_inside[0]
    keep = inside & (np.cumsum(at_end) == 0)
    return {tuple(v) for v in idx[keep].tolist()}


@pytest.mark.parametrize("be", ["torch", "numba"])
def test_segments_match_dense_sampling(be):
    rng = np.random.default_rng(3)
    lo, hi = np.asarray(ANISO.range_min), np.asarray(ANISO.range_max)
    start, end = rng.uniform(lo - 1, hi + 1, (30, 3)), rng.uniform(lo - 1, hi + 1, (30, 3))
    for r in range(len(start)):
        got = ray_traverse(_t(start[r]), _t(end[r]), ANISO, backend=be).crossed
        assert set(_voxels(got)) == _sampled_voxels(start[r], end[r], ANISO), r


def _random_segments(rng, grid: GridSpec, n: int):
    lo, hi = np.asarray(grid.range_min), np.asarray(grid.range_max)
    vs = np.asarray(grid.voxel_size)
    start = rng.uniform(lo - 1.5, hi + 1.5, (n, 3))
    end = rng.uniform(lo - 1.5, hi + 1.5, (n, 3))
    k = n // 4  # on voxel faces, along axes and in axis planes
    start[:k] = lo + vs * np.round((start[:k] - lo) / vs)
    end[:k] = start[:k] + np.where(rng.random((k, 3)) < 0.5, 0.0, end[:k] - start[:k])
    end[k:k + 5] = start[k:k + 5]  # zero length
    weights = rng.integers(1, 6, n).astype(np.float64)  # integer: every order of the sums is exact
    return torch.tensor(start), torch.tensor(end), torch.tensor(weights)


@pytest.mark.parametrize("grid", [ANISO, GridSpec("occ3d-like", (-40.0, -40.0, -1.0), (0.4, 0.4, 0.4), (200, 200, 16))])
def test_numba_equals_reference_on_random_segments(grid):
    rng = np.random.default_rng(1)
    s, e, w = _random_segments(rng, grid, 3000)
    blocked = torch.tensor(rng.random(grid.dims) < 0.03)
    for kw in (dict(weights=w, margin=0.3), dict(blocked=blocked), dict(margin=0.0)):
        ref = ray_traverse(s, e, grid, backend="torch", **kw)
        ker = ray_traverse(s, e, grid, backend="numba", **kw)
        assert torch.equal(ref.crossed, ker.crossed) and torch.equal(ref.early, ker.early)
        assert ref.crossed.sum() > 0 and (ref.early < ref.crossed).any() == ("margin" in kw and kw["margin"] > 0)
    # Non-integer weights: the sums only differ in their order of addition.
    wf = torch.tensor(rng.uniform(0.1, 3.0, len(s)))
    ref = ray_traverse(s, e, grid, wf, backend="torch")
    torch.testing.assert_close(ray_traverse(s, e, grid, wf, backend="numba").crossed, ref.crossed, rtol=1e-12, atol=0)


def test_triton_equals_reference_on_tiny_inputs():
    dev = torch.device(os.environ.get("OCC_OPS_TEST_DEVICE", "cpu"))
    rng = np.random.default_rng(2)
    s, e, w = (x.to(dev) for x in _random_segments(rng, ANISO, 300))
    blocked = torch.tensor(rng.random(ANISO.dims) < 0.05, device=dev)
    for kw in (dict(weights=w, margin=0.2), dict(blocked=blocked)):
        ref = ray_traverse(s, e, ANISO, backend="torch", **kw)
        ker = ray_traverse(s, e, ANISO, backend="triton", **kw)
        assert torch.equal(ref.crossed, ker.crossed) and torch.equal(ref.early, ker.early)
        assert ref.crossed.sum() > 0


def test_auto_runs_numba_on_cpu_and_bad_input(monkeypatch):
    monkeypatch.delenv(ops_backend.BACKEND_ENV, raising=False)
    cpu = torch.device("cpu")
    assert ops_backend.resolve_backend(None, cpu, has_numba=True) == "numba"
    assert ops_backend.resolve_backend(None, cpu) == "torch"  # ops without a numba kernel
    with pytest.raises(ValueError, match="no numba kernel"):
        ops_backend.resolve_backend("numba", cpu)
    with pytest.raises(RuntimeError, match="CPU tensors only"):
        ops_backend.resolve_backend("numba", torch.device("cuda"), has_numba=True)
    monkeypatch.setenv(ops_backend.BACKEND_ENV, "numba")
    assert ops_backend.resolve_backend(None, cpu) == "torch"  # a process-wide preference
    assert ops_backend.resolve_backend(None, cpu, has_numba=True) == "numba"
    s = _t([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="1 rows but end has 2"):
        ray_traverse(s, _t([[1, 1, 1], [2, 2, 2]]), UNIT)
    with pytest.raises(ValueError, match="shape"):
        ray_traverse(s[:, :2], s[:, :2], UNIT)
    with pytest.raises(ValueError, match="finite"):
        ray_traverse(s, _t([np.nan, 1, 1]), UNIT)
    with pytest.raises(ValueError, match="margin"):
        ray_traverse(s, s, UNIT, margin=-1.0)
    with pytest.raises(ValueError, match="blocked"):
        ray_traverse(s, s, UNIT, blocked=torch.zeros(3, 3, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------- raycast
def _rays(rng, n: int):
    lo, hi = np.asarray(ANISO.range_min), np.asarray(ANISO.range_max)
    o = rng.uniform(lo - 1.5, hi + 1.5, (n, 3))
    d = rng.normal(size=(n, 3))
    d[: n // 8, 1:] = 0.0  # along x
    d[n // 8: n // 4, 2] = 0.0  # in an xy plane
    o[n // 4: n // 4 + n // 8] = lo + np.asarray(ANISO.voxel_size) * rng.integers(0, 8, (n // 8, 3))  # on faces
    return torch.tensor(o), torch.tensor(d)


@pytest.mark.parametrize("seed,p_occ", [(0, 0.05), (1, 0.3)])
def test_raycast_numba_equals_reference(seed, p_occ):
    rng = np.random.default_rng(seed)
    occ = torch.tensor(rng.random(ANISO.dims) < p_occ)
    o, d = _rays(rng, 4000)
    for md in (None, 1.5, torch.tensor(rng.uniform(0.1, 5.0, len(o)))):
        for dtype in (torch.float64, torch.float32):
            ref = raycast_torch(occ, o, d, ANISO, md, step_dtype=dtype)
            ker = raycast_numba(occ, o, d, ANISO, md, step_dtype=dtype)
            assert torch.equal(ref.hit, ker.hit) and torch.equal(ref.voxel, ker.voxel)
            assert torch.equal(ref.distance, ker.distance)  # both float32 of the same float64 exit
            assert ref.hit.any() and (~ref.hit).any()
    via = raycast(occ, o.float(), d.float(), ANISO, backend="numba")
    ref = raycast(occ, o.float(), d.float(), ANISO, backend="torch")
    assert torch.equal(via.voxel, ref.voxel) and torch.equal(via.distance, ref.distance)
    empty = raycast(occ, o[:0], d[:0], ANISO, backend="numba")
    assert empty.hit.shape == (0,) and empty.voxel.shape == (0, 3)


def test_raycast_numba_equals_reference_through_edges_and_corners():
    """Rays from voxel centres along every (+-1, +-1, +-1) pattern of a unit grid pass exactly
    through edges and corners: the tied axes step together, the touched voxels are skipped."""
    grid = GridSpec("unit6", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (6, 6, 6))
    rng = np.random.default_rng(4)
    occ = torch.tensor(rng.random(grid.dims) < 0.25)
    dirs = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])
    centres = grid.voxel_centers(rng.integers(0, 6, (40, 3)))
    o = torch.tensor(np.repeat(centres, len(dirs), 0))
    d = torch.tensor(np.tile(dirs, (len(centres), 1)), dtype=torch.float64)
    ref = raycast_torch(occ, o, d, grid)
    ker = raycast_numba(occ, o, d, grid)
    assert torch.equal(ref.hit, ker.hit) and torch.equal(ref.voxel, ker.voxel)
    # (0.5, 0.5, 0.5) along (1, 1, 0): (1, 0, 0) and (0, 1, 0) are only touched, (1, 1, 0) is hit.
    occ1 = torch.zeros(grid.dims, dtype=torch.bool)
    occ1[1, 0, 0] = occ1[0, 1, 0] = occ1[1, 1, 0] = True
    one = raycast_numba(occ1, _t([0.5, 0.5, 0.5]), _t([1.0, 1.0, 0.0]), grid)
    assert one.voxel.tolist() == [[1, 1, 0]]
