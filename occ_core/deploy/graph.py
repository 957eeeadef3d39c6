"""Export-friendly forwards of the trained occupancy models: plain tensors in, logits out.

:class:`DeployGraph` wraps a trained model (its own submodules and weights, nothing copied) and
re-expresses the parts of its forward that ONNX cannot take as they are:

- **LSS splat** (``camera`` / ``fusion`` models): the training path sorts the frustum points
  into voxel intervals (:func:`occ_core.ops.bev_pool.prepare_bev_pool`, BEVPoolv2). Here every
  frustum point's flat voxel index is computed in the graph and ``depth * context`` is
  summed with one scatter-add (:func:`scatter_sum`, ONNX ``ScatterElements`` with
  ``reduction="add"``) into a (B*Z*Y*X + 1, C) buffer whose last row collects the points
  outside the grid. Same sums, another summation order (float32 rounding only).
- **Camera geometry**: ``torch.linalg.inv`` has no ONNX operator; K is inverted in closed form
  (adjugate / determinant) and ``T_base_from_cam`` as the rigid transform it is (R^T, -R^T t).
- **BEVFormer SCA**: the training path gathers ("rebatches") the queries each camera sees into
  a ragged batch (data-dependent sizes). Here every query attends in every camera and the
  results of the cameras that do not see it are masked out: the same per-query result
  (each query's deformable attention does not depend on the other queries), at N times the
  attention work on the (small) BEV.
- **Deformable attention**: the ``F.grid_sample`` reference (ONNX ``GridSample``) with the level
  shapes as Python constants.

Inputs (B = 1 in exported files, N cameras fixed per file, any rig):
    images (B, N, 3, H, W) float32 normalised network-input images;
    intrinsics (B, N, 3, 3) float32 K of those images;
    T_base_from_cam (B, N, 4, 4) float32 camera (optical) -> base_link;
    lidar_features (B, Cl, X', Y', Z') float32: the LiDAR encoder's dense output (LiDAR and
        fusion models: the spconv encoder itself stays in torch, see :data:`NOT_EXPORTABLE`).
Outputs: logits (B, K, X, Y, Z) in base_link; labels (B, X, Y, Z) uint8 and scores (B, X, Y, Z)
float32 (:func:`labels_and_scores`); flow (B, X, Y, Z, 2) m/s for flow models.

With ``fixed_ranks`` (a fixed rig: :func:`frustum_voxel_index` precomputed) the LSS graph takes
no geometry inputs; the indices are a constant of the file.
"""

from __future__ import annotations

import torch
from torch import nn

from occ_core.errors import OccDataError
from occ_core.grid import GridSpec
from occ_core.models.config import ModelConfig
from occ_core.models.lss import LSSViewTransformer, feature_pixel_centres
from occ_core.models.occnerf import rendered_head_output
from occ_core.models.output import thresholded_class_logits
from occ_core.ops.deform_attn import _reference as deform_attn_reference

#: What cannot go into an ONNX file, and why (the exporter's and the backends' errors quote it).
NOT_EXPORTABLE = {
    "lidar": ("the LiDAR encoder (occ_core.models.lidar.LidarEncoder: dynamic voxelization + spconv "
              "SubMConv3d/SparseConv3d) has no ONNX form: spconv builds its gather/scatter index pairs "
              "with a hash table at run time in its own C++/CUDA library, and the voxel count varies per "
              "frame; the exported graph takes its dense output (lidar_features) as an input and the "
              "encoder runs in torch"),
    "cascade": ("the CONet cascade (occ_core.models.cascade.CascadeRefiner) picks a data-dependent number "
                "of voxels (top-k of the coarse prediction, k = occupied count) per sample; it is not "
                "exported"),
}


class ExportError(OccDataError):
    """A model (or part of one) that cannot be exported; the message names the part and why."""


def inv3x3(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse (adjugate / determinant) of (..., 3, 3) matrices."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    A, B, C = e * i - f * h, f * g - d * i, d * h - e * g
    D, E, Fc = c * h - b * i, a * i - c * g, b * g - a * h
    G, H, I = b * f - c * e, c * d - a * f, a * e - b * d
    det = a * A + b * B + c * C
    rows = [torch.stack([A, D, G], -1), torch.stack([B, E, H], -1), torch.stack([C, Fc, I], -1)]
    return torch.stack(rows, -2) / det[..., None, None]


def frustum_points_closed_form(depths: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
                               image_hw: tuple[int, int], feat_hw: tuple[int, int]) -> torch.Tensor:
    """:func:`occ_core.models.lss.frustum_points` with K inverted in closed form:
    (B, N, D, h, w, 3) float32 frustum points in base_link."""
    u, v = feature_pixel_centres(image_hw, feat_hw, intrinsics.device)
    h, w = feat_hw
    D = depths.numel()
    pix = torch.stack([u.view(1, w).expand(h, w), v.view(h, 1).expand(h, w), torch.ones(h, w)], -1)  # (h, w, 3)
    kinv = inv3x3(intrinsics.float())  # (B, N, 3, 3)
    rays = (kinv[:, :, None, None] * pix[None, None, :, :, None, :]).sum(-1)  # (B, N, h, w, 3)
    pts = rays[:, :, None] * depths.view(1, 1, D, 1, 1, 1)  # (B, N, D, h, w, 3) camera frame
    T = T_base_from_cam.float()
    R, t = T[..., :3, :3], T[..., :3, 3]
    world = (R[:, :, None, None, None] * pts[..., None, :]).sum(-1)
    return world + t[:, :, None, None, None]


def voxel_index(points: torch.Tensor, grid: GridSpec, batch: int, exact: bool = False) -> torch.Tensor:
    """Flat voxel index ``((b*Z + z)*Y + y)*X + x`` of (B, ...points..., 3) base_link points, or
    ``B*X*Y*Z`` (the scatter buffer's dump row) outside the grid; (B*P,) int64 in frustum order.

    ``exact``: float64 arithmetic as :func:`~occ_core.ops.bev_pool.prepare_bev_pool` (precomputed
    ranks); in a graph float32 (a point within float32 rounding of a voxel face may land in the
    neighbour voxel).
    """
    X, Y, Z = grid.dims
    dt = torch.float64 if exact else torch.float32
    p = points.reshape(batch, -1, 3).to(dt)
    lo = torch.tensor(grid.range_min, dtype=dt)
    vs = torch.tensor(grid.voxel_size, dtype=dt)
    c = torch.floor((p - lo) / vs)
    inside = ((c >= 0) & (c < torch.tensor([X, Y, Z], dtype=dt))).all(-1)  # (B, P)
    ci = c.to(torch.int64)
    b = torch.arange(batch).view(batch, 1)
    flat = ((b * Z + ci[..., 2]) * Y + ci[..., 1]) * X + ci[..., 0]
    return torch.where(inside, flat, torch.full_like(flat, batch * X * Y * Z)).reshape(-1)


def scatter_sum(values: torch.Tensor, rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """(num_rows, C) sums of the (P, C) ``values`` rows into the rows named by ``rows`` (P,) int64
    (repeats allowed), as ONNX ``ScatterElements`` with ``reduction="add"``: ONNX Runtime's CPU
    provider sums it in one loop. ``index_add`` would export as ``ScatterND``, which that provider
    splits over its threads without atomics, so updates of one row are lost now and then
    (onnxruntime issues 18048 and 23396; ``test_export.py``'s scatter test fails with it)."""
    index = rows.view(-1, 1).expand(-1, values.shape[1])  # one index per element
    return torch.zeros(num_rows, values.shape[1], dtype=values.dtype).scatter_add(0, index, values)


def lss_splat(lss: LSSViewTransformer, feats: torch.Tensor, batch: int, ranks: torch.Tensor) -> torch.Tensor:
    """LSS lift and splat by scatter-add.

    Args:
        feats: (B*N, C_in, h, w) image features.
        batch: B.
        ranks: (B*N*D*h*w,) int64 from :func:`voxel_index` (frustum order b, n, d, h, w).

    Returns:
        (B, C, X', Y', Z') voxel features on the LSS grid (base_link).
    """
    BN, _, h, w = feats.shape
    D, C = lss.D, lss.channels
    X, Y, Z = lss.grid.dims
    x = lss.depth_net(feats)
    depth = x[:, :D].float().softmax(1).reshape(BN, D, h * w, 1)
    ctx = x[:, D:].float().reshape(BN, 1, C, h * w).transpose(2, 3)  # (BN, 1, h*w, C)
    vals = (depth * ctx).reshape(-1, C)  # (B*N*D*h*w, C)
    buf = scatter_sum(vals, ranks, batch * X * Y * Z + 1)
    return buf[:-1].view(batch, Z, Y, X, C).permute(0, 4, 3, 2, 1)


def labels_and_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, K, X, Y, Z) -> labels (B, X, Y, Z) uint8 argmax and scores (B, X, Y, Z) float32,
    the softmax probability of that label, ``1 / sum_k exp(logit_k - max)`` (what
    :func:`occ_core.models.predictor.logits_to_prediction` gives, in the graph: the (K, X, Y, Z)
    logits need not leave it)."""
    m = logits.amax(1, keepdim=True)
    scores = 1.0 / torch.exp(logits - m).sum(1)
    return logits.argmax(1).to(torch.uint8), scores


def _rigid_inverse(T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 4, 4) rigid transforms -> (R^T (..., 3, 3), -R^T t (..., 3))."""
    Rt = T[..., :3, :3].transpose(-1, -2)
    return Rt, -(Rt * T[..., None, :3, 3]).sum(-1)


class DeployGraph(nn.Module):
    """A trained model's inference forward on plain tensors (see the module docstring).

    Args:
        model: a built, trained model (``camera``, ``lidar``, ``fusion`` or ``bevformer``), eval mode.
        cfg: its config.
        fixed_ranks: (B*N*D*h*w,) int64 precomputed LSS voxel indices of a fixed rig, or None
            (geometry as inputs).

    Raises:
        ExportError: a part that cannot be exported (:data:`NOT_EXPORTABLE`).
    """

    def __init__(self, model: nn.Module, cfg: ModelConfig, fixed_ranks: torch.Tensor | None = None):
        super().__init__()
        if getattr(model, "cascade", None) is not None:
            raise ExportError(f"model {cfg.name!r} with 'cascade': {NOT_EXPORTABLE['cascade']}")
        self.model, self.cfg = model.eval(), cfg
        self.kind = "bevformer" if cfg.name == "bevformer" else "occnet"
        self.uses_camera = bool(getattr(model, "uses_camera", False))
        self.uses_lidar = bool(getattr(model, "uses_lidar", False))
        if fixed_ranks is not None and (self.kind != "occnet" or not self.uses_camera):
            raise ExportError(f"model {cfg.name!r}: a fixed-rig (precomputed geometry) graph exists for LSS models only")
        self.register_buffer("fixed_ranks", fixed_ranks, persistent=False)

    # ---------------------------------------------------------------- names of the graph's inputs/outputs
    @property
    def input_names(self) -> list[str]:
        names = []
        if self.uses_camera:
            names.append("images")
            if self.fixed_ranks is None:
                names += ["intrinsics", "T_base_from_cam"]
        if self.uses_lidar:
            names.append("lidar_features")
        return names

    @property
    def output_names(self) -> list[str]:
        return ["logits", "labels", "scores"] + (["flow"] if self.cfg.flow else [])

    # ---------------------------------------------------------------- forward
    def forward(self, *inputs: torch.Tensor):
        named = dict(zip(self.input_names, inputs))
        if self.kind == "bevformer":
            out = self._bevformer(named["images"], named["intrinsics"], named["T_base_from_cam"])
        else:
            out = self._occnet(named)
        logits, flow = out if isinstance(out, tuple) else (out, None)
        if self.cfg.rendering_only:  # as the model's forward hook does
            logits, _ = rendered_head_output(logits, self.cfg, self.model.occ_threshold)
        elif self.model.occ_threshold is not None:
            logits = thresholded_class_logits(logits, self.model.occ_threshold)
        labels, scores = labels_and_scores(logits)
        return (logits, labels, scores) + ((flow,) if flow is not None else ())

    def lss_ranks(self, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """(B*N*D*h*w,) voxel indices of the LSS frustum for this geometry (see :func:`voxel_index`)."""
        m = self.model
        H, W = self.cfg.image.size
        s = self.cfg.backbone.out_stride
        feat_hw = (-(-H // s), -(-W // s))
        if exact:
            from occ_core.models.lss import frustum_points

            pts = frustum_points(m.lss.depths, intrinsics, T_base_from_cam, (H, W), feat_hw)
        else:
            pts = frustum_points_closed_form(m.lss.depths, intrinsics, T_base_from_cam, (H, W), feat_hw)
        return voxel_index(pts, m.lss.grid, intrinsics.shape[0], exact=exact)

    def _occnet(self, named: dict[str, torch.Tensor]):
        m = self.model
        cam = lid = None
        if self.uses_camera:
            images = named["images"]
            B = images.shape[0]
            feats = m.image_encoder(images.flatten(0, 1))
            ranks = self.fixed_ranks
            if ranks is None:
                ranks = self.lss_ranks(named["intrinsics"], named["T_base_from_cam"])
            cam = lss_splat(m.lss, feats, B, ranks)
        if self.uses_lidar:
            lid = named["lidar_features"]
        vox = m.encoder(m.fusion(cam, lid)) if m.fusion is not None else m.encoder(cam if cam is not None else lid)
        logits = m.head(vox)
        return (logits, m.flow_head(vox)) if m.flow_head is not None else logits

    # ---------------------------------------------------------------- BEVFormer
    def _bevformer(self, images: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor):
        m = self.model
        B, N, _, H, W = images.shape
        f = m.input_proj(m.image_encoder(images.flatten(0, 1)))  # (B*N, C, h, w)
        query, pos = m.bev_queries(B)
        x = query
        for layer in m.layers:
            x = layer.norms[0](_tsa(layer.tsa, x, pos))
            x = layer.norms[1](_sca(layer.sca, x, f, intrinsics, T_base_from_cam, (H, W), pos))
            x = layer.norms[2](x + layer.ffn(x))
        X, Y = m.bev_grid.dims[:2]
        bev = x.view(B, X, Y, -1).permute(0, 3, 1, 2)
        vox = m.decoder(bev) if m.decoder is not None else bev[..., None]
        logits = m.head(vox)
        return (logits, m.flow_head(vox)) if m.flow_head is not None else logits


def _tsa(tsa, query: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
    """:class:`~occ_core.models.bevformer.TemporalSelfAttention` of a first frame (no previous
    BEV: the current queries twice), level shapes as constants."""
    B, Q, C = query.shape
    X, Y = tsa.bev_hw
    NH, Fr, P = tsa.num_heads, tsa.num_frames, tsa.num_points
    q = torch.cat([query, query + query_pos], -1)
    offsets = tsa.sampling_offsets(q).view(B, Q, NH, Fr, P, 2)
    weights = tsa.attention_weights(q).view(B, Q, NH, Fr, P).softmax(-1)
    scale = torch.tensor([Y, X], dtype=offsets.dtype)
    loc = tsa.reference_points[None, :, None, None, None] + offsets / scale
    loc = loc.permute(0, 3, 1, 2, 4, 5).reshape(B * Fr, Q, NH, 1, P, 2)
    weights = weights.permute(0, 3, 1, 2, 4).reshape(B * Fr, Q, NH, 1, P)
    value = tsa.value_proj(torch.stack([query, query], 1).view(B * Fr, Q, C)).view(B * Fr, Q, NH, C // NH)
    out = deform_attn_reference(value, [(X, Y)], [0], loc, weights).view(B, Fr, Q, C).mean(1)
    return query + tsa.output_proj(out)


def _sca(sca, query: torch.Tensor, feat: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
         image_hw: tuple[int, int], query_pos: torch.Tensor) -> torch.Tensor:
    """:class:`~occ_core.models.bevformer_sca.SpatialCrossAttention` (one feature level) with every
    query attending in every camera and the cameras that do not see it masked out."""
    B, Q, C = query.shape
    N = intrinsics.shape[1]
    H, W = image_hw
    A = sca.anchors.shape[1]
    # anchors into the cameras (occ_core.models.lss.project_to_cameras with a rigid inverse)
    Rt, t = _rigid_inverse(T_base_from_cam.float())  # (B, N, 3, 3), (B, N, 3)
    pts = sca.anchors.reshape(1, 1, Q * A, 1, 3)
    pc = (Rt[:, :, None] * pts).sum(-1) + t[:, :, None]  # (B, N, Q*A, 3)
    z = pc[..., 2]
    uvw = (intrinsics.float()[:, :, None] * pc[..., None, :]).sum(-1)
    u = uvw[..., 0] / z.clamp_min(1e-3)
    v = uvw[..., 1] / z.clamp_min(1e-3)
    g = torch.stack([(u + 0.5) / W * 2 - 1, (v + 0.5) / H * 2 - 1], -1)
    visible = (z > 0.1) & (g.abs() <= 1).all(-1)  # (B, N, Q*A)
    ref = ((g + 1) / 2).reshape(B * N, Q, A, 2)
    seen = visible.reshape(B, N, Q, A).any(-1)  # (B, N, Q)

    att = sca.attention
    NH, Pa = att.num_heads, att.points_per_anchor
    h, w = feat.shape[-2:]
    q_in = (query + query_pos)[:, None].expand(B, N, Q, C).reshape(B * N, Q, C)
    value = att.value_proj(feat.flatten(2).transpose(1, 2)).view(B * N, h * w, NH, C // NH)
    offsets = att.sampling_offsets(q_in).view(B * N, Q, NH, 1, Pa, A, 2)
    weights = att.attention_weights(q_in).view(B * N, Q, NH, att.num_points).softmax(-1)
    wh = torch.tensor([w, h], dtype=offsets.dtype)
    loc = ref[:, :, None, None, None] + offsets / wh
    attended = deform_attn_reference(value, [(h, w)], [0], loc.view(B * N, Q, NH, 1, att.num_points, 2),
                                     weights.view(B * N, Q, NH, 1, att.num_points))  # (B*N, Q, C)
    seen_f = seen.to(attended.dtype)
    slots = (attended.view(B, N, Q, C) * seen_f[..., None]).sum(1)
    num = seen_f.sum(1)  # (B, Q)
    slots = slots / num.clamp_min(1)[..., None]
    update = sca.output_proj(slots) * (num > 0).to(slots.dtype)[..., None]
    return query + update


__all__ = ["DeployGraph", "ExportError", "NOT_EXPORTABLE", "inv3x3", "frustum_points_closed_form", "voxel_index",
           "scatter_sum", "lss_splat"]
