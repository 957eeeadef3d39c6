"""HBEVOcc (``name: hbevocc``): forward LSS and backward BEVFormer BEVs fused, with height-aware
deformable attention (HADA) on the backward BEV.

Data flow (B samples, N cameras; forward BEV on the feature grid's x/y cells (X', Y'), backward
BEV on cells ``s = hbevocc.back_stride`` times larger (X'/s, Y'/s); all maps indexed [x, y]
in base_link; C = ``hbevocc.channels``, E = ``bevformer.embed_dims``)::

    images (B, N, 3, H, W) -> ImageEncoder -> feats (B*N, Ci, h, w)
    forward:  LSSViewTransformer(feats) -> (B, Cl, X', Y', 1) -> BEV encoder -> F (B, C, X', Y')
              [frames K > 1: stack = cat(F, the K - 1 previous F warped into the current
               base_link) (B, K*C, X', Y') -> 3x3 conv-BN-ReLU -> F (B, C, X', Y')]
              F -> stride-s residual block -> F_s (B, C, X'/s, Y'/s)
    backward: 1x1 conv(feats) -> BEVQueries on the s-coarse cells -> num_layers x BEVFormerLayer
              [TSA (single frame: over the queries themselves), SCA with pillar anchors, FFN]
              -> HADA (query = key source = the backward BEV) -> G (B, E, X'/s, Y'/s)
    fusion:   full = cat(F, up_s(G) -> conv to C)        (B, 2C, X', Y')
              down = cat(F_s, G)                         (B, C + E, X'/s, Y'/s)
              fused = full + up_s(conv(down))            (B, 2C, X', Y')
    head:     ChannelToHeightHead(fused) -> logits (B, K, X, Y, Z); optional FlowHead on fused
              [``flow_stack_dilations``: on cat(fused, stack -> 3x3 conv to C -> dilated blocks)]

The LSS depth distributions are returned (``OccOutput.depth_probs``), so the LiDAR depth loss
of the camera model applies unchanged. This follows HBEVOcc's public code (``HBEVOcc`` detector:
a BEVDet forward projection, a BEVFormer backward projection on a 2x coarser BEV with learned
queries, HADA self-attention on the backward BEV, the two concatenated at both scales and
decoded by a two-scale channel-to-height head), at a size this project trains on a CPU.

**HADA** (:class:`HeightAwareDeformableAttention`): per cell and head, ``hada_points`` points
are sampled around the cell at offsets predicted from the query map (3x3 conv, tanh-bounded to
``hada_offset_range`` cells); their projections are keys and values. ``hada_height_keys`` more
keys and values per head come from the *channel-reweighted* BEV at the cell itself: channel
attention ``x_h = x + x * sigmoid(W maxpool(x) + W avgpool(x))`` (the BEV channels carry height,
so this reweights heights scene-wide), then a full 1x1 projection per extra key. Scaled dot
product attention of the query over those ``points + height_keys`` keys, output projection,
residual + GroupNorm, FFN + residual + GroupNorm.

Differences from HBEVOcc on purpose: HADA samples with ``align_corners=False`` at cell centres
(the project's convention) and adds a 2D sinusoidal encoding of (ix, iy) where HBEVOcc encodes
the flattened cell index in 1D; the forward branch is plain LSS (no stereo depth); the backward
branch has no CAN-bus MLP.

**Multi-frame** (``hbevocc.frames`` = K > 1, with a ``temporal`` section; HBEVOcc stacks 8
past frames as BEVDet4D does): the forward BEVs of the current and the K - 1 previous frames,
brought into the current base_link by the full ego motion (rotation and translation), are
stacked along channels and reduced by a conv before the fusion. The stack is the model's
recurrent state (``OccOutput.bev``, (B, K*C, X', Y'), newest slot first, all in the frame that
produced it): the next frame warps it by ``T_cur_from_prev``, drops the oldest slot and puts its
own BEV in front (:func:`occ_core.models.temporal.push_bev_stack`); slots without a frame (a
sequence start, a reset, ``prev_valid`` False) are zeros. So training
(:func:`~occ_core.models.temporal.forward_with_history` over ``temporal.train_frames`` previous
keyframes), ``occ-predict`` and the node run it with the same state machinery as BEVFormer.
Unlike BEVDet4D, which keeps the past frames and aligns each with its own motion, the stack is
warped once per step, so slot k has been resampled k times (bilinear; a little blur). The
backward branch and HADA stay single-frame. K = 1 is the single-frame model: no reduction conv,
no state, the same state_dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from occ_core.grid import GridSpec
from occ_core.models.backbone import BasicBlock, ImageEncoder, conv_bn_relu
from occ_core.models.bevformer import BEVFormerLayer, _fan_out_bias
from occ_core.models.bevformer_sca import BEVQueries, bev_to_map
from occ_core.models.config import ModelConfig
from occ_core.models.heads import ChannelToHeightHead, FlowHead
from occ_core.models.lss import LSSViewTransformer
from occ_core.models.occnet import MODELS, OccInputs, OccOutput
from occ_core.models.temporal import push_bev_stack


def backward_grid(cfg: ModelConfig) -> GridSpec:
    """The backward BEV's grid: the feature grid with x/y cells ``hbevocc.back_stride`` times larger
    (one z layer over the whole z range, whose extent sets the SCA pillar anchors)."""
    fg, s = cfg.feature_grid, cfg.hbevocc.back_stride
    vs = (float(fg.voxel_size[0]) * s, float(fg.voxel_size[1]) * s, float(fg.voxel_size[2]))
    return GridSpec.from_range(f"{fg.name}/back{s}", fg.point_range, vs)


def sinusoidal_bev_encoding(channels: int, X: int, Y: int) -> torch.Tensor:
    """(channels, X, Y) fixed 2D encoding: the first half of the channels sin/cos of ix at
    geometric frequencies ``10000 ** (-2k / (channels / 2))``, the second half the same of iy."""
    if channels % 4:
        raise ValueError(f"sinusoidal_bev_encoding: channels must be a multiple of 4, got {channels}")
    half = channels // 2
    freq = torch.exp(torch.arange(0, half, 2, dtype=torch.float32) * (-math.log(10000.0) / half))  # (half/2,)

    def enc(n: int) -> torch.Tensor:  # (half, n)
        a = torch.arange(n, dtype=torch.float32)[None] * freq[:, None]
        return torch.stack([a.sin(), a.cos()], 1).reshape(half, n)

    return torch.cat([enc(X)[:, :, None].expand(half, X, Y), enc(Y)[:, None, :].expand(half, X, Y)], 0)


class ChannelAttention(nn.Module):
    """CBAM-style channel reweighting: ``x * sigmoid(W maxpool(x) + W avgpool(x))`` with one
    shared 1x1 projection W (no reduction). (B, C, X, Y) -> (B, C, X, Y)."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.proj(x.amax((2, 3), keepdim=True)) + self.proj(x.mean((2, 3), keepdim=True))
        return x * w.sigmoid()


class HeightAwareDeformableAttention(nn.Module):
    """HADA: (B, C, X, Y) query map and key-source map -> (B, C, X, Y) (see the module docstring).

    Args:
        channels: C of the query and key-source maps (and the output), a multiple of 4 and of
            ``num_heads``.
        bev_hw: (X, Y) of the maps.
        num_heads, head_dim: heads and channels per head of the attention.
        num_points: deformable sampling points per head and cell.
        height_keys: extra per-cell keys/values per head from the channel-reweighted map.
        offset_range: sampling offsets are ``offset_range * tanh(raw / offset_range)`` cells.
        dropout: on the attention weights and in the FFN.
    """

    def __init__(self, channels: int, bev_hw: tuple[int, int], num_heads: int = 4, head_dim: int = 8,
                 num_points: int = 4, height_keys: int = 2, offset_range: float = 10.0, dropout: float = 0.0):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"HADA: channels {channels} must be divisible by num_heads {num_heads}")
        self.C, self.NH, self.D, self.P, self.Hk = channels, num_heads, head_dim, num_points, height_keys
        self.bev_hw = (int(bev_hw[0]), int(bev_hw[1]))
        self.offset_range = float(offset_range)
        inner = num_heads * head_dim
        self.register_buffer("pos", sinusoidal_bev_encoding(channels, *self.bev_hw), persistent=False)
        self.conv_offset = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.GroupNorm(1, channels), nn.ReLU(),
                                         nn.Conv2d(channels, num_heads * num_points * 2, 1))
        nn.init.zeros_(self.conv_offset[-1].weight)
        with torch.no_grad():  # Deformable DETR's start: each head's points along its own direction
            self.conv_offset[-1].bias.copy_(_fan_out_bias(num_heads, 1, num_points).reshape(-1))
        self.proj_q = nn.Conv2d(channels, inner, 1, bias=False)
        self.proj_x = nn.Conv2d(channels, inner, 1, bias=False)
        self.proj_k = nn.Conv2d(inner, inner, 1, groups=num_heads, bias=False)
        self.proj_v = nn.Conv2d(inner, inner, 1, groups=num_heads, bias=False)
        self.channel_attention = ChannelAttention(inner)
        self.proj_k_h = nn.Conv2d(inner, inner * height_keys, 1, bias=False) if height_keys else None
        self.proj_v_h = nn.Conv2d(inner, inner * height_keys, 1, bias=False) if height_keys else None
        self.proj_out = nn.Conv2d(inner, channels, 1, groups=math.gcd(num_heads, channels))
        self.attn_drop = nn.Dropout(dropout)
        self.norm1 = nn.GroupNorm(num_heads, channels)
        self.ffn = nn.Sequential(nn.Conv2d(channels, 2 * channels, 1), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Conv2d(2 * channels, channels, 1))
        self.norm2 = nn.GroupNorm(1, channels)

    def sampling_offsets(self, q: torch.Tensor) -> torch.Tensor:
        """(B, NH, P, 2, X, Y) offsets in cells (``[..., 0, :, :]`` along x, ``[..., 1, :, :]`` along y)
        of the query map ``q`` (B, C, X, Y) (positional encoding already added)."""
        B, _, X, Y = q.shape
        raw = self.conv_offset(q).view(B, self.NH, self.P, 2, X, Y)
        return self.offset_range * torch.tanh(raw / self.offset_range)

    def sample_points(self, xp: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of the head maps at cell + offset.

        Args:
            xp: (B, NH*D, X, Y) projected key-source map, head h in channels [h*D, (h+1)*D).
            off: (B, NH, P, 2, X, Y) offsets in cells (x, y) from :meth:`sampling_offsets`.

        Returns:
            (B, NH, P, D, X, Y): ``xp`` of head h at ``(ix + off_x, iy + off_y)``; zeros outside.
        """
        B, _, X, Y = xp.shape
        NH, P = off.shape[1:3]
        D = xp.shape[1] // NH
        ix = torch.arange(X, device=xp.device, dtype=xp.dtype).view(X, 1)
        iy = torch.arange(Y, device=xp.device, dtype=xp.dtype).view(1, Y)
        # normalised grid_sample coordinates on a map of height X (x index) and width Y (y index)
        gx = (iy + 0.5 + off[:, :, :, 1]) / Y * 2 - 1  # (B, NH, P, X, Y) along width
        gy = (ix + 0.5 + off[:, :, :, 0]) / X * 2 - 1
        grid = torch.stack([gx, gy], -1).reshape(B * NH, P * X, Y, 2)
        s = F.grid_sample(xp.reshape(B * NH, D, X, Y), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)  # (B*NH, D, P*X, Y)
        return s.view(B, NH, D, P, X, Y).transpose(2, 3)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """query (B, C, X, Y) the attending map; x (B, C, X, Y) the map sampled for keys, values
        and the residual. Returns (B, C, X, Y)."""
        B, C, X, Y = x.shape
        if (C, X, Y) != (self.C, *self.bev_hw) or query.shape != x.shape:
            raise ValueError(f"HADA: query and x must be (B, {self.C}, {self.bev_hw[0]}, {self.bev_hw[1]}), "
                             f"got {tuple(query.shape)} and {tuple(x.shape)}")
        NH, D, P, Hk = self.NH, self.D, self.P, self.Hk
        pos = self.pos.to(x.dtype)[None]
        q_in, x_in = query + pos, x + pos
        off = self.sampling_offsets(q_in)  # (B, NH, P, 2, X, Y) cells
        xp = self.proj_x(x_in)  # (B, NH*D, X, Y)
        sampled = self.sample_points(xp, off).transpose(1, 2).reshape(B * P, NH * D, X, Y)
        k = self.proj_k(sampled).view(B, P, NH, D, X, Y).transpose(1, 2)  # (B, NH, P, D, X, Y)
        v = self.proj_v(sampled).view(B, P, NH, D, X, Y).transpose(1, 2)
        if Hk:
            xh = xp + self.channel_attention(xp)  # the channel-reweighted BEV
            k = torch.cat([k, self.proj_k_h(xh).view(B, NH, Hk, D, X, Y)], 2)
            v = torch.cat([v, self.proj_v_h(xh).view(B, NH, Hk, D, X, Y)], 2)
        q = self.proj_q(q_in).view(B, NH, D, X, Y)
        attn = torch.einsum("bndxy,bnpdxy->bnpxy", q, k).mul(D ** -0.5).softmax(2)
        out = torch.einsum("bnpxy,bnpdxy->bndxy", self.attn_drop(attn), v).reshape(B, NH * D, X, Y)
        out = self.norm1(x + self.proj_out(out))
        return self.norm2(out + self.ffn(out))


class HBEVOccNet(nn.Module):
    """HBEVOcc occupancy network (see the module docstring). Camera-only."""

    uses_camera = True
    uses_lidar = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.hbevocc is None or cfg.bevformer is None or cfg.lss is None:
            raise ValueError(f"model {cfg.name!r} needs 'hbevocc', 'bevformer' and 'lss' sections")
        hb, bf = cfg.hbevocc, cfg.bevformer
        self.cfg = cfg
        self.fwd_grid = cfg.feature_grid
        self.back_grid = backward_grid(cfg)
        s, C, E = hb.back_stride, hb.channels, bf.embed_dims
        self.image_encoder = ImageEncoder(cfg.backbone)
        ci = self.image_encoder.channels
        # forward (LSS) branch
        self.lss = LSSViewTransformer(cfg.lss, ci, self.fwd_grid)
        self.bev_encoder = nn.Sequential(conv_bn_relu(cfg.lss.channels * self.fwd_grid.dims[2], C), BasicBlock(C, C))
        self.bev_encoder_down = BasicBlock(C, C, stride=s)
        # backward (BEVFormer SCA) branch
        self.input_proj = nn.Identity() if ci == E else nn.Conv2d(ci, E, 1)
        self.bev_queries = BEVQueries(self.back_grid, E)
        self.layers = nn.ModuleList(
            BEVFormerLayer(self.back_grid, E, bf.num_heads, bf.num_anchors, bf.points_per_anchor, bf.tsa_points,
                           bf.ffn_dims, bf.dropout) for _ in range(bf.num_layers))
        self.hada = nn.ModuleList(
            HeightAwareDeformableAttention(E, self.back_grid.dims[:2], hb.hada_heads, hb.hada_dim, hb.hada_points,
                                           hb.hada_height_keys, hb.hada_offset_range, hb.dropout)
            for _ in range(hb.hada_layers))
        self.back_up = nn.Sequential(nn.Upsample(scale_factor=s, mode="bilinear", align_corners=False),
                                     conv_bn_relu(E, C), nn.Conv2d(C, C, 1))
        # two-scale fusion and head
        self.down_up = nn.Sequential(conv_bn_relu(C + E, 2 * C), nn.Conv2d(2 * C, 2 * C, 1),
                                     nn.Upsample(scale_factor=s, mode="bilinear", align_corners=False))
        self.head = ChannelToHeightHead(2 * C, 1, cfg.num_classes, cfg.grid_spec.dims, bev_channels=cfg.bev_channels,
                                        bev_encoder=cfg.bev_encoder)
        # with flow_stack_dilations the flow head reads cat(fused, the stack's motion features): 3C channels
        self.flow_head = FlowHead((3 if hb.flow_stack_dilations else 2) * C, cfg.grid_spec.dims) if cfg.flow else None
        # multi-frame: built last, so the other modules draw the same initial weights as with K = 1
        self.frames = hb.frames
        self.temporal_reduce = conv_bn_relu(hb.frames * C, C) if hb.frames > 1 else None
        self.temporal_motion = (nn.Sequential(*[BasicBlock(C, C, dilation=d) for d in hb.motion_dilations])
                                if hb.motion_dilations else None)
        self.flow_stack = (nn.Sequential(conv_bn_relu(hb.frames * C, C),
                                         *[BasicBlock(C, C, dilation=d) for d in hb.flow_stack_dilations])
                           if hb.flow_stack_dilations else None)

    def forward_bev(self, feats: torch.Tensor, inputs: OccInputs, image_hw: tuple[int, int],
                    prev_bev: torch.Tensor | None = None, T_cur_from_prev: torch.Tensor | None = None,
                    prev_valid: torch.Tensor | None = None):
        """The forward branch: feats (B*N, Ci, h, w) -> (F (B, C, X', Y'), F_s (B, C, X'/s, Y'/s),
        depth_probs (B*N, D, h, w), stack (B, K*C, X', Y')).

        With K = ``hbevocc.frames`` > 1, ``stack`` is this frame's BEV followed by ``prev_bev``
        (the previous stack) warped by ``T_cur_from_prev`` without its oldest slot
        (:func:`~occ_core.models.temporal.push_bev_stack`) and F is its reduction (then the
        ``motion_dilations`` blocks); with K = 1,
        F is this frame's BEV and ``stack`` is F.
        """
        out = self.lss(feats, inputs.intrinsics, inputs.T_base_from_cam, image_hw)
        vox = out.voxels  # (B, Cl, X', Y', Z')
        bev = self.bev_encoder(vox.permute(0, 1, 4, 2, 3).flatten(1, 2))  # this frame's forward BEV
        stack = push_bev_stack(prev_bev, bev, T_cur_from_prev, prev_valid, self.fwd_grid, self.frames)
        if self.temporal_reduce is not None:
            bev = self.temporal_reduce(stack)
        if self.temporal_motion is not None:
            bev = self.temporal_motion(bev)
        return bev, self.bev_encoder_down(bev), out.depth_probs, stack

    def backward_bev(self, feats: torch.Tensor, inputs: OccInputs, image_hw: tuple[int, int]) -> torch.Tensor:
        """The backward branch: feats (B*N, Ci, h, w) -> G (B, E, X'/s, Y'/s) after SCA layers and HADA."""
        B = inputs.images.shape[0]
        value = [self.input_proj(feats)]
        x, pos = self.bev_queries(B)
        for layer in self.layers:
            x = layer(x, pos, None, value, inputs.intrinsics, inputs.T_base_from_cam, image_hw)
        g = bev_to_map(x, self.back_grid)
        for m in self.hada:
            g = m(g, g)
        return g

    def forward(self, inputs: OccInputs, prev_bev: torch.Tensor | None = None,
                T_cur_from_prev: torch.Tensor | None = None, prev_valid: torch.Tensor | None = None) -> OccOutput:
        """Predict occupancy.

        Args:
            inputs: images (B, N, 3, H, W), intrinsics (B, N, 3, 3), T_base_from_cam (B, N, 4, 4).
            prev_bev: (B, K*C, X', Y') the ``bev`` of the previous frame's output (multi-frame
                models, K = ``hbevocc.frames`` > 1), or None (first frame: the past slots are zeros).
            T_cur_from_prev: (B, 4, 4) or (4, 4) ego motion, previous base_link -> current
                base_link; required with ``prev_bev``.
            prev_valid: (B,) bool, the samples whose ``prev_bev`` carries; None = all.

        Returns:
            :class:`OccOutput` with logits (B, K, X, Y, Z), depth_probs (B*N, D, h, w), flow
            (flow configs) and, multi-frame models only, bev (B, K*C, X', Y') the stack to feed
            back as the next frame's ``prev_bev``.
        """
        if inputs.images is None or inputs.intrinsics is None or inputs.T_base_from_cam is None:
            raise ValueError("HBEVOccNet needs images, intrinsics and T_base_from_cam")
        if prev_bev is not None and self.frames == 1:
            raise ValueError("HBEVOccNet: a single-frame model (hbevocc.frames 1) has no state; prev_bev must be None")
        H, W = inputs.images.shape[-2:]
        feats = self.image_encoder(inputs.images.flatten(0, 1))  # (B*N, Ci, h, w)
        f_bev, f_down, depth, stack = self.forward_bev(feats, inputs, (H, W), prev_bev, T_cur_from_prev, prev_valid)
        g = self.backward_bev(feats, inputs, (H, W))
        full = torch.cat([f_bev, self.back_up(g)], 1)  # (B, 2C, X', Y')
        fused = full + self.down_up(torch.cat([f_down, g], 1))
        vox = fused[..., None]  # (B, 2C, X', Y', 1)
        flow = None
        if self.flow_head is not None:
            flow_in = vox if self.flow_stack is None else torch.cat([vox, self.flow_stack(stack)[..., None]], 1)
            flow = self.flow_head(flow_in)
        return OccOutput(logits=self.head(vox), depth_probs=depth, flow=flow, bev=stack if self.frames > 1 else None)


MODELS["hbevocc"] = HBEVOccNet
