"""bev_pool reference and prepare_bev_pool against a per-point loop; gradcheck."""

import numpy as np
import pytest
import torch

from occ_core.grid import GridSpec
from occ_core.ops.bev_pool import bev_pool, bev_pool_torch, prepare_bev_pool

GRID = GridSpec("bev", (-2.0, -2.0, -1.0), (0.5, 0.5, 1.0), (8, 8, 2))


def frustum(rng, B=2, N=2, D=3, H=4, W=5, margin=1.0, dtype=torch.float64):
    lo = np.asarray(GRID.range_min) - margin
    hi = np.asarray(GRID.range_max) + margin
    pts = rng.uniform(lo, hi, size=(B, N, D, H, W, 3))
    return torch.tensor(pts, dtype=dtype)


def loop_pool(points, depth, feat, grid):
    """Dense (B, C, Z, Y, X) by visiting every frustum point."""
    B, N, D, H, W, _ = points.shape
    C = feat.shape[-1]
    X, Y, Z = grid.dims
    out = np.zeros((B, C, Z, Y, X))
    for b, n, d, h, w in np.ndindex(B, N, D, H, W):
        idx, inside = grid.points_to_voxels(points[b, n, d, h, w][None].numpy())
        if inside[0]:
            x, y, z = idx[0]
            out[b, :, z, y, x] += depth[b * N + n, d, h, w].item() * feat[b * N + n, h, w].numpy()
    return out


def test_plan_ranks_and_intervals():
    rng = np.random.default_rng(0)
    pts = frustum(rng)
    plan = prepare_bev_pool(pts, GRID)
    B, N, D, H, W, _ = pts.shape
    _, inside = GRID.points_to_voxels(pts.reshape(-1, 3).numpy())
    assert plan.ranks_depth.numel() == inside.sum() and 0 < inside.sum() < inside.size
    assert sorted(plan.ranks_depth.tolist()) == np.flatnonzero(inside).tolist()
    assert (plan.ranks_bev[1:] >= plan.ranks_bev[:-1]).all()
    # ranks_feat drops the depth bin of the frustum index (b, n, d, h, w).
    b_n, rem = plan.ranks_depth // (D * H * W), plan.ranks_depth % (H * W)
    assert torch.equal(plan.ranks_feat, b_n * H * W + rem)
    # Intervals tile the sorted points, one per distinct voxel.
    assert plan.interval_lengths.sum() == plan.ranks_bev.numel()
    assert plan.interval_starts.numel() == plan.ranks_bev.unique().numel()
    assert (plan.ranks_bev[plan.interval_starts[1:]] != plan.ranks_bev[plan.interval_starts[1:] - 1]).all()
    sorted_feat = plan.ranks_feat[plan.feat_order]
    assert (sorted_feat[1:] >= sorted_feat[:-1]).all() and plan.feat_interval_lengths.sum() == plan.ranks_feat.numel()


def test_reference_matches_point_loop_and_layouts():
    rng = np.random.default_rng(1)
    pts = frustum(rng)
    B, N, D, H, W, _ = pts.shape
    C = 3
    depth = torch.tensor(rng.random((B * N, D, H, W)))
    feat = torch.tensor(rng.normal(size=(B * N, H, W, C)))
    plan = prepare_bev_pool(pts, GRID)
    out = bev_pool(depth, feat, plan, backend="torch")
    assert out.shape == (B, C, 2, 8, 8)
    np.testing.assert_allclose(out.numpy(), loop_pool(pts, depth, feat, GRID), rtol=1e-12, atol=1e-12)
    bev = bev_pool_torch(depth, feat, plan, flatten_z=True)
    assert bev.shape == (B, 2 * C, 8, 8)
    assert torch.equal(bev[:, C:2 * C], out[:, :, 1]) and torch.equal(bev[:, :C], out[:, :, 0])


def test_reference_gradcheck():
    rng = np.random.default_rng(2)
    pts = frustum(rng, B=1, N=2, D=2, H=2, W=3)
    plan = prepare_bev_pool(pts, GRID)
    depth = torch.tensor(rng.random((2, 2, 2, 3)), requires_grad=True)
    feat = torch.tensor(rng.normal(size=(2, 2, 3, 2)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, f: bev_pool_torch(d, f, plan), (depth, feat))


def test_all_points_outside_and_bad_shapes():
    pts = torch.full((1, 1, 2, 2, 2, 3), 50.0)
    plan = prepare_bev_pool(pts, GRID)
    assert plan.ranks_bev.numel() == 0 and plan.interval_starts.numel() == 0
    out = bev_pool(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 4), plan, backend="torch")
    assert out.shape == (1, 4, 2, 8, 8) and (out == 0).all()
    with pytest.raises(ValueError, match="depth"):
        bev_pool(torch.ones(1, 3, 2, 2), torch.ones(1, 2, 2, 4), plan, backend="torch")
    with pytest.raises(ValueError, match="frustum_points"):
        prepare_bev_pool(torch.zeros(2, 3), GRID)
