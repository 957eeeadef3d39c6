"""BEVFormer's spatial cross-attention (SCA) and its learnable BEV queries.

BEV queries live on the x/y cells of a :class:`~occ_core.grid.GridSpec` in ``base_link``: query
``q = ix * Y + iy`` sits at the cell centre ``(x_ix, y_iy)`` (the grid's ``[x, y]`` order;
:func:`bev_to_map` turns (B, Q, C) into a (B, C, X, Y) map). Each query owns a pillar of
``num_anchors`` 3-D anchors at heights spread over the grid's z range (:func:`pillar_heights`).

Spatial cross-attention (:class:`SpatialCrossAttention`), per sample and camera:

1. project every anchor into the camera with K and ``T_cam_from_base`` (the inverse of
   ``T_base_from_cam``; :func:`occ_core.models.lss.project_to_cameras`, the project's pixel
   convention: integer pixel coordinates are pixel centres); an anchor is visible when it is
   more than 0.1 m in front of the camera and lands inside the image; the reference point is
   its normalised image position ``((u + 0.5) / W, (v + 0.5) / H)`` in [0, 1];
2. a query is *seen* by a camera when any of its anchors is visible there; per (sample,
   camera) the seen queries are gathered ("rebatched") into a (B*N, max_len, C) batch so that
   only they attend (rows past a camera's count are padding whose results are dropped);
3. deformable attention (:class:`DeformableCameraAttention`) over that camera's multi-scale
   features: around each of the query's projected anchors, ``points_per_anchor`` learned offsets
   (in feature pixels of each level) and learned weights (softmax over levels and points);
4. the per-camera results are summed per query and divided by the number of cameras that see
   it, projected (``output_proj``) and added to the query (residual).

Shapes: B samples, N cameras, Q = X*Y queries, C channels (``embed_dims``), A anchors per
pillar, L feature levels. Features: L tensors (B*N, C, h_l, w_l), camera-major per sample
(row ``b*N + n``), every level covering the whole network-input image of size ``image_hw``.

Differences from BEVFormer's code, on purpose: each sample uses its own visibility (BEVFormer
rebatches every sample with sample 0's indices); queries no camera sees get a zero update
(BEVFormer adds ``output_proj``'s bias to them too); camera and level embeddings, temporal
self-attention and the encoder stack are not part of this block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from occ_core.grid import GridSpec
from occ_core.models.lss import project_to_cameras
from occ_core.ops.deform_attn import ms_deform_attn


def pillar_heights(grid: GridSpec, num_anchors: int) -> torch.Tensor:
    """(A,) float32 anchor heights in metres (base_link z): the centres of ``num_anchors`` equal
    slices of the grid's z range (BEVFormer spreads its 4 anchors the same way over
    ``pc_range``'s z)."""
    if num_anchors <= 0:
        raise ValueError(f"num_anchors must be >= 1, got {num_anchors}")
    lo, hi = grid.range_min[2], grid.range_max[2]
    return lo + (hi - lo) * (torch.arange(num_anchors, dtype=torch.float32) + 0.5) / num_anchors


def bev_cell_centres(grid: GridSpec) -> torch.Tensor:
    """(X*Y, 2) float32 ``(x, y)`` in base_link of the BEV cells, query order ``ix * Y + iy``."""
    xs, ys, _ = grid.axis_centers()
    gx, gy = torch.meshgrid(torch.as_tensor(xs, dtype=torch.float32), torch.as_tensor(ys, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([gx, gy], -1).view(-1, 2)


def pillar_anchors(grid: GridSpec, heights: torch.Tensor) -> torch.Tensor:
    """(X*Y, A, 3) float32 anchor points in base_link: every BEV cell centre at every height."""
    xy = bev_cell_centres(grid)
    h = torch.as_tensor(heights, dtype=torch.float32).view(1, -1, 1).expand(xy.shape[0], -1, 1)
    return torch.cat([xy[:, None].expand(-1, h.shape[1], 2), h], -1)


def bev_to_map(x: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """BEV queries (B, X*Y, C) -> map (B, C, X, Y) indexed ``[x, y]``."""
    X, Y = grid.dims[:2]
    if x.ndim != 3 or x.shape[1] != X * Y:
        raise ValueError(f"bev_to_map: expected (B, {X * Y}, C) for grid {grid.name!r}, got {tuple(x.shape)}")
    return x.view(x.shape[0], X, Y, -1).permute(0, 3, 1, 2)


@dataclass
class AnchorProjection:
    """Anchors projected into the cameras.

    Attributes:
        reference_points: (B, N, Q, A, 2) normalised image ``(x, y)``; in [0, 1] where visible.
        anchor_visible: (B, N, Q, A) bool, in front of the camera (> 0.1 m) and inside the image.
        seen: (B, N, Q) bool, any anchor of the query visible in that camera.
    """

    reference_points: torch.Tensor
    anchor_visible: torch.Tensor
    seen: torch.Tensor


def project_anchors(anchors: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
                    image_hw: tuple[int, int]) -> AnchorProjection:
    """Project (Q, A, 3) base_link anchors into every camera.

    Args:
        anchors: (Q, A, 3) base_link points.
        intrinsics: (B, N, 3, 3) K of the network-input images.
        T_base_from_cam: (B, N, 4, 4) camera (optical: x right, y down, z forward) -> base_link.
        image_hw: (H, W) of the network-input images.
    """
    if intrinsics.ndim != 4 or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"project_anchors: intrinsics must be (B, N, 3, 3), got {tuple(intrinsics.shape)}")
    if tuple(T_base_from_cam.shape) != (*intrinsics.shape[:2], 4, 4):
        raise ValueError(f"project_anchors: T_base_from_cam must be {(*intrinsics.shape[:2], 4, 4)}, "
                         f"got {tuple(T_base_from_cam.shape)}")
    Q, A, _ = anchors.shape
    B, N = intrinsics.shape[:2]
    refs, vis = [], []
    for b in range(B):
        grid, ok = project_to_cameras(anchors.reshape(-1, 3), intrinsics[b], T_base_from_cam[b], image_hw)
        refs.append((grid + 1) / 2)  # [-1, 1] (align_corners=False) -> [0, 1]
        vis.append(ok)
    ref = torch.stack(refs).view(B, N, Q, A, 2)
    visible = torch.stack(vis).view(B, N, Q, A)
    return AnchorProjection(ref, visible, visible.any(-1))


class DeformableCameraAttention(nn.Module):
    """BEVFormer's ``MSDeformableAttention3D``: queries attend to one camera's multi-scale
    features around their A projected anchors.

    For every head, level, anchor and point a sampling offset (in feature pixels of that level)
    and a weight (softmax over all levels x anchors x points of a head) come from the query;
    sampling location = anchor reference point + offset / (W_l, H_l). Point index
    ``p * A + a`` (anchor fastest), BEVFormer's layout.
    """

    def __init__(self, embed_dims: int, num_heads: int, num_levels: int, num_anchors: int, points_per_anchor: int,
                 backend: str | None = None):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} must be divisible by num_heads {num_heads}")
        self.embed_dims, self.num_heads, self.num_levels = embed_dims, num_heads, num_levels
        self.num_anchors, self.points_per_anchor = num_anchors, points_per_anchor
        self.num_points = num_anchors * points_per_anchor
        self.backend = backend
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * self.num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * self.num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's start: zero offset weights, each head's points fanned out along its
        own direction at 1, 2, ... pixels; uniform attention; Xavier value projection."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        direction = torch.stack([angle.cos(), angle.sin()], -1)
        direction = direction / direction.abs().amax(-1, keepdim=True)  # on the unit square
        scale = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        bias = direction[:, None, :, None] * scale[None, None, None, :]  # (heads, 1, 2, P)
        bias = bias.expand(-1, self.num_levels, -1, -1).permute(0, 1, 3, 2)  # (heads, L, P, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)

    def forward(self, query: torch.Tensor, value: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        """Attend.

        Args:
            query: (M, Lq, C) (M = cameras x samples), positional encoding already added.
            value: (M, K, C) the camera's features, levels flattened (K = sum h_l * w_l).
            reference_points: (M, Lq, A, 2) normalised image ``(x, y)`` of the query's anchors.
            spatial_shapes: (L, 2) int64 ``(h_l, w_l)``; level_start_index: (L,) int64.

        Returns:
            (M, Lq, C)
        """
        M, Lq, _ = query.shape
        NH, L, A, Pa = self.num_heads, self.num_levels, self.num_anchors, self.points_per_anchor
        v = self.value_proj(value).view(M, value.shape[1], NH, -1)
        offsets = self.sampling_offsets(query).view(M, Lq, NH, L, Pa, A, 2)
        weights = self.attention_weights(query).view(M, Lq, NH, L * self.num_points).softmax(-1)
        wh = spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (w, h)
        loc = reference_points[:, :, None, None, None] + offsets / wh[None, None, None, :, None, None]
        return ms_deform_attn(v, spatial_shapes, level_start_index, loc.view(M, Lq, NH, L, self.num_points, 2),
                              weights.view(M, Lq, NH, L, self.num_points), backend=self.backend)


@dataclass
class SCAOutput:
    """Result of :class:`SpatialCrossAttention`.

    Attributes:
        queries: (B, Q, C) updated BEV queries (input + update; unseen queries unchanged).
        projection: the anchors' :class:`AnchorProjection` (reference points and visibility).
        num_cameras: (B, Q) int64 cameras that see each query (the divisor of the average).
    """

    queries: torch.Tensor
    projection: AnchorProjection
    num_cameras: torch.Tensor


class SpatialCrossAttention(nn.Module):
    """BEV queries (B, Q, C) + multi-camera multi-scale features -> updated queries (B, Q, C).

    See the module docstring for the steps. ``grid`` sets the BEV cells (x/y) and the anchor
    heights (z range); ``heights`` overrides :func:`pillar_heights`.
    """

    def __init__(self, grid: GridSpec, embed_dims: int = 64, num_heads: int = 4, num_levels: int = 2,
                 num_anchors: int = 4, points_per_anchor: int = 2, heights: torch.Tensor | None = None,
                 dropout: float = 0.0, backend: str | None = None):
        super().__init__()
        self.grid = grid
        self.embed_dims, self.num_levels = embed_dims, num_levels
        h = pillar_heights(grid, num_anchors) if heights is None else torch.as_tensor(heights, dtype=torch.float32)
        if h.ndim != 1 or h.numel() != num_anchors:
            raise ValueError(f"heights must be ({num_anchors},) metres, got {tuple(h.shape)}")
        self.register_buffer("anchors", pillar_anchors(grid, h), persistent=False)  # (Q, A, 3) base_link
        self.attention = DeformableCameraAttention(embed_dims, num_heads, num_levels, num_anchors, points_per_anchor,
                                                   backend)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)
        self.dropout = nn.Dropout(dropout)

    @property
    def num_queries(self) -> int:
        return self.anchors.shape[0]

    def _flatten_levels(self, feats: list[torch.Tensor], M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L maps (M, C, h_l, w_l) -> value (M, K, C), spatial_shapes (L, 2), level_start_index (L,)."""
        if len(feats) != self.num_levels:
            raise ValueError(f"SpatialCrossAttention: expected {self.num_levels} feature levels, got {len(feats)}")
        for i, f in enumerate(feats):
            if f.ndim != 4 or f.shape[0] != M or f.shape[1] != self.embed_dims:
                raise ValueError(f"SpatialCrossAttention: feats[{i}] must be (B*N={M}, C={self.embed_dims}, h, w), "
                                 f"got {tuple(f.shape)}")
        dev = feats[0].device
        shapes = torch.tensor([f.shape[-2:] for f in feats], dtype=torch.int64, device=dev)
        sizes = shapes.prod(1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        value = torch.cat([f.flatten(2) for f in feats], 2).transpose(1, 2)  # (M, K, C)
        return value, shapes, starts

    def forward(self, query: torch.Tensor, feats: list[torch.Tensor], intrinsics: torch.Tensor,
                T_base_from_cam: torch.Tensor, image_hw: tuple[int, int],
                query_pos: torch.Tensor | None = None) -> SCAOutput:
        """Cross-attend the BEV queries to the cameras.

        Args:
            query: (B, Q, C) BEV queries (Q = X*Y of the grid, order ``ix * Y + iy``).
            feats: L tensors (B*N, C, h_l, w_l), camera features of the network-input images.
            intrinsics: (B, N, 3, 3) K of the network-input images.
            T_base_from_cam: (B, N, 4, 4) camera (optical) -> base_link.
            image_hw: (H, W) network-input image size.
            query_pos: (B, Q, C) or (Q, C) positional encoding added to the attending queries
                (not to the residual).
        """
        B, Q, C = query.shape
        if Q != self.num_queries or C != self.embed_dims:
            raise ValueError(f"SpatialCrossAttention: query must be (B, {self.num_queries}, {self.embed_dims}), "
                             f"got {tuple(query.shape)}")
        N = intrinsics.shape[1]
        proj = project_anchors(self.anchors, intrinsics, T_base_from_cam, image_hw)
        value, shapes, starts = self._flatten_levels(feats, B * N)
        q_in = query if query_pos is None else query + query_pos

        # Rebatch: the seen queries of each (sample, camera) row, packed from the left.
        seen = proj.seen.reshape(B * N, Q)
        row, qi = seen.nonzero(as_tuple=True)  # row-major: each row's queries in order
        counts = seen.sum(1)
        max_len = int(counts.max()) if counts.numel() else 0
        pos = torch.arange(row.numel(), device=row.device) - (counts.cumsum(0) - counts)[row]
        b_of = torch.div(row, N, rounding_mode="floor")
        packed_q = q_in.new_zeros(B * N, max_len, C)
        packed_q[row, pos] = q_in[b_of, qi]
        A = self.anchors.shape[1]
        ref = proj.reference_points.reshape(B * N, Q, A, 2)
        packed_ref = ref.new_zeros(B * N, max_len, A, 2)
        packed_ref[row, pos] = ref[row, qi]

        attended = self.attention(packed_q, value, packed_ref.to(value.dtype), shapes, starts)  # (B*N, max_len, C)
        slots = query.new_zeros(B, Q, C).index_put((b_of, qi), attended[row, pos], accumulate=True)
        num_cams = proj.seen.sum(1)  # (B, Q)
        slots = slots / num_cams.clamp_min(1)[..., None].to(slots.dtype)
        update = self.output_proj(slots) * (num_cams > 0)[..., None].to(slots.dtype)
        return SCAOutput(query + self.dropout(update), proj, num_cams)


class BEVQueries(nn.Module):
    """Learnable BEV queries and their learned positional encoding on a grid's x/y cells.

    ``forward(B)`` returns queries (B, X*Y, C) and the encoding (B, X*Y, C), query order
    ``ix * Y + iy``; the encoding of cell (ix, iy) is ``cat(x_embed[ix], y_embed[iy])`` (C//2 and
    C - C//2 channels; BEVFormer's ``LearnedPositionalEncoding``, uniform [0, 1) start).
    """

    def __init__(self, grid: GridSpec, embed_dims: int):
        super().__init__()
        X, Y = grid.dims[:2]
        self.grid = grid
        self.queries = nn.Embedding(X * Y, embed_dims)
        self.x_embed = nn.Embedding(X, embed_dims // 2)
        self.y_embed = nn.Embedding(Y, embed_dims - embed_dims // 2)
        nn.init.uniform_(self.x_embed.weight)
        nn.init.uniform_(self.y_embed.weight)

    def positional_encoding(self) -> torch.Tensor:
        """(X*Y, C) encoding of every cell."""
        X, Y = self.grid.dims[:2]
        ex = self.x_embed.weight[:, None].expand(X, Y, -1)
        ey = self.y_embed.weight[None].expand(X, Y, -1)
        return torch.cat([ex, ey], -1).reshape(X * Y, -1)

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.queries.weight[None].expand(batch_size, -1, -1)
        pos = self.positional_encoding()[None].expand(batch_size, -1, -1)
        return q, pos
