"""LiDAR branch: dynamic voxelization -> spconv sparse 3D encoder -> dense voxel features.

Points (x, y, z, intensity, time_lag_s in base_link) are averaged per voxel of the output
grid (:func:`occ_core.ops.voxelize.dynamic_voxelize`, coordinates ``[z, y, x]`` as spconv
wants them), encoded by submanifold sparse convolutions at that resolution, downsampled to the
feature grid by one strided sparse convolution (kernel = stride), refined by one more
submanifold block and densified to **(B, C, X, Y, Z)** (spconv's dense layout (B, C, Z, Y, X)
is permuted).
"""

from __future__ import annotations

import torch
from torch import nn

from occ_core.grid import GridSpec
from occ_core.models.config import LidarConfig
from occ_core.ops.voxelize import dynamic_voxelize

POINT_FEATURES = 5  # x, y, z, intensity, time_lag_s


def _spconv():
    """Import spconv.pytorch, working around its CPU backward.

    spconv 2.3.8's ``indice_conv_backward`` asks for the current CUDA stream unconditionally,
    which fails on a CPU-only torch ("Torch not compiled with CUDA enabled"); CPU kernels take
    stream 0. Without CUDA we make ``get_current_stream`` return 0 (the value the forward uses
    on CPU); with CUDA nothing changes.
    """
    import spconv.pytorch as spconv
    from spconv.pytorch import ops

    if not torch.cuda.is_available() and not getattr(ops, "_occ_cpu_stream_patch", False):
        ops.get_current_stream = lambda: 0
        ops._occ_cpu_stream_patch = True
    return spconv


class _CpuThreads:
    """Run spconv's CPU kernels with one torch intra-op thread.

    spconv 2.3.8's CPU gather/scatter convolution path gives wrong results now and then when
    torch runs more than one intra-op thread (measured here: 3-11 of 30 identical calls of a
    SubMConv3d / strided SparseConv3d differed from the dense reference with 2 threads, none
    with 1). Forward runs inside this guard; for the backward, a hook on the dense output
    drops to one thread when the gradient reaches the sparse layers and a post-accumulate hook
    on the first layer's weight (the last sparse layer to run backward) restores the count.
    """

    def __init__(self):
        self.saved = None

    def enter(self):
        if self.saved is None:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(1)

    def exit(self, *_):
        if self.saved is not None:
            torch.set_num_threads(self.saved)
            self.saved = None


class LidarEncoder(nn.Module):
    """B point clouds -> dense voxel features (B, C2, X', Y', Z') on the feature grid."""

    def __init__(self, cfg: LidarConfig, grid: GridSpec, stride: tuple[int, int, int]):
        super().__init__()
        sp = _spconv()
        c1, c2 = cfg.channels
        self.grid = grid
        self.stride = stride
        self.channels = c2
        X, Y, Z = grid.dims
        self.out_shape = [Z // stride[2], Y // stride[1], X // stride[0]]
        k = (stride[2], stride[1], stride[0])  # spconv order z, y, x

        def block(cin, cout, key):
            return [sp.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=key), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]

        self.net = sp.SparseSequential(
            *block(POINT_FEATURES, c1, "subm0"), *block(c1, c1, "subm0"),
            sp.SparseConv3d(c1, c2, k, stride=k, bias=False, indice_key="down"), nn.BatchNorm1d(c2), nn.ReLU(inplace=True),
            *block(c2, c2, "subm1"),
        )
        lo = torch.tensor(grid.range_min + (0.0, 0.0), dtype=torch.float32)
        scale = torch.tensor([*(d * v for d, v in zip(grid.dims, grid.voxel_size)), 1.0, 1.0], dtype=torch.float32)
        self.register_buffer("feat_lo", lo, persistent=False)
        self.register_buffer("feat_scale", scale, persistent=False)
        self._threads = _CpuThreads()
        self.net[0].weight.register_post_accumulate_grad_hook(self._threads.exit)

    def forward(self, points: list[torch.Tensor]) -> torch.Tensor:
        """points: B tensors (P_i, 5) in base_link -> (B, C2, X', Y', Z')."""
        sp = _spconv()
        feats, coords = [], []
        for b, p in enumerate(points):
            v = dynamic_voxelize(p[:, :POINT_FEATURES].float(), self.grid)
            # positions relative to the grid box so that inputs are O(1)
            feats.append((v.features - self.feat_lo) / self.feat_scale)
            coords.append(torch.cat([torch.full_like(v.coords[:, :1], b), v.coords], 1))
        feats, coords = torch.cat(feats), torch.cat(coords)
        if feats.shape[0] == 0:  # no point in range in any sample (spconv rejects empty inputs)
            Z, Y, X = self.out_shape
            return feats.new_zeros(len(points), self.channels, X, Y, Z)
        x = sp.SparseConvTensor(feats, coords.int(), list(self.grid.dims[::-1]), len(points))
        if x.features.is_cuda:
            y = self.net(x).dense()
        else:
            self._threads.enter()
            try:
                y = self.net(x).dense()  # (B, C, Z', Y', X')
            finally:
                self._threads.exit()
            if y.requires_grad:
                y.register_hook(self._single_thread_backward)
        return y.permute(0, 1, 4, 3, 2).contiguous()

    def _single_thread_backward(self, grad: torch.Tensor) -> torch.Tensor:
        self._threads.enter()
        return grad
