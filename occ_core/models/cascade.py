"""CONet cascade refinement (OpenOccupancy's Cascade Occupancy Network).

The coarse prediction lives on the feature grid (X', Y', Z'); CONet refines only where the
coarse prediction says "occupied":

1. a coarse classifier gives logits (B, K, X', Y', Z'); the head's logits (B, K, X, Y, Z) on the
   output grid are the starting point of the fine grid;
2. per sample, the coarse voxels predicted non-free (at most ``max_voxels``, the most
   confidently occupied first) are split into their sx*sy*sz fine voxels;
3. at each fine voxel centre (base_link) we gather the fused voxel features and the LiDAR
   voxel features (trilinear), the image features of every camera that sees it (bilinear,
   mean over cameras), the head's logits and the position inside the coarse voxel;
4. an MLP predicts a residual on the head's logits there, which replaces those voxels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from occ_core.grid import GridSpec
from occ_core.models.config import CascadeConfig
from occ_core.models.lss import sample_image_features


def _sample_voxels(vox: torch.Tensor, points: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Trilinear features of one sample's voxel grid vox (C, X, Y, Z) at points (P, 3) -> (P, C)."""
    lo = torch.tensor(grid.range_min, dtype=points.dtype, device=points.device)
    ext = torch.tensor([d * v for d, v in zip(grid.dims, grid.voxel_size)], dtype=points.dtype, device=points.device)
    g = ((points - lo) / ext * 2 - 1).to(vox.dtype)  # (x, y, z) -> grid_sample's (W, H, D)
    s = F.grid_sample(vox.permute(0, 3, 2, 1)[None], g.view(1, 1, 1, -1, 3), align_corners=False)
    return s[0, :, 0, 0].t()


class CascadeRefiner(nn.Module):
    """Coarse logits + features -> fine logits (B, K, X, Y, Z) on the output grid."""

    def __init__(self, cfg: CascadeConfig, num_classes: int, free_label: int, voxel_channels: int,
                 image_channels: int, lidar_channels: int, grid: GridSpec, stride: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.grid = grid
        self.stride = tuple(stride)
        self.free = free_label
        sx, sy, sz = stride
        offs = torch.stack(torch.meshgrid(torch.arange(sx), torch.arange(sy), torch.arange(sz), indexing="ij"), -1).view(-1, 3)
        self.register_buffer("offsets", offs, persistent=False)  # (S, 3) fine index inside a coarse voxel
        cin = voxel_channels + image_channels + lidar_channels + num_classes + 3
        self.mlp = nn.Sequential(nn.Linear(cin, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, num_classes))

    def forward(self, coarse: torch.Tensor, base: torch.Tensor, voxels: torch.Tensor, image_feats: torch.Tensor | None,
                intrinsics: torch.Tensor | None, T_base_from_cam: torch.Tensor | None, image_hw: tuple[int, int] | None,
                lidar_voxels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Refine.

        Args:
            coarse: (B, K, X', Y', Z') coarse logits (choose the voxels to refine).
            base: (B, K, X, Y, Z) logits on the output grid to refine.
            voxels: (B, C, X', Y', Z') fused features.
            image_feats: (B*N, Ci, h, w) or None; intrinsics (B, N, 3, 3), T_base_from_cam
                (B, N, 4, 4), image_hw of the network input.
            lidar_voxels: (B, Cl, X', Y', Z') or None.

        Returns:
            fine logits (B, K, X, Y, Z), and the (M, 4) int64 ``[b, x, y, z]`` refined voxels.
        """
        B = coarse.shape[0]
        out = base.clone()
        prob = coarse.detach().float().softmax(1)
        pred_occ = prob.argmax(1) != self.free  # (B, X', Y', Z')
        score = torch.where(pred_occ, 1 - prob[:, self.free], torch.full_like(prob[:, 0], -1.0)).flatten(1)
        Xc, Yc, Zc = coarse.shape[-3:]
        st = torch.tensor(self.stride, device=coarse.device)
        lo = torch.tensor(self.grid.range_min, device=coarse.device)
        vs = torch.tensor(self.grid.voxel_size, device=coarse.device)
        refined = []
        N = intrinsics.shape[1] if intrinsics is not None else 0
        for b in range(B):
            k = min(self.cfg.max_voxels, int(pred_occ[b].sum()))
            if k == 0:
                continue
            idx = score[b].topk(k).indices
            cidx = torch.stack([idx // (Yc * Zc), (idx // Zc) % Yc, idx % Zc], 1)  # (k, 3) coarse x, y, z
            fidx = (cidx[:, None] * st + self.offsets[None]).view(-1, 3)  # (k*S, 3) fine x, y, z
            centres = lo + vs * (fidx.float() + 0.5)  # (P, 3) base_link
            parts = [_sample_voxels(voxels[b], centres, self.grid)]
            if image_feats is not None:
                parts.append(sample_image_features(image_feats[b * N:(b + 1) * N], centres, intrinsics[b],
                                                   T_base_from_cam[b], image_hw).to(voxels.dtype))
            if lidar_voxels is not None:
                parts.append(_sample_voxels(lidar_voxels[b], centres, self.grid))
            prior = base[b, :, fidx[:, 0], fidx[:, 1], fidx[:, 2]].t()  # (P, K)
            rel = ((self.offsets.float() + 0.5) / st - 0.5).repeat(k, 1)
            parts += [prior, rel.to(prior.dtype)]
            out[b, :, fidx[:, 0], fidx[:, 1], fidx[:, 2]] = (prior + self.mlp(torch.cat(parts, 1))).t()
            refined.append(torch.cat([torch.full_like(fidx[:, :1], b), fidx], 1))
        ref = torch.cat(refined) if refined else torch.zeros(0, 4, dtype=torch.int64, device=coarse.device)
        return out, ref
