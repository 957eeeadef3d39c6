"""Triton kernels of :mod:`occ_core.ops.bev_pool` (BEVPoolv2 forward and backward).

- forward: one program per (voxel interval, channel block) sums ``depth * feat`` over the
  interval's frustum points and writes the voxel once into the (B, C, Z*Y*X) output (no atomics);
- backward, depth: one program per block of frustum points, ``sum_c grad_out * feat``
  (each depth element belongs to one frustum point);
- backward, feat: one program per (feature interval, channel block): the frustum points of one
  pixel (its depth bins), sorted by ``ranks_feat`` in the plan, ``sum depth * grad_out``.

Accumulation in float32 (float64 for float64 inputs). Imported only when the Triton backend is
chosen; CPU tensors need ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from occ_core.ops.bev_pool import BevPoolPlan


@triton.jit
def _fwd_kernel(depth_ptr, feat_ptr, out_ptr, rd_ptr, rf_ptr, rb_ptr, start_ptr, len_ptr, C, NV,
                BLOCK_C: tl.constexpr):
    iv = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cols < C
    start = tl.load(start_ptr + iv)
    length = tl.load(len_ptr + iv)
    acc = tl.zeros([BLOCK_C], dtype=out_ptr.dtype.element_ty)
    for i in range(start, start + length):
        d = tl.load(depth_ptr + tl.load(rd_ptr + i))
        f = tl.load(feat_ptr + tl.load(rf_ptr + i) * C + cols, mask=cm, other=0.0)
        acc += d * f
    rb = tl.load(rb_ptr + start)  # b * NV + voxel; out is (B, C, NV)
    tl.store(out_ptr + ((rb // NV) * C + cols) * NV + rb % NV, acc, mask=cm)


@triton.jit
def _grad_depth_kernel(gout_ptr, feat_ptr, gdepth_ptr, rd_ptr, rf_ptr, rb_ptr, P, C, NV,
                       BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    rm = rows < P
    rd = tl.load(rd_ptr + rows, mask=rm, other=0)
    rf = tl.load(rf_ptr + rows, mask=rm, other=0)
    rb = tl.load(rb_ptr + rows, mask=rm, other=0)
    acc = tl.zeros([BLOCK_P], dtype=gdepth_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        m2 = rm[:, None] & (cols[None, :] < C)
        g = tl.load(gout_ptr + ((rb // NV)[:, None] * C + cols[None, :]) * NV + (rb % NV)[:, None], mask=m2, other=0.0)
        f = tl.load(feat_ptr + rf[:, None] * C + cols[None, :], mask=m2, other=0.0)
        acc += tl.sum(g * f, axis=1)
    tl.store(gdepth_ptr + rd, acc, mask=rm)


@triton.jit
def _grad_feat_kernel(gout_ptr, depth_ptr, gfeat_ptr, rd_ptr, rf_ptr, rb_ptr, order_ptr, start_ptr, len_ptr, C, NV,
                      BLOCK_C: tl.constexpr):
    iv = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cols < C
    start = tl.load(start_ptr + iv)
    length = tl.load(len_ptr + iv)
    acc = tl.zeros([BLOCK_C], dtype=gfeat_ptr.dtype.element_ty)
    for i in range(start, start + length):
        p = tl.load(order_ptr + i)
        d = tl.load(depth_ptr + tl.load(rd_ptr + p))
        rb = tl.load(rb_ptr + p)
        g = tl.load(gout_ptr + ((rb // NV) * C + cols) * NV + rb % NV, mask=cm, other=0.0)
        acc += d * g
    rf = tl.load(rf_ptr + tl.load(order_ptr + start))
    tl.store(gfeat_ptr + rf * C + cols, acc, mask=cm)


def _block_c(C: int) -> int:
    return max(4, min(128, triton.next_power_of_2(C)))


class _BevPoolTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, depth: torch.Tensor, feat: torch.Tensor, plan: BevPoolPlan) -> torch.Tensor:
        C = feat.shape[-1]
        acc = torch.float64 if torch.float64 in (depth.dtype, feat.dtype) else torch.float32
        d = depth.detach().to(acc).contiguous().view(-1)
        f = feat.detach().to(acc).contiguous().view(-1, C)
        X, Y, Z = plan.dims
        NV = X * Y * Z
        out = torch.zeros(plan.batch, C, NV, dtype=acc, device=feat.device)
        V = plan.interval_starts.numel()
        if V and C:
            BLOCK_C = _block_c(C)
            _fwd_kernel[(V, triton.cdiv(C, BLOCK_C))](d, f, out, plan.ranks_depth, plan.ranks_feat, plan.ranks_bev,
                                                       plan.interval_starts, plan.interval_lengths, C, NV, BLOCK_C=BLOCK_C)
        ctx.plan = plan
        ctx.dtypes = (depth.dtype, feat.dtype)
        ctx.save_for_backward(d, f)
        return out.to(torch.promote_types(depth.dtype, feat.dtype))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        plan: BevPoolPlan = ctx.plan
        d, f = ctx.saved_tensors
        C = f.shape[1]
        X, Y, Z = plan.dims
        NV = X * Y * Z
        g = grad_out.to(d.dtype).contiguous()
        gdepth = torch.zeros_like(d)
        gfeat = torch.zeros_like(f)
        P = plan.ranks_depth.numel()
        if P and C:
            BLOCK_C = _block_c(C)
            if ctx.needs_input_grad[0]:
                BLOCK_P = 64
                _grad_depth_kernel[(triton.cdiv(P, BLOCK_P),)](g, f, gdepth, plan.ranks_depth, plan.ranks_feat,
                                                               plan.ranks_bev, P, C, NV, BLOCK_P=BLOCK_P,
                                                               BLOCK_C=min(BLOCK_C, 32))
            if ctx.needs_input_grad[1]:
                Fn = plan.feat_interval_starts.numel()
                _grad_feat_kernel[(Fn, triton.cdiv(C, BLOCK_C))](g, d, gfeat, plan.ranks_depth, plan.ranks_feat,
                                                                  plan.ranks_bev, plan.feat_order,
                                                                  plan.feat_interval_starts, plan.feat_interval_lengths,
                                                                  C, NV, BLOCK_C=BLOCK_C)
        dt_depth, dt_feat = ctx.dtypes
        BN, D, H, W = plan.batch * plan.cameras, plan.depth_bins, plan.height, plan.width
        return gdepth.view(BN, D, H, W).to(dt_depth), gfeat.view(BN, H, W, C).to(dt_feat), None


def bev_pool_triton(depth: torch.Tensor, feat: torch.Tensor, plan: BevPoolPlan) -> torch.Tensor:
    """Voxel features (B, C, Z*Y*X); differentiable (hand-written backward)."""
    return _BevPoolTriton.apply(depth, feat, plan)
