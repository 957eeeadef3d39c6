"""Occupancy heads and camera/LiDAR fusion.

All voxel tensors are laid out **(B, C, X, Y, Z)** in base_link, on the feature grid (X', Y',
Z') on input and on the output grid (X, Y, Z) on output.

- :class:`VoxelHead`: 3D residual block -> 1x1x1 class logits -> trilinear upsampling.
- :class:`ChannelToHeightHead` (FlashOcc): the voxel features are flattened to a BEV map
  (B, C*Z', X', Y'), encoded by 2D residual blocks, upsampled to (X, Y) and a 1x1 conv
  predicts Z*K channels that are reshaped into (B, K, X, Y, Z): height lives in channels.
- :class:`FlowHead`: OpenOcc v2 occupancy flow, (B, X, Y, Z, 2) m/s in base_link x, y (2D on a BEV input).
- :class:`AdaptiveFusion` (OpenOccupancy): both modalities are projected to C channels and a
  per-voxel visibility weight w = sigmoid(conv(cat(cam, lidar))) mixes them,
  ``fused = w * cam + (1 - w) * lidar``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from occ_core.models.backbone import BasicBlock, conv_bn_relu


def start_mostly_free(cls: nn.Module, num_classes: int, geo_logit: float) -> None:
    """Set the free class's bias (the last of ``num_classes``) of a classifier so that at
    initialisation the occupancy logit ``logsumexp(non-free logits) - free logit`` (the rendering
    field's geometry, :func:`occ_core.models.occnerf.field_from_logits`) is about ``geo_logit``.

    A rendering-supervised head needs it: with every logit near 0 each voxel starts 17/18
    occupied, probability rendering stops every ray at its first sample, and the voxels behind it
    get no gradient (OccNeRF starts its field at sigmoid(-3) for the same reason).

    ``cls``: the final convolution; its output channels are class-major (``k * n + i`` for class
    ``k``, ``n = out_channels / num_classes``), as in :class:`VoxelHead` (n = 1) and
    :class:`ChannelToHeightHead` (n = Z).
    """
    n = cls.out_channels // num_classes
    with torch.no_grad():
        cls.bias[(num_classes - 1) * n:] = math.log(num_classes - 1) - geo_logit


class VoxelHead(nn.Module):
    """(B, C, X', Y', Z') -> logits (B, K, X, Y, Z)."""

    def __init__(self, channels: int, num_classes: int, out_dims: tuple[int, int, int]):
        super().__init__()
        self.block = BasicBlock(channels, channels, dims=3)
        self.cls = nn.Conv3d(channels, num_classes, 1)
        self.out_dims = tuple(out_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cls(self.block(x))
        if tuple(y.shape[-3:]) != self.out_dims:
            y = F.interpolate(y, size=self.out_dims, mode="trilinear", align_corners=False)
        return y


class MultiScaleBEVEncoder(nn.Module):
    """FlashOcc / BEVDet BEV encoder (:class:`~occ_core.models.config.BEVEncoderConfig`):
    (B, C, X, Y) -> (B, C, X, Y).

    Stage i (i = 1..S) works at 1 / 2**i of the input; the last stage is upsampled to the first
    stage's size and concatenated with it (FPN-LSS), two 3x3 convs, bilinear upsampling to the
    input size, concatenation with the input, one 3x3 conv.
    """

    def __init__(self, channels: int, stage_channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        stages, cin = [], channels
        for c, n in zip(stage_channels, blocks):
            stages.append(nn.Sequential(BasicBlock(cin, c, stride=2), *[BasicBlock(c, c) for _ in range(n - 1)]))
            cin = c
        self.stages = nn.ModuleList(stages)
        c0, cl = stage_channels[0], stage_channels[-1]
        self.neck = nn.Sequential(conv_bn_relu(c0 + cl, 2 * channels), conv_bn_relu(2 * channels, 2 * channels))
        self.out = conv_bn_relu(2 * channels + channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, y = [], x
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        first, last = feats[0], feats[-1]
        up = F.interpolate(last, size=first.shape[-2:], mode="bilinear", align_corners=False)
        y = self.neck(torch.cat([first, up], 1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(torch.cat([y, x], 1))


class ChannelToHeightHead(nn.Module):
    """FlashOcc channel-to-height: (B, C, X', Y', Z') -> BEV (B, C*Z', X', Y') -> (B, K, X, Y, Z).

    The BEV between the reduction and the classifier: two full-resolution BasicBlocks, or the
    :class:`MultiScaleBEVEncoder` when ``bev_encoder`` (a BEVEncoderConfig) is given.
    """

    def __init__(self, channels: int, in_z: int, num_classes: int, out_dims: tuple[int, int, int], bev_channels: int = 32,
                 bev_encoder=None):
        super().__init__()
        self.reduce = conv_bn_relu(channels * in_z, bev_channels)
        if bev_encoder is None:
            self.blocks = nn.Sequential(BasicBlock(bev_channels, bev_channels), BasicBlock(bev_channels, bev_channels))
        else:
            self.blocks = MultiScaleBEVEncoder(bev_channels, tuple(bev_encoder.channels), tuple(bev_encoder.blocks))
        self.out_dims = tuple(out_dims)
        self.num_classes = num_classes
        self.cls = nn.Conv2d(bev_channels, num_classes * out_dims[2], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, Xf, Yf, Zf = x.shape
        bev = x.permute(0, 1, 4, 2, 3).reshape(B, C * Zf, Xf, Yf)  # channel c*Z' + z
        bev = self.blocks(self.reduce(bev))
        X, Y, Z = self.out_dims
        if (Xf, Yf) != (X, Y):
            bev = F.interpolate(bev, size=(X, Y), mode="bilinear", align_corners=False)
        return self.cls(bev).view(B, self.num_classes, Z, X, Y).permute(0, 1, 3, 4, 2)


class FlowHead(nn.Module):
    """(B, C, X', Y', Z') -> flow (B, X, Y, Z, 2) in m/s (base_link x, y).

    A 3x3x3 conv-BN-ReLU and a 1x1x1 conv to (vx, vy), trilinearly upsampled to the output grid
    (:meth:`forward_volume`). On a BEV input (Z' = 1: the HBEVOcc and channel-to-height models)
    the 3x3x3 kernel's upper and lower slices only meet the zero padding and the trilinear
    upsampling from one height is a copy along z, so :meth:`forward` runs the same weights as
    2D convolutions and bilinear upsampling and copies the (X, Y) flow to every height: the
    same values (the test compares the two) for a fraction of the work (``bench/heads.py``).
    """

    def __init__(self, channels: int, out_dims: tuple[int, int, int]):
        super().__init__()
        self.net = nn.Sequential(conv_bn_relu(channels, channels, dims=3), nn.Conv3d(channels, 2, 1))
        self.out_dims = tuple(out_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 1:
            return self.forward_volume(x)
        conv, bn, relu = self.net[0]
        y = F.conv2d(x[..., 0], conv.weight[..., 1], None, padding=1)  # the kernel's middle height slice
        y = relu(bn(y[..., None]))[..., 0]  # BatchNorm3d on (B, C, X', Y', 1): the statistics of the volume path
        y = F.conv2d(y, self.net[1].weight[..., 0], self.net[1].bias)  # (B, 2, X', Y')
        X, Y, Z = self.out_dims
        if tuple(y.shape[-2:]) != (X, Y):
            y = F.interpolate(y, size=(X, Y), mode="bilinear", align_corners=False)
        return y.permute(0, 2, 3, 1)[:, :, :, None, :].expand(-1, -1, -1, Z, -1).contiguous()

    def forward_volume(self, x: torch.Tensor) -> torch.Tensor:
        """The general path for any Z' (what :meth:`forward` equals on a BEV input)."""
        y = self.net(x)
        if tuple(y.shape[-3:]) != self.out_dims:
            y = F.interpolate(y, size=self.out_dims, mode="trilinear", align_corners=False)
        return y.permute(0, 2, 3, 4, 1)


class AdaptiveFusion(nn.Module):
    """OpenOccupancy adaptive fusion: cam (B, Cc, X, Y, Z) + lidar (B, Cl, X, Y, Z) -> (B, C, X, Y, Z)."""

    def __init__(self, cam_channels: int, lidar_channels: int, channels: int):
        super().__init__()
        self.cam = conv_bn_relu(cam_channels, channels, dims=3)
        self.lidar = conv_bn_relu(lidar_channels, channels, dims=3)
        self.weight = nn.Sequential(conv_bn_relu(2 * channels, channels, dims=3), nn.Conv3d(channels, 1, 1), nn.Sigmoid())

    def forward(self, cam: torch.Tensor, lidar: torch.Tensor) -> torch.Tensor:
        c, l = self.cam(cam), self.lidar(lidar)
        w = self.weight(torch.cat([c, l], 1))
        return w * c + (1 - w) * l
