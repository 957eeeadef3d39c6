"""BEVFormer spatial cross-attention on a hand-made two-camera rig.

Camera A sits at x = -3 m looking along +x, camera B at x = +3 m looking along -x (both 1.5 m
up, 90 deg horizontal field of view), so some BEV cells are seen by one camera, some by both
(between the cameras) and some by none (beside them). Sample 1 of the batch has the rig moved
2 m along +y, so the two samples see different cells.
"""

import os

if os.environ.get("OCC_OPS_TEST_DEVICE", "cpu") == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # the kernel variant below runs on the interpreter

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from occ_core.grid import GridSpec  # noqa: E402
from occ_core.models.bevformer_sca import (BEVQueries, SpatialCrossAttention, bev_to_map, pillar_anchors,  # noqa: E402
                                           pillar_heights)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:triton.*")
DEV = torch.device(os.environ.get("OCC_OPS_TEST_DEVICE", "cpu"))  # where the kernel variant runs

GRID = GridSpec("bev", (-8.0, -8.0, -1.0), (1.0, 1.0, 4.0), (16, 16, 1))
H, W = 24, 32
K = np.array([[16.0, 0.0, 15.5], [0.0, 16.0, 11.5], [0.0, 0.0, 1.0]])
C = 8
LEVELS = [(6, 8), (3, 4)]


def camera_pose(position, forward) -> np.ndarray:
    """T_base_from_cam of an optical camera (x right, y down, z forward) looking along a level
    ``forward`` direction of base_link."""
    z = np.asarray(forward, dtype=np.float64)
    x = np.cross(z, [0.0, 0.0, 1.0])
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, position
    return T


def rig(batch=2):
    poses = []
    for b in range(batch):
        dy = 2.0 * b
        poses.append([camera_pose([-3.0, dy, 1.5], [1, 0, 0]), camera_pose([3.0, dy, 1.5], [-1, 0, 0])])
    T = torch.tensor(np.asarray(poses), dtype=torch.float32)
    Ks = torch.tensor(K, dtype=torch.float32).expand(batch, 2, 3, 3).clone()
    return Ks, T


def direct_projection(anchors: np.ndarray, T_base_from_cam: np.ndarray):
    """(Q, A) visibility and (Q, A, 2) normalised pixel positions, projected by hand."""
    T = np.linalg.inv(T_base_from_cam)
    p = anchors @ T[:3, :3].T + T[:3, 3]
    z = p[..., 2]
    u = K[0, 0] * p[..., 0] / z + K[0, 2]
    v = K[1, 1] * p[..., 1] / z + K[1, 2]
    x, y = (u + 0.5) / W, (v + 0.5) / H  # pixel centres at integers
    return (z > 0.1) & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1), np.stack([x, y], -1)


def make_sca(seed=0, **kw):
    torch.manual_seed(seed)
    sca = SpatialCrossAttention(GRID, embed_dims=C, num_heads=2, num_levels=2, num_anchors=2, points_per_anchor=2, **kw)
    with torch.no_grad():  # move away from the zero-initialised start so every part matters
        for lin in (sca.attention.sampling_offsets, sca.attention.attention_weights, sca.output_proj):
            lin.weight.normal_(0.0, 0.3)
            lin.bias.normal_(0.0, 0.3)
    return sca.eval()


def inputs(batch=2, cams=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch * cams, C, h, w, generator=g) for h, w in LEVELS]
    query = torch.randn(batch, GRID.dims[0] * GRID.dims[1], C, generator=g)
    pos = torch.randn(batch, GRID.dims[0] * GRID.dims[1], C, generator=g)
    return feats, query, pos


def test_anchors_queries_and_positional_encoding_layout():
    h = pillar_heights(GRID, 2)
    torch.testing.assert_close(h, torch.tensor([0.0, 2.0]))  # centres of two slices of z in [-1, 3)
    anchors = pillar_anchors(GRID, h)
    xs, ys, _ = GRID.axis_centers()
    X, Y = GRID.dims[:2]
    assert anchors.shape == (X * Y, 2, 3)
    for ix, iy in ((0, 0), (3, 11), (15, 2)):
        q = ix * Y + iy
        torch.testing.assert_close(anchors[q], torch.tensor([[xs[ix], ys[iy], 0.0], [xs[ix], ys[iy], 2.0]],
                                                            dtype=torch.float32))
    bq = BEVQueries(GRID, 6)
    q, pos = bq(3)
    assert q.shape == pos.shape == (3, X * Y, 6)
    torch.testing.assert_close(pos[2, 5 * Y + 9], torch.cat([bq.x_embed.weight[5], bq.y_embed.weight[9]]))
    assert torch.equal(q[1], bq.queries.weight)
    m = bev_to_map(pos, GRID)
    assert m.shape == (3, 6, X, Y) and torch.equal(m[1, :, 5, 9], pos[1, 5 * Y + 9])
    with pytest.raises(ValueError, match="bev_to_map"):
        bev_to_map(pos[:, :-1], GRID)


def test_visibility_matches_direct_projection():
    Ks, T = rig()
    sca = make_sca()
    feats, query, pos = inputs()
    out = sca(query, feats, Ks, T, (H, W), pos)
    proj = out.projection
    anchors = sca.anchors.double().numpy()
    for b in range(2):
        for n in range(2):
            vis, ref = direct_projection(anchors, T[b, n].double().numpy())
            assert np.array_equal(proj.anchor_visible[b, n].numpy(), vis), (b, n)
            assert np.array_equal(proj.seen[b, n].numpy(), vis.any(-1)), (b, n)
            np.testing.assert_allclose(proj.reference_points[b, n].numpy()[vis], ref[vis], atol=1e-5)
    counts = out.num_cameras
    assert torch.equal(counts, proj.seen.sum(1))
    # The rig gives every case, and the two samples (rig moved along y) see different cells.
    assert all(bool((counts == k).any()) for k in (0, 1, 2))
    assert not torch.equal(proj.seen[0], proj.seen[1])
    # Sanity of the hand-made rig: a cell between the cameras is seen by both, one beside them by none.
    Y = GRID.dims[1]
    assert counts[0, 8 * Y + 8] == 2 and counts[0, 8 * Y + 0] == 0


def test_unseen_unchanged_and_both_cameras_averaged():
    Ks, T = rig()
    sca = make_sca()
    feats, query, pos = inputs()
    with torch.no_grad():
        both = sca(query, feats, Ks, T, (H, W), pos)
        single = []
        for n in range(2):
            f = [x.view(2, 2, *x.shape[1:])[:, n] for x in feats]
            single.append(sca(query, f, Ks[:, n:n + 1], T[:, n:n + 1], (H, W), pos))
    seen = both.projection.seen  # (B, N, Q)
    upd = both.queries - query
    upd_a, upd_b = single[0].queries - query, single[1].queries - query
    none, only_a, only_b, two = ~seen.any(1), seen[:, 0] & ~seen[:, 1], ~seen[:, 0] & seen[:, 1], seen.all(1)
    assert none.any() and only_a.any() and only_b.any() and two.any()
    assert torch.equal(both.queries[none], query[none])  # exactly: no update at all
    torch.testing.assert_close(upd[only_a], upd_a[only_a], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(upd[only_b], upd_b[only_b], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(upd[two], (upd_a[two] + upd_b[two]) / 2, rtol=1e-5, atol=1e-6)
    assert (upd[two] - upd_a[two]).abs().max() > 1e-3  # the average differs from either camera
    assert upd[~none].abs().amin(-1).gt(0).all()


def test_only_seen_queries_attend():
    Ks, T = rig()
    sca = make_sca()
    feats, query, pos = inputs()
    captured = {}
    sca.attention.register_forward_hook(lambda m, args, out: captured.update(query=args[0], ref=args[2]))
    with torch.no_grad():
        out = sca(query, feats, Ks, T, (H, W), pos)
    seen = out.projection.seen.reshape(4, -1)
    counts = seen.sum(1)
    packed = captured["query"]
    assert packed.shape == (4, int(counts.max()), C)
    for row in range(4):
        idx = seen[row].nonzero().flatten()
        b, n = divmod(row, 2)
        torch.testing.assert_close(packed[row, :len(idx)], (query + pos)[b, idx])
        assert (packed[row, len(idx):] == 0).all()
        torch.testing.assert_close(captured["ref"][row, :len(idx)], out.projection.reference_points[b, n, idx])


def test_forward_backward_reaches_features_and_queries():
    Ks, T = rig()
    sca = make_sca().train()
    bq = BEVQueries(GRID, C)
    q, pos = bq(2)
    feats = [f.requires_grad_() for f in inputs()[0]]
    out = sca(q, feats, Ks, T, (H, W), pos)
    assert out.queries.shape == (2, 256, C)
    (out.queries ** 2).sum().backward()
    for f in feats:
        assert f.grad is not None and f.grad.abs().sum() > 0
    for p in (bq.queries.weight, bq.x_embed.weight, bq.y_embed.weight, sca.attention.sampling_offsets.weight,
              sca.attention.attention_weights.weight, sca.attention.value_proj.weight, sca.output_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # Cameras that see nothing give the features no gradient: sample 1's cameras look straight
    # up from above every anchor.
    T2 = T.clone()
    T2[1] = torch.tensor(camera_pose([0.0, 0.0, 2.5], [1, 0, 0]), dtype=torch.float32) @ torch.tensor(
        [[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # optical z -> base_link +z
    feats2 = [f.detach().clone().requires_grad_() for f in feats]
    out2 = sca(q, feats2, Ks, T2, (H, W), pos)
    assert not out2.projection.seen[1].any()
    out2.queries.sum().backward()
    assert feats2[0].grad[2:].abs().sum() == 0 and feats2[0].grad[:2].abs().sum() > 0


def test_triton_backend_matches_torch():
    Ks, T = (t.to(DEV) for t in rig())
    feats, query, pos = (x.to(DEV) if torch.is_tensor(x) else [f.to(DEV) for f in x] for x in inputs())
    res = []
    for be in ("torch", "triton"):
        sca = make_sca(backend=be).to(DEV)
        fs = [f.clone().requires_grad_() for f in feats]
        out = sca(query, fs, Ks, T, (H, W), pos)
        grads = torch.autograd.grad((out.queries ** 2).sum(), fs)
        res.append((out.queries.detach(),) + grads)
    for a, b in zip(*res):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    Ks, T = rig()
    sca = make_sca()
    feats, query, pos = inputs()
    with pytest.raises(ValueError, match="feature levels"):
        sca(query, feats[:1], Ks, T, (H, W), pos)
    with pytest.raises(ValueError, match=r"feats\[1\]"):
        sca(query, [feats[0], feats[1][:, :4]], Ks, T, (H, W), pos)
    with pytest.raises(ValueError, match="query"):
        sca(query[:, :10], feats, Ks, T, (H, W), pos[:, :10])
    with pytest.raises(ValueError, match="T_base_from_cam"):
        sca(query, feats, Ks, T[:, :1], (H, W), pos)
    with pytest.raises(ValueError, match="heights"):
        SpatialCrossAttention(GRID, embed_dims=C, num_heads=2, num_anchors=2, heights=torch.zeros(3))
