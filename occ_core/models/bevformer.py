"""BEVFormer occupancy (``name: bevformer``): Occupancy-BEVFormer / OccNet's BEV encoder and decoders.

Data flow (B samples, N cameras, C = ``bevformer.embed_dims``, BEV = the feature grid's x/y
cells (X', Y') in base_link, query ``q = ix * Y' + iy``)::

    images (B, N, 3, H, W) -> ImageEncoder -> (B*N, Ci, h, w) -> 1x1 conv -> (B*N, C, h, w)
    BEV queries + learned positional encoding (B, X'*Y', C)      [bevformer_sca.BEVQueries]
    num_layers x [ TSA -> LayerNorm -> SCA -> LayerNorm -> FFN -> LayerNorm ]
    -> BEV (B, C, X', Y')  (returned as OccOutput.bev)
    decoder "zembed": 1x1 conv to ``channels``, broadcast over Z' + learned z-embedding
                      -> 3D conv + 3D residual block -> VoxelHead -> logits (B, K, X, Y, Z)
    decoder "c2h":    ChannelToHeightHead on the BEV (height from channels) -> (B, K, X, Y, Z)
    flow (optional):  FlowHead on the decoder's voxel features -> (B, X, Y, Z, 2) m/s

- **SCA** (spatial cross-attention) is :class:`~occ_core.models.bevformer_sca.SpatialCrossAttention`:
  pillar anchors at ``num_anchors`` heights per query, projected into each camera from
  base_link, per-camera rebatching of the queries a camera sees, mean over the cameras that see
  a query. One image feature level (the FPN's ``out_stride`` level).
- **TSA** (temporal self-attention, :class:`TemporalSelfAttention`): deformable attention on
  the BEV itself whose value is the pair ``[previous BEV aligned to the current frame, current
  query]`` and whose reference points are the BEV cell centres; offsets and weights come from
  ``cat(previous BEV, query + pos)``; the two results are averaged. Without a previous BEV the
  current query is used twice (BEVFormer's first frame).
- **Alignment** (:func:`align_bev`): the previous BEV is resampled into the current base_link
  with the *full* rigid ego motion, rotation and translation, before TSA, so the reference
  points need no shift. (BEVFormer rotates the previous BEV about the ego and shifts the
  reference points by the translation; OccNet's challenge code only rotates.)

Temporal use: ``forward(inputs, prev_bev, T_cur_from_prev, prev_valid)`` with ``prev_bev`` the
``bev`` of the previous frame's output (detached) and ``T_cur_from_prev`` the ego motion
(previous base_link -> current base_link). A config with a ``temporal`` section trains and runs
with that state (:mod:`occ_core.models.temporal`: previous keyframes in training, the streaming
state with its reset rule in ``occ-predict`` and the node); without one, ``prev_bev`` is None.

Differences from BEVFormer on purpose: no camera / level embeddings added to the image features
(the node may run rigs with another camera count), one image feature level, and the CAN-bus
MLP is absent (the alignment uses the motion directly).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from occ_core.grid import GridSpec
from occ_core.models.backbone import BasicBlock, ImageEncoder, conv_bn_relu
from occ_core.models.bevformer_sca import BEVQueries, SpatialCrossAttention, bev_to_map
from occ_core.models.config import ModelConfig
from occ_core.models.heads import ChannelToHeightHead, FlowHead, VoxelHead
from occ_core.models.occnet import MODELS, OccInputs, OccOutput
from occ_core.models.temporal import warp_bev
from occ_core.ops.deform_attn import ms_deform_attn


#: the full-motion BEV alignment (:func:`occ_core.models.temporal.warp_bev`), under its BEVFormer name
align_bev = warp_bev


def bev_reference_points(X: int, Y: int) -> torch.Tensor:
    """(X*Y, 2) float32 normalised ``(x, y)`` of the BEV cell centres for :func:`ms_deform_attn`
    on the (X, Y) map seen as an image of height X and width Y: ``((iy + 0.5) / Y, (ix + 0.5) / X)``."""
    ix, iy = torch.meshgrid(torch.arange(X, dtype=torch.float32), torch.arange(Y, dtype=torch.float32), indexing="ij")
    return torch.stack([(iy + 0.5) / Y, (ix + 0.5) / X], -1).view(-1, 2)


def _fan_out_bias(num_heads: int, groups: int, points: int) -> torch.Tensor:
    """Deformable DETR's offset start (heads, groups, points, 2): each head's points along its
    own direction on the unit square at 1, 2, ... cells."""
    angle = torch.arange(num_heads, dtype=torch.float32) * (2 * math.pi / num_heads)
    d = torch.stack([angle.cos(), angle.sin()], -1)
    d = d / d.abs().amax(-1, keepdim=True)
    scale = torch.arange(1, points + 1, dtype=torch.float32)
    return (d[:, None, None, :] * scale[None, None, :, None]).expand(num_heads, groups, points, 2)


class TemporalSelfAttention(nn.Module):
    """BEVFormer's temporal self-attention: (B, Q, C) queries over [aligned previous BEV, queries].

    Per head, frame (previous, current) and point a sampling offset (in BEV cells) and a weight
    (softmax over the points of that head and frame) come from ``cat(hist, query + pos)``;
    sampling location = cell centre + offset / (Y, X). The two frames' results are averaged,
    projected and added to the query.
    """

    num_frames = 2

    def __init__(self, bev_hw: tuple[int, int], embed_dims: int, num_heads: int, num_points: int, dropout: float = 0.0,
                 backend: str | None = None):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} must be divisible by num_heads {num_heads}")
        self.bev_hw = (int(bev_hw[0]), int(bev_hw[1]))
        self.embed_dims, self.num_heads, self.num_points, self.backend = embed_dims, num_heads, num_points, backend
        F_ = self.num_frames
        self.sampling_offsets = nn.Linear(2 * embed_dims, num_heads * F_ * num_points * 2)
        self.attention_weights = nn.Linear(2 * embed_dims, num_heads * F_ * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("reference_points", bev_reference_points(*self.bev_hw), persistent=False)
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(_fan_out_bias(num_heads, F_, num_points).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, prev_bev: torch.Tensor | None,
                prev_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Args: query (B, Q, C) without positional encoding; query_pos (B, Q, C); prev_bev
        (B, Q, C) the previous BEV already aligned to the current frame, or None; prev_valid
        (B,) bool: samples whose prev_bev holds (the others use the query, as with None).
        Returns (B, Q, C) = query + update."""
        B, Q, C = query.shape
        X, Y = self.bev_hw
        if Q != X * Y or C != self.embed_dims:
            raise ValueError(f"TemporalSelfAttention: query must be (B, {X * Y}, {self.embed_dims}), got {tuple(query.shape)}")
        hist = query if prev_bev is None else prev_bev
        if hist.shape != query.shape:
            raise ValueError(f"TemporalSelfAttention: prev_bev must be {tuple(query.shape)}, got {tuple(hist.shape)}")
        if prev_bev is not None and prev_valid is not None:
            hist = torch.where(prev_valid.to(query.device).view(B, 1, 1), hist, query)
        NH, Fr, P = self.num_heads, self.num_frames, self.num_points
        q = torch.cat([hist, query + query_pos], -1)  # (B, Q, 2C)
        offsets = self.sampling_offsets(q).view(B, Q, NH, Fr, P, 2)
        weights = self.attention_weights(q).view(B, Q, NH, Fr, P).softmax(-1)
        scale = torch.tensor([Y, X], dtype=offsets.dtype, device=offsets.device)  # (w, h) of the map
        loc = self.reference_points.to(offsets.dtype)[None, :, None, None, None] + offsets / scale
        # frames into the batch: row b*2 + f; one level (the BEV map, h = X, w = Y)
        loc = loc.permute(0, 3, 1, 2, 4, 5).reshape(B * Fr, Q, NH, 1, P, 2)
        weights = weights.permute(0, 3, 1, 2, 4).reshape(B * Fr, Q, NH, 1, P)
        value = self.value_proj(torch.stack([hist, query], 1).view(B * Fr, Q, C)).view(B * Fr, Q, NH, C // NH)
        shapes = torch.tensor([[X, Y]], dtype=torch.int64, device=query.device)
        starts = torch.zeros(1, dtype=torch.int64, device=query.device)
        out = ms_deform_attn(value, shapes, starts, loc, weights, backend=self.backend)  # (B*2, Q, C)
        out = out.view(B, Fr, Q, C).mean(1)
        return query + self.dropout(self.output_proj(out))


class BEVFormerLayer(nn.Module):
    """One encoder layer: TSA -> LayerNorm -> SCA -> LayerNorm -> FFN (+ residual) -> LayerNorm."""

    def __init__(self, grid: GridSpec, embed_dims: int, num_heads: int, num_anchors: int, points_per_anchor: int,
                 tsa_points: int, ffn_dims: int, dropout: float = 0.0):
        super().__init__()
        self.tsa = TemporalSelfAttention(grid.dims[:2], embed_dims, num_heads, tsa_points, dropout)
        self.sca = SpatialCrossAttention(grid, embed_dims, num_heads, 1, num_anchors, points_per_anchor, dropout=dropout)
        self.ffn = nn.Sequential(nn.Linear(embed_dims, ffn_dims), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dims, embed_dims), nn.Dropout(dropout))
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))

    def forward(self, query, query_pos, prev_bev, feats, intrinsics, T_base_from_cam, image_hw,
                prev_valid=None) -> torch.Tensor:
        """query, query_pos, prev_bev: (B, Q, C) (prev_bev aligned, or None); feats: [(B*N, C, h, w)];
        prev_valid: (B,) bool or None (all valid)."""
        x = self.norms[0](self.tsa(query, query_pos, prev_bev, prev_valid))
        x = self.norms[1](self.sca(x, feats, intrinsics, T_base_from_cam, image_hw, query_pos).queries)
        return self.norms[2](x + self.ffn(x))


class ZEmbedDecoder(nn.Module):
    """Occupancy-BEVFormer's BEV -> voxels: BEV (B, C, X', Y') -> 1x1 conv to ``channels`` ->
    broadcast over Z' + a learned per-height embedding -> 3D conv + residual block
    -> (B, channels, X', Y', Z')."""

    def __init__(self, embed_dims: int, channels: int, z: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(embed_dims, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))
        self.z_embed = nn.Parameter(torch.zeros(channels, z))
        nn.init.normal_(self.z_embed, std=0.1)
        self.blocks = nn.Sequential(conv_bn_relu(channels, channels, dims=3), BasicBlock(channels, channels, dims=3))

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        x = self.proj(bev)[..., None] + self.z_embed[None, :, None, None, :]
        return self.blocks(x)


class BEVFormerOccNet(nn.Module):
    """BEVFormer occupancy network (see the module docstring). Camera-only."""

    uses_camera = True
    uses_lidar = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.bevformer is None:
            raise ValueError(f"model {cfg.name!r} needs a 'bevformer' section")
        bf = cfg.bevformer
        self.cfg = cfg
        self.bev_grid = cfg.feature_grid
        grid = cfg.grid_spec
        C = bf.embed_dims
        self.image_encoder = ImageEncoder(cfg.backbone)
        ci = self.image_encoder.channels
        self.input_proj = nn.Identity() if ci == C else nn.Conv2d(ci, C, 1)
        self.bev_queries = BEVQueries(self.bev_grid, C)
        self.layers = nn.ModuleList(
            BEVFormerLayer(self.bev_grid, C, bf.num_heads, bf.num_anchors, bf.points_per_anchor, bf.tsa_points,
                           bf.ffn_dims, bf.dropout) for _ in range(bf.num_layers))
        if bf.decoder == "zembed":
            self.decoder = ZEmbedDecoder(C, cfg.channels, self.bev_grid.dims[2])
            self.head = VoxelHead(cfg.channels, cfg.num_classes, grid.dims)
            vox_c = cfg.channels
        else:
            self.decoder = None
            self.head = ChannelToHeightHead(C, 1, cfg.num_classes, grid.dims, bev_channels=cfg.channels,
                                            bev_encoder=cfg.bev_encoder)
            vox_c = C
        self.flow_head = FlowHead(vox_c, grid.dims) if cfg.flow else None

    def encode_bev(self, inputs: OccInputs, prev_bev: torch.Tensor | None = None,
                   T_cur_from_prev: torch.Tensor | None = None, prev_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> BEV (B, C, X', Y') in the current base_link (see :meth:`forward`)."""
        if inputs.images is None or inputs.intrinsics is None or inputs.T_base_from_cam is None:
            raise ValueError("BEVFormerOccNet needs images, intrinsics and T_base_from_cam")
        B, N, _, H, W = inputs.images.shape
        feats = [self.input_proj(self.image_encoder(inputs.images.flatten(0, 1)))]  # [(B*N, C, h, w)]
        query, pos = self.bev_queries(B)
        hist = None
        if prev_bev is not None:
            if T_cur_from_prev is None:
                raise ValueError("BEVFormerOccNet: prev_bev needs T_cur_from_prev (the ego motion, previous -> current "
                                 "base_link; the identity when the ego stood still)")
            aligned = align_bev(prev_bev, T_cur_from_prev, self.bev_grid)  # (B, C, X', Y')
            hist = aligned.flatten(2).transpose(1, 2)  # (B, Q, C), query order ix * Y' + iy
        x = query
        for layer in self.layers:
            x = layer(x, pos, hist, feats, inputs.intrinsics, inputs.T_base_from_cam, (H, W), prev_valid)
        return bev_to_map(x, self.bev_grid)

    def forward(self, inputs: OccInputs, prev_bev: torch.Tensor | None = None,
                T_cur_from_prev: torch.Tensor | None = None, prev_valid: torch.Tensor | None = None) -> OccOutput:
        """Predict occupancy.

        Args:
            inputs: images (B, N, 3, H, W), intrinsics (B, N, 3, 3), T_base_from_cam (B, N, 4, 4).
            prev_bev: (B, C, X', Y') the ``bev`` of the previous frame's output, or None (first
                frame / single-frame training: TSA attends to the current queries twice).
            T_cur_from_prev: (B, 4, 4) or (4, 4) ego motion, previous base_link -> current
                base_link; required with ``prev_bev``.
            prev_valid: (B,) bool, the samples whose ``prev_bev`` holds (a batch mixing scene
                starts and continued frames); None = all.

        Returns:
            :class:`OccOutput` with logits (B, K, X, Y, Z), flow (B, X, Y, Z, 2) m/s (flow
            configs) and bev (B, C, X', Y') to feed back as the next frame's ``prev_bev``.
        """
        bev = self.encode_bev(inputs, prev_bev, T_cur_from_prev, prev_valid)
        if self.decoder is not None:
            vox = self.decoder(bev)  # (B, channels, X', Y', Z')
            logits = self.head(vox)
        else:
            vox = bev[..., None]  # (B, C, X', Y', 1)
            logits = self.head(vox)
        flow = None if self.flow_head is None else self.flow_head(vox)
        return OccOutput(logits=logits, flow=flow, bev=bev)


MODELS["bevformer"] = BEVFormerOccNet
