"""Voxelization references against straightforward per-point loops (mmdet3d semantics)."""

import math

import numpy as np
import pytest
import torch

from occ_core.grid import GridSpec
from occ_core.ops.voxelize import dynamic_voxelize, hard_voxelize, point_voxel_coords

GRID = GridSpec("vox", (-2.0, -1.0, -0.5), (0.5, 0.25, 0.5), (8, 8, 3))


def loop_coords(points: np.ndarray, grid: GridSpec):
    """Per-point [z, y, x] as mmdet3d's CPU loop computes it (float32), or None."""
    out = []
    for p in points:
        c = [math.floor(np.float32(np.float32(p[a]) - np.float32(grid.range_min[a])) / np.float32(grid.voxel_size[a]))
             for a in range(3)]
        ok = all(0 <= c[a] < grid.dims[a] for a in range(3))
        out.append((c[2], c[1], c[0]) if ok else None)
    return out


def random_points(rng, n, c=4, margin=0.7):
    lo = np.asarray(GRID.range_min)
    hi = np.asarray(GRID.range_max)
    xyz = rng.uniform(lo - margin, hi + margin, size=(n, 3))
    feats = rng.normal(size=(n, c - 3))
    return torch.tensor(np.concatenate([xyz, feats], 1), dtype=torch.float32)


def test_point_coords_match_loop_and_boundaries():
    rng = np.random.default_rng(0)
    pts = random_points(rng, 400)
    # Exact faces: range_min is inside, range_max is outside.
    pts[0, :3] = torch.tensor(GRID.range_min)
    pts[1, :3] = torch.tensor(GRID.range_max)
    pvc = point_voxel_coords(pts, GRID, backend="torch")
    expect = loop_coords(pts.numpy(), GRID)
    for i, e in enumerate(expect):
        assert pvc.coords[i].tolist() == (list(e) if e else [-1, -1, -1])
        if e:
            z, y, x = e
            assert pvc.flat[i].item() == (z * GRID.dims[1] + y) * GRID.dims[0] + x
        else:
            assert pvc.flat[i].item() == -1
    assert pvc.coords[0].tolist() == [0, 0, 0] and pvc.flat[1].item() == -1
    assert 0 < (pvc.flat < 0).sum() < len(pts)


def test_dynamic_voxelize_means_and_indices():
    rng = np.random.default_rng(1)
    pts = random_points(rng, 500, c=5)
    pts = torch.cat([pts, pts[:50]])  # duplicate points: several per voxel
    res = dynamic_voxelize(pts, GRID, backend="torch")
    expect = loop_coords(pts.numpy(), GRID)
    groups: dict = {}
    for i, e in enumerate(expect):
        if e is not None:
            groups.setdefault(e, []).append(i)
    keys = sorted(groups)  # (z, y, x) lexicographic = flat order
    assert res.coords.tolist() == [list(k) for k in keys]
    assert res.num_points.tolist() == [len(groups[k]) for k in keys]
    for row, k in enumerate(keys):
        np.testing.assert_allclose(res.features[row].numpy(), pts[groups[k]].numpy().mean(0), rtol=1e-5, atol=1e-6)
        assert (res.point_voxel[groups[k]] == row).all()
    outside = [i for i, e in enumerate(expect) if e is None]
    assert (res.point_voxel[outside] == -1).all() and (res.point_coords[outside] == -1).all()


def loop_hard(points: np.ndarray, grid, max_points, max_voxels):
    """mmdet3d/OpenPCDet hard_voxelize, point by point."""
    coords = loop_coords(points, grid)
    vid_of, voxels, num, order = {}, [], [], []
    for i, c in enumerate(coords):
        if c is None:
            continue
        if c not in vid_of:
            if len(order) >= max_voxels:
                continue
            vid_of[c] = len(order)
            order.append(c)
            voxels.append(np.zeros((max_points, points.shape[1]), np.float32))
            num.append(0)
        v = vid_of[c]
        if num[v] < max_points:
            voxels[v][num[v]] = points[i]
            num[v] += 1
    return np.array(voxels).reshape(-1, max_points, points.shape[1]), np.array(order).reshape(-1, 3), np.array(num)


@pytest.mark.parametrize("max_points,max_voxels", [(3, 1000), (2, 25), (5, 1)])
def test_hard_voxelize_matches_point_loop(max_points, max_voxels):
    rng = np.random.default_rng(2)
    pts = random_points(rng, 300)
    pts = torch.cat([pts, pts[rng.permutation(300)[:120]] + 0.01])  # crowd some voxels
    res = hard_voxelize(pts, GRID, max_points, max_voxels, backend="torch")
    v, c, n = loop_hard(pts.numpy(), GRID, max_points, max_voxels)
    assert res.coords.tolist() == c.tolist()
    assert res.num_points.tolist() == n.tolist()
    np.testing.assert_array_equal(res.voxels.numpy(), v)
    assert res.voxels.shape[1:] == (max_points, 4)
    assert res.num_points.max() <= max_points and len(res.coords) <= max_voxels


def test_empty_and_all_outside():
    empty = torch.zeros(0, 4)
    d = dynamic_voxelize(empty, GRID, backend="torch")
    assert d.features.shape == (0, 4) and d.coords.shape == (0, 3) and d.point_voxel.shape == (0,)
    h = hard_voxelize(empty, GRID, 4, 10, backend="torch")
    assert h.voxels.shape == (0, 4, 4) and h.coords.shape == (0, 3) and h.num_points.shape == (0,)
    far = torch.full((5, 4), 100.0)
    d = dynamic_voxelize(far, GRID, backend="torch")
    assert d.features.shape[0] == 0 and (d.point_voxel == -1).all()
    assert hard_voxelize(far, GRID, 4, 10, backend="torch").voxels.shape[0] == 0
    with pytest.raises(ValueError, match="N, C>=3"):
        dynamic_voxelize(torch.zeros(3, 2), GRID)
