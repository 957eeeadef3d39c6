"""Raycast torch reference against an exact brute force (every voxel's slab test).

The brute force intersects each ray with every occupied voxel box; the first hit is the box
entered first (with a segment of positive length), its distance the box's exit. It shares no
code with the DDA. Grids are small and anisotropic; origins inside and outside the grid.
"""

import numpy as np
import pytest
import torch

from occ_core.grid import GridSpec
from occ_core.ops import raycast
from occ_core.ops.raycast import raycast_torch

ANISO = GridSpec("aniso", (-2.0, -1.5, -0.5), (0.5, 0.3, 0.25), (8, 10, 6))


def brute_force(occ: np.ndarray, o: np.ndarray, d: np.ndarray, grid: GridSpec, max_distance=None):
    """Exact first hit per ray by testing every occupied voxel box (float64 numpy)."""
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    vox = np.argwhere(occ)  # (V, 3)
    lo = np.asarray(grid.range_min) + vox * np.asarray(grid.voxel_size)  # (V, 3)
    hi = lo + np.asarray(grid.voxel_size)
    o_, d_ = o[:, None, :], d[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo[None] - o_) / d_
        t2 = (hi[None] - o_) / d_
    zero = d_ == 0
    inside = (o_ >= lo[None]) & (o_ < hi[None])
    tn = np.where(zero, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2)).max(2)
    tf = np.where(zero, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2)).min(2)
    entry = np.maximum(tn, 0.0)
    ok = tf > entry
    if max_distance is not None:
        ok &= entry < max_distance
    entry = np.where(ok, entry, np.inf)
    first = entry.argmin(1)
    hit = np.isfinite(entry[np.arange(len(o)), first])
    dist = np.where(hit, tf[np.arange(len(o)), first], np.inf)
    voxel = np.where(hit[:, None], vox[first], -1)
    return hit, dist, voxel


def random_rays(rng, grid: GridSpec, n: int, margin: float = 1.5):
    lo = np.asarray(grid.range_min)
    hi = np.asarray(grid.range_max)
    o = rng.uniform(lo - margin, hi + margin, size=(n, 3))
    d = rng.normal(size=(n, 3))
    # A quarter of the rays get one or two zero components (rays along axes and in axis planes).
    k = n // 4
    mask = rng.random((k, 3)) < 0.5
    mask[np.arange(k), rng.integers(0, 3, k)] = False  # never all three
    d[:k][mask] = 0.0
    return o, d


def check(occ, o, d, grid, max_distance=None):
    res = raycast_torch(torch.from_numpy(occ), torch.from_numpy(o), torch.from_numpy(d), grid, max_distance)
    hit, dist, voxel = brute_force(occ, o, d, grid, max_distance)
    np.testing.assert_array_equal(res.hit.numpy(), hit)
    np.testing.assert_array_equal(res.voxel.numpy(), voxel)
    np.testing.assert_allclose(res.distance.numpy(), dist.astype(np.float32), rtol=1e-6, atol=1e-5)
    assert res.distance.dtype == torch.float32 and res.voxel.dtype == torch.int64
    return res


@pytest.mark.parametrize("seed,p_occ", [(0, 0.05), (1, 0.15), (2, 0.4)])
def test_reference_matches_brute_force_anisotropic(seed, p_occ):
    rng = np.random.default_rng(seed)
    occ = rng.random(ANISO.dims) < p_occ
    o, d = random_rays(rng, ANISO, 3000)
    res = check(occ, o, d, ANISO)
    # The sample exercises hits, misses and outside origins.
    outside = ~np.all((o >= ANISO.range_min) & (o < ANISO.range_max), axis=1)
    assert res.hit.any() and (~res.hit).any()
    assert res.hit.numpy()[outside].any() and (~res.hit.numpy()[outside]).any()


def test_reference_max_distance_matches_brute_force():
    rng = np.random.default_rng(5)
    occ = rng.random(ANISO.dims) < 0.1
    o, d = random_rays(rng, ANISO, 2000)
    full = check(occ, o, d, ANISO)
    limited = check(occ, o, d, ANISO, max_distance=1.2)
    assert limited.hit.sum() < full.hit.sum()
    # Per-ray limits as a tensor.
    md = rng.uniform(0.1, 5.0, size=len(o))
    res = raycast_torch(torch.from_numpy(occ), torch.from_numpy(o), torch.from_numpy(d), ANISO, torch.from_numpy(md))
    for i in range(0, len(o), 97):
        h, _, v = brute_force(occ, o[i:i + 1], d[i:i + 1], ANISO, md[i])
        assert bool(res.hit[i]) == bool(h[0]) and res.voxel[i].tolist() == v[0].tolist()


def test_hand_computed_axis_rays_and_exit_distance():
    g = GridSpec.from_range("iso", (0.0, 0.0, 0.0, 4.0, 2.0, 1.2), 0.4)  # 10 x 5 x 3
    occ = torch.zeros(g.dims, dtype=torch.bool)
    occ[5, 2, 1] = True
    c = torch.tensor(g.voxel_centers(np.array([[1, 2, 1], [8, 2, 1], [5, 2, 1]])), dtype=torch.float32)
    o = torch.stack([c[0], c[1], c[0], c[0] + torch.tensor([-3.0, 0, 0]), c[2] + torch.tensor([0, 0, 5.0])])
    d = torch.tensor([[2.0, 0, 0], [-3.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0], [0, 0, -0.1]])
    res = raycast(occ, o, d, g, backend="torch")
    assert res.hit.tolist() == [True, True, False, True, True]
    # +x from the centre of voxel 1 (x = 0.6): exits voxel 5 at x = 2.4.
    # -x from voxel 8 (x = 3.4): exits voxel 5 at x = 2.0; from outside at x = -2.4: exits at 2.4;
    # straight down from z = 5.6 above voxel (5, 2, 1): exits its bottom at z = 0.4.
    np.testing.assert_allclose(res.distance.tolist(), [1.8, 1.4, np.inf, 4.8, 5.2], rtol=1e-6)
    assert res.voxel.tolist() == [[5, 2, 1], [5, 2, 1], [-1, -1, -1], [5, 2, 1], [5, 2, 1]]
    # max_distance counts voxels entered before it: voxel 5 is entered at 1.4 m on ray 0.
    assert not raycast(occ, o[:1], d[:1], g, max_distance=1.3, backend="torch").hit.item()
    assert raycast(occ, o[:1], d[:1], g, max_distance=1.5, backend="torch").hit.item()


def test_origin_in_occupied_voxel_hits_it_and_misses_are_reported():
    g = ANISO
    occ = torch.zeros(g.dims, dtype=torch.bool)
    occ[3, 4, 2] = True
    centre = torch.tensor(g.voxel_centers(np.array([[3, 4, 2]])), dtype=torch.float64)
    o = torch.cat([centre, torch.tensor([[-10.0, 0.0, 0.0], [0.0, 0.0, 50.0]], dtype=torch.float64)])
    d = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.2, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    res = raycast_torch(occ, o, d, g)
    assert res.hit.tolist() == [True, False, False]
    assert res.voxel[0].tolist() == [3, 4, 2]
    assert res.distance[0].item() == pytest.approx(0.15)  # half of the 0.3 m y-size
    assert torch.isinf(res.distance[1:]).all() and (res.voxel[1:] == -1).all()


def test_empty_input_and_bad_input():
    g = ANISO
    occ = torch.ones(g.dims, dtype=torch.bool)
    res = raycast_torch(occ, torch.zeros(0, 3), torch.zeros(0, 3), g)
    assert res.hit.shape == (0,) and res.distance.shape == (0,) and res.voxel.shape == (0, 3)
    with pytest.raises(ValueError, match="non-zero"):
        raycast_torch(occ, torch.zeros(1, 3), torch.zeros(1, 3), g)
    with pytest.raises(ValueError, match="shape"):
        raycast_torch(occ[:-1], torch.zeros(1, 3), torch.ones(1, 3), g)


def test_ground_plane_distances_on_occ3d_like_grid():
    """Rays from 1.8 m down onto a flat ground layer: distance = exit of the ground voxel."""
    g = GridSpec.from_range("g", (-8.0, -8.0, -1.0, 8.0, 8.0, 5.4), 0.4)
    occ = torch.zeros(g.dims, dtype=torch.bool)
    occ[:, :, 0] = True  # z in [-1.0, -0.6)
    n = 360
    az = torch.arange(n, dtype=torch.float64) * (2 * torch.pi / n)
    pitch = torch.full((n,), -0.5)
    d = torch.stack([torch.cos(pitch) * torch.cos(az), torch.cos(pitch) * torch.sin(az), torch.sin(pitch)], 1)
    o = torch.tensor([[0.1, 0.2, 1.8]], dtype=torch.float64).expand(n, 3)
    res = raycast_torch(occ, o, d, g)
    assert res.hit.all() and (res.voxel[:, 2] == 0).all()
    # Exit through the bottom face z = -1.0 unless the ray leaves the ground voxel sideways first.
    bottom = (1.8 + 1.0) / torch.sin(torch.tensor(0.5, dtype=torch.float64))
    top = (1.8 + 0.6) / torch.sin(torch.tensor(0.5, dtype=torch.float64))
    assert ((res.distance.double() > top) & (res.distance.double() <= bottom + 1e-5)).all()


def test_axis_rays_with_origins_on_voxel_faces():
    """Origins exactly on voxel faces, rays along axes: a face belongs to the upper voxel
    ([min, max) per voxel), and a ray leaving a face downwards starts in the lower voxel.

    The grid is anisotropic with power-of-two sizes so that faces are exact in floating point
    (elsewhere "on a face" is only defined up to rounding of ``(p - min) / size``).
    """
    g = GridSpec("dyadic", (-2.0, -1.5, -0.5), (0.5, 0.25, 0.125), (8, 10, 6))
    rng = np.random.default_rng(9)
    occ = rng.random(g.dims) < 0.2
    n = 800
    lo, vs = np.asarray(g.range_min), np.asarray(g.voxel_size)
    faces = lo + vs * rng.integers(-2, np.asarray(g.dims) + 3, size=(n, 3))  # inside, on and beyond the range
    o = np.where(rng.random((n, 3)) < 0.6, faces, rng.uniform(lo - 1, np.asarray(g.range_max) + 1, (n, 3)))
    d = np.zeros((n, 3))
    axis = rng.integers(0, 3, n)
    d[np.arange(n), axis] = rng.choice([-1.0, 1.0], n) * rng.uniform(0.1, 3.0, n)
    d[: n // 4, (axis[: n // 4] + 1) % 3] = rng.normal(size=n // 4)  # some in axis planes
    res = check(occ, o, d, g)
    assert res.hit.any() and (~res.hit).any()
