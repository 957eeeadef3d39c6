"""Lift-splat-shoot view transformer (LSS / BEVDet) and its LiDAR depth supervision.

Lift: a 1x1 "depth net" turns each image feature pixel into a categorical depth distribution
over D bins and C context channels. Splat: every (camera, depth bin, pixel) frustum point is
moved into ``base_link`` through the camera's intrinsics and extrinsics and its
``depth_prob * context`` is summed into its voxel with :func:`occ_core.ops.bev_pool`.

Pixel convention: integer pixel coordinates are pixel centres; feature pixel ``j`` of a map
``w`` wide over an image ``W`` wide is centred at image ``u = (j + 0.5) * W / w - 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from occ_core.grid import GridSpec
from occ_core.models.backbone import conv_bn_relu
from occ_core.models.config import LSSConfig
from occ_core.ops.bev_pool import bev_pool, prepare_bev_pool


def depth_bin_centres(cfg: LSSConfig) -> torch.Tensor:
    """(D,) float32 centres of the depth bins in metres."""
    lo, hi, step = cfg.depth
    n = int(round((hi - lo) / step))
    if n <= 0:
        raise ValueError(f"lss.depth: (min, max, step) = {cfg.depth} gives no bins")
    return lo + step * (torch.arange(n, dtype=torch.float32) + 0.5)


def feature_pixel_centres(image_hw: tuple[int, int], feat_hw: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates (u (w,), v (h,)) of the centres of a (h, w) feature map's pixels."""
    (H, W), (h, w) = image_hw, feat_hw
    u = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * (W / w) - 0.5
    v = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * (H / h) - 0.5
    return u, v


def frustum_points(depths: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
                   image_hw: tuple[int, int], feat_hw: tuple[int, int]) -> torch.Tensor:
    """Frustum point positions in base_link.

    Args:
        depths: (D,) bin centres in metres (along the optical axis z).
        intrinsics: (B, N, 3, 3) K of the network-input images.
        T_base_from_cam: (B, N, 4, 4) camera (optical) -> base_link.
        image_hw, feat_hw: network-input image and feature map sizes.

    Returns:
        (B, N, D, h, w, 3) float32 points in base_link.
    """
    dev = intrinsics.device
    u, v = feature_pixel_centres(image_hw, feat_hw, dev)
    h, w = feat_hw
    D = depths.numel()
    pix = torch.stack([u.view(1, w).expand(h, w), v.view(h, 1).expand(h, w), torch.ones(h, w, device=dev)], -1)
    rays = torch.einsum("bnij,hwj->bnhwi", torch.linalg.inv(intrinsics.float()), pix)  # (B, N, h, w, 3), z = 1
    pts = rays[:, :, None] * depths.to(dev).view(1, 1, D, 1, 1, 1)  # (B, N, D, h, w, 3) camera frame
    T = T_base_from_cam.float()
    return torch.einsum("bnij,bndhwj->bndhwi", T[..., :3, :3], pts) + T[:, :, None, None, None, :3, 3]


def lidar_depth_targets(points: list[torch.Tensor], intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
                        image_hw: tuple[int, int], feat_hw: tuple[int, int], cfg: LSSConfig) -> torch.Tensor:
    """Depth-bin targets from LiDAR: nearest return per feature pixel (BEVDet's min pooling).

    Args:
        points: B tensors (P_i, >=3), x, y, z in base_link.
        intrinsics: (B, N, 3, 3), T_base_from_cam: (B, N, 4, 4) of the network-input images.
        image_hw, feat_hw: image and feature map sizes.

    Returns:
        (B*N, h, w) int64 depth bin of the nearest point projecting into each feature pixel;
        -1 where no point falls or its depth is outside the bins.
    """
    B, N = intrinsics.shape[:2]
    (H, W), (h, w) = image_hw, feat_hw
    lo, hi, step = cfg.depth
    D = int(round((hi - lo) / step))
    dev = intrinsics.device
    out = torch.full((B * N * h * w,), float("inf"), device=dev)
    T_cam_from_base = torch.linalg.inv(T_base_from_cam.float())
    for b in range(B):  # per sample: point counts differ
        p = points[b][:, :3].float().to(dev)
        pc = torch.einsum("nij,pj->npi", T_cam_from_base[b, :, :3, :3], p) + T_cam_from_base[b, :, None, :3, 3]
        z = pc[..., 2]
        uvw = torch.einsum("nij,npj->npi", intrinsics[b].float(), pc)
        u = uvw[..., 0] / z.clamp_min(1e-6)
        v = uvw[..., 1] / z.clamp_min(1e-6)
        fx = torch.floor((u + 0.5) * (w / W)).long()
        fy = torch.floor((v + 0.5) * (h / H)).long()
        ok = (z > 1e-3) & (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
        cam = torch.arange(N, device=dev)[:, None].expand_as(z)
        flat = ((b * N + cam) * h + fy) * w + fx
        out.scatter_reduce_(0, flat[ok], z[ok], reduce="amin")
    bins = torch.floor((out - lo) / step)
    valid = torch.isfinite(out) & (bins >= 0) & (bins < D)
    return torch.where(valid, bins, torch.full_like(bins, -1)).long().view(B * N, h, w)


def depth_loss(depth_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the LiDAR depth bin.

    Args:
        depth_probs: (B*N, D, h, w) softmax depth distributions.
        targets: (B*N, h, w) int64 bins, -1 = no LiDAR depth (ignored).
    """
    valid = targets >= 0
    if not bool(valid.any()):
        return depth_probs.sum() * 0.0
    p = depth_probs.permute(0, 2, 3, 1)[valid]  # (M, D)
    return -torch.log(p.gather(1, targets[valid][:, None]).clamp_min(1e-6)).mean()


@dataclass
class LSSOutput:
    """Result of the view transformer.

    Attributes:
        voxels: (B, C, X, Y, Z) context features splatted into the feature grid (base_link).
        depth_probs: (B*N, D, h, w) depth distributions.
    """

    voxels: torch.Tensor
    depth_probs: torch.Tensor


class LSSViewTransformer(nn.Module):
    """Image features (B*N, C_in, h, w) + camera geometry -> voxel features (B, C, X, Y, Z)."""

    def __init__(self, cfg: LSSConfig, in_channels: int, grid: GridSpec):
        super().__init__()
        self.cfg = cfg
        self.grid = grid
        self.register_buffer("depths", depth_bin_centres(cfg), persistent=False)
        self.D = self.depths.numel()
        self.channels = cfg.channels
        self.depth_net = nn.Sequential(conv_bn_relu(in_channels, in_channels), nn.Conv2d(in_channels, self.D + cfg.channels, 1))

    def forward(self, feats: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
                image_hw: tuple[int, int]) -> LSSOutput:
        """feats (B*N, C_in, h, w); intrinsics (B, N, 3, 3); T_base_from_cam (B, N, 4, 4)."""
        B, N = intrinsics.shape[:2]
        h, w = feats.shape[-2:]
        x = self.depth_net(feats)
        depth = x[:, : self.D].float().softmax(1)  # (B*N, D, h, w)
        ctx = x[:, self.D:].float().permute(0, 2, 3, 1).contiguous()  # (B*N, h, w, C)
        with torch.no_grad():
            plan = prepare_bev_pool(frustum_points(self.depths, intrinsics, T_base_from_cam, image_hw, (h, w)), self.grid)
        vox = bev_pool(depth.contiguous(), ctx, plan)  # (B, C, Z, Y, X)
        return LSSOutput(vox.permute(0, 1, 4, 3, 2).contiguous(), depth)


def project_to_cameras(points: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
                       image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image coordinates of base_link points in each camera (for ``grid_sample``).

    Args:
        points: (P, 3) base_link; intrinsics (N, 3, 3); T_base_from_cam (N, 4, 4); image (H, W).

    Returns:
        (N, P, 2) coordinates in [-1, 1] (``align_corners=False``), (N, P) bool in front and inside.
    """
    H, W = image_hw
    T = torch.linalg.inv(T_base_from_cam.float())
    pc = torch.einsum("nij,pj->npi", T[:, :3, :3], points.float()) + T[:, None, :3, 3]
    z = pc[..., 2]
    uvw = torch.einsum("nij,npj->npi", intrinsics.float(), pc)
    u = uvw[..., 0] / z.clamp_min(1e-3)
    v = uvw[..., 1] / z.clamp_min(1e-3)
    grid = torch.stack([(u + 0.5) / W * 2 - 1, (v + 0.5) / H * 2 - 1], -1)
    ok = (z > 0.1) & (grid.abs() <= 1).all(-1)
    return grid, ok


def sample_image_features(feats: torch.Tensor, points: torch.Tensor, intrinsics: torch.Tensor,
                          T_base_from_cam: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Mean over the cameras that see them of bilinear image features at base_link points.

    Args:
        feats: (N, C, h, w) one sample's camera features; points (P, 3) base_link;
            intrinsics (N, 3, 3); T_base_from_cam (N, 4, 4).

    Returns:
        (P, C); zeros for points no camera sees.
    """
    grid, ok = project_to_cameras(points, intrinsics, T_base_from_cam, image_hw)
    s = F.grid_sample(feats, grid[:, :, None].to(feats.dtype), align_corners=False)[..., 0]  # (N, C, P)
    s = (s * ok[:, None].to(s.dtype)).sum(0)  # (C, P)
    return (s / ok.sum(0).clamp_min(1).to(s.dtype)).t()
