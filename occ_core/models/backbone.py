"""Image backbone (ResNet with BasicBlocks or Bottlenecks) and FPN neck in plain torch (no torchvision).

Data flow for images (B*N, 3, H, W):

    stem "3x3": conv 3x3 /2, conv 3x3 /2          -> (B*N, stem, H/4, W/4)
    stem "7x7": conv 7x7 /2, max pool 3x3 /2      -> (B*N, stem, H/4, W/4)   (torchvision)
    stage i (blocks, the first one /2
             except in stage 0)                   -> (B*N, widths[i], H/2^(i+2), W/2^(i+2))
    FPN: lateral 1x1 per stage, top-down
         nearest upsample + add, 3x3 out          -> the level of ``out_stride``: (B*N, C, H/s, W/s)

With ``stem_type: 7x7``, ``block: bottleneck``, widths (256, 512, 1024, 2048) and blocks
(3, 4, 6, 3) the backbone is torchvision's ResNet-50 layer for layer (v1.5: the stride sits on
the bottleneck's 3x3 conv), so ImageNet weights load into it
(:mod:`occ_core.models.pretrained` maps the names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from occ_core.models.config import BackboneConfig


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dims: int = 2) -> nn.Sequential:
    """3x3 convolution (2D or 3D) + BatchNorm + ReLU."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    return nn.Sequential(conv(cin, cout, 3, stride, 1, bias=False), bn(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet BasicBlock (2D or 3D): two 3x3 convs (dilated by ``dilation``, padded to keep the
    size) + identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dims: int = 2, dilation: int = 1):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv1 = conv(cin, cout, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = bn(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)), inplace=True)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (torchvision's): 1x1 (cin -> cout/4), 3x3 with the stride
    (cout/4 -> cout/4), 1x1 (cout/4 -> cout), each followed by BatchNorm; identity or 1x1
    strided projection shortcut; ReLU after the sum. (B, cin, H, W) -> (B, cout, H/s, W/s)."""

    expansion = 4

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        mid = cout // self.expansion
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.short is None else self.short(x)), inplace=True)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_stem(stem_type: str, channels: int) -> nn.Sequential:
    """(B, 3, H, W) -> (B, channels, H/4, W/4). ``"7x7"`` is torchvision's conv1/bn1/relu/maxpool
    (module indices 0/1/2/3), ``"3x3"`` two conv-BN-ReLU of stride 2."""
    if stem_type == "7x7":
        return nn.Sequential(nn.Conv2d(3, channels, 7, 2, 3, bias=False), nn.BatchNorm2d(channels),
                             nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
    if stem_type == "3x3":
        return nn.Sequential(conv_bn_relu(3, channels, 2), conv_bn_relu(channels, channels, 2))
    raise ValueError(f"backbone: stem_type {stem_type!r} is not one of '3x3', '7x7'")


class ResNetBackbone(nn.Module):
    """(B, 3, H, W) -> list of stage features, stage i (B, widths[i], H/2^(i+2), W/2^(i+2)).

    ``frozen_stages`` k >= 0 stops gradients to the stem and the first k stages and keeps their
    BatchNorms in eval mode; ``norm_eval`` keeps every BatchNorm in eval mode (both re-applied
    on each ``train()``).
    """

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        if len(cfg.widths) != len(cfg.blocks) or not cfg.widths:
            raise ValueError(f"backbone: widths {cfg.widths} and blocks {cfg.blocks} need the same non-zero length")
        if cfg.block not in BLOCKS:
            raise ValueError(f"backbone: block {cfg.block!r} is not one of {sorted(BLOCKS)}")
        block = BLOCKS[cfg.block]
        self.stem = make_stem(cfg.stem_type, cfg.stem)
        stages, cin = [], cfg.stem
        for i, (w, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            blocks = [block(cin, w, 1 if i == 0 else 2)] + [block(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.strides = tuple(2 ** (i + 2) for i in range(len(cfg.widths)))
        self.frozen_stages = cfg.frozen_stages
        self.norm_eval = cfg.norm_eval
        for m in self.frozen_modules():
            m.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and stages that ``frozen_stages`` freezes (empty for -1)."""
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.stages[: self.frozen_stages]]

    def train(self, mode: bool = True) -> "ResNetBackbone":
        super().train(mode)
        if mode:
            for m in self.frozen_modules():
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


class FPN(nn.Module):
    """Feature pyramid: lateral 1x1, top-down nearest upsampling + sum, 3x3 output conv.

    Returns only the level at ``out_stride`` (B, C, H/out_stride, W/out_stride), which is what
    the LSS view transformer consumes (BEVDet's CustomFPN with one output).
    """

    def __init__(self, in_channels: tuple[int, ...], strides: tuple[int, ...], channels: int, out_stride: int):
        super().__init__()
        if out_stride not in strides:
            raise ValueError(f"FPN: out_stride {out_stride} is not a backbone stride {strides}")
        self.out_level = strides.index(out_stride)
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels[self.out_level:])
        self.out = conv_bn_relu(channels, channels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = feats[self.out_level:]
        x = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            x = lat(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
        return self.out(x)


class ImageEncoder(nn.Module):
    """Backbone + FPN: images (B*N, 3, H, W) -> features (B*N, C, H/s, W/s), s = ``out_stride``."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.backbone = ResNetBackbone(cfg)
        self.neck = FPN(cfg.widths, self.backbone.strides, cfg.neck_channels, cfg.out_stride)
        self.stride = cfg.out_stride
        self.channels = cfg.neck_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))
