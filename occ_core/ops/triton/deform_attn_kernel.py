"""Triton kernels of :mod:`occ_core.ops.deform_attn` (multi-scale deformable attention).

- forward: one program per (block of BLOCK_Q flattened (batch, query) rows, head) holds a
  (BLOCK_Q, D) accumulator; for every level and point it loads the four bilinear neighbours
  of each row's sampling location (rows of ``D`` contiguous channels of ``value``; neighbours
  outside the map are masked to 0, i.e. ``grid_sample`` zero padding) and adds
  ``weight * bilinear`` to the accumulator, written once at the end;
- backward: the same walk with ``grad_out`` loaded once per program; per (row, level, point)
  it writes the attention-weight gradient ``<grad_out, sample>`` and the location gradient
  ``weight * (W_l, H_l) * <grad_out, d sample / d (x, y)>`` directly (each belongs to one
  program), and adds ``weight * corner weight * grad_out`` to the four neighbours' value
  gradients with atomics (neighbours are shared between queries).

Pixel coordinates follow ``grid_sample(align_corners=False)``: ``x_pix = x * W_l - 0.5``.
Locations far outside a map are clamped to ``[-2, W_l + 1]`` before ``floor`` (all four
neighbours stay outside, so nothing changes but the integer conversion cannot overflow).
Accumulation in float32 (float64 for float64 inputs). Imported only when the Triton backend is
chosen; CPU tensors need ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _corner(value_ptr, b, start, xi, yi, Hl, Wl, K, NH, h, D, cols, m2):
    """One bilinear neighbour (xi, yi) per row: values (BLOCK_Q, BLOCK_D), offsets, mask."""
    ok = (xi >= 0) & (xi < Wl) & (yi >= 0) & (yi < Hl)
    key = start + yi * Wl + xi
    offs = (((b * K + key) * NH + h) * D)[:, None] + cols[None, :]
    msk = m2 & ok[:, None]
    return tl.load(value_ptr + offs, mask=msk, other=0.0), offs, msk


@triton.jit
def _location(loc_ptr, i, rm, Hl, Wl):
    """Pixel coordinates of the sampling location ``i`` (rows): floor corner and fractions."""
    Wf = Wl.to(tl.float32)
    Hf = Hl.to(tl.float32)
    x = tl.load(loc_ptr + 2 * i, mask=rm, other=0.0) * Wf - 0.5
    y = tl.load(loc_ptr + 2 * i + 1, mask=rm, other=0.0) * Hf - 0.5
    x = tl.minimum(tl.maximum(x, -2.0), Wf + 1.0)
    y = tl.minimum(tl.maximum(y, -2.0), Hf + 1.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    return x0f.to(tl.int64), y0f.to(tl.int64), x - x0f, y - y0f


@triton.jit
def _fwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, NQ, Q, K, NH, D, L, P,
                BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    h = tl.program_id(1)
    rows = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)
    rm = rows < NQ
    b = rows // Q
    cols = tl.arange(0, BLOCK_D)
    m2 = rm[:, None] & (cols < D)[None, :]
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=out_ptr.dtype.element_ty)
    for lvl in range(L):
        Hl = tl.load(shapes_ptr + 2 * lvl).to(tl.int64)
        Wl = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int64)
        start = tl.load(starts_ptr + lvl).to(tl.int64)
        for p in range(P):
            i = ((rows * NH + h) * L + lvl) * P + p
            w = tl.load(attn_ptr + i, mask=rm, other=0.0)
            x0, y0, lx, ly = _location(loc_ptr, i, rm, Hl, Wl)
            hx = 1.0 - lx
            hy = 1.0 - ly
            v00, _o, _m = _corner(value_ptr, b, start, x0, y0, Hl, Wl, K, NH, h, D, cols, m2)
            v01, _o, _m = _corner(value_ptr, b, start, x0 + 1, y0, Hl, Wl, K, NH, h, D, cols, m2)
            v10, _o, _m = _corner(value_ptr, b, start, x0, y0 + 1, Hl, Wl, K, NH, h, D, cols, m2)
            v11, _o, _m = _corner(value_ptr, b, start, x0 + 1, y0 + 1, Hl, Wl, K, NH, h, D, cols, m2)
            s = ((hy * hx)[:, None] * v00 + (hy * lx)[:, None] * v01 + (ly * hx)[:, None] * v10
                 + (ly * lx)[:, None] * v11)
            acc += w[:, None] * s
    tl.store(out_ptr + ((rows * NH + h) * D)[:, None] + cols[None, :], acc, mask=m2)


@triton.jit
def _bwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, gout_ptr, gvalue_ptr, gloc_ptr, gattn_ptr,
                NQ, Q, K, NH, D, L, P, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    h = tl.program_id(1)
    rows = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)
    rm = rows < NQ
    b = rows // Q
    cols = tl.arange(0, BLOCK_D)
    m2 = rm[:, None] & (cols < D)[None, :]
    g = tl.load(gout_ptr + ((rows * NH + h) * D)[:, None] + cols[None, :], mask=m2, other=0.0)
    for lvl in range(L):
        Hl = tl.load(shapes_ptr + 2 * lvl).to(tl.int64)
        Wl = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int64)
        start = tl.load(starts_ptr + lvl).to(tl.int64)
        for p in range(P):
            i = ((rows * NH + h) * L + lvl) * P + p
            w = tl.load(attn_ptr + i, mask=rm, other=0.0)
            x0, y0, lx, ly = _location(loc_ptr, i, rm, Hl, Wl)
            hx = 1.0 - lx
            hy = 1.0 - ly
            v00, o00, m00 = _corner(value_ptr, b, start, x0, y0, Hl, Wl, K, NH, h, D, cols, m2)
            v01, o01, m01 = _corner(value_ptr, b, start, x0 + 1, y0, Hl, Wl, K, NH, h, D, cols, m2)
            v10, o10, m10 = _corner(value_ptr, b, start, x0, y0 + 1, Hl, Wl, K, NH, h, D, cols, m2)
            v11, o11, m11 = _corner(value_ptr, b, start, x0 + 1, y0 + 1, Hl, Wl, K, NH, h, D, cols, m2)
            s = ((hy * hx)[:, None] * v00 + (hy * lx)[:, None] * v01 + (ly * hx)[:, None] * v10
                 + (ly * lx)[:, None] * v11)
            tl.store(gattn_ptr + i, tl.sum(g * s, axis=1), mask=rm)
            dx = hy[:, None] * (v01 - v00) + ly[:, None] * (v11 - v10)  # d sample / d x_pix
            dy = hx[:, None] * (v10 - v00) + lx[:, None] * (v11 - v01)  # d sample / d y_pix
            tl.store(gloc_ptr + 2 * i, w * Wl.to(tl.float32) * tl.sum(g * dx, axis=1), mask=rm)
            tl.store(gloc_ptr + 2 * i + 1, w * Hl.to(tl.float32) * tl.sum(g * dy, axis=1), mask=rm)
            wg = w[:, None] * g
            tl.atomic_add(gvalue_ptr + o00, (hy * hx)[:, None] * wg, mask=m00)
            tl.atomic_add(gvalue_ptr + o01, (hy * lx)[:, None] * wg, mask=m01)
            tl.atomic_add(gvalue_ptr + o10, (ly * hx)[:, None] * wg, mask=m10)
            tl.atomic_add(gvalue_ptr + o11, (ly * lx)[:, None] * wg, mask=m11)


def _blocks(D: int) -> tuple[int, int]:
    BLOCK_D = max(4, triton.next_power_of_2(D))
    return max(1, min(64, 4096 // BLOCK_D)), BLOCK_D


class _MSDeformAttnTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, shapes_t, starts_t, sampling_locations, attention_weights):
        acc = torch.float64 if torch.float64 in (value.dtype, sampling_locations.dtype, attention_weights.dtype) \
            else torch.float32
        v = value.detach().to(acc).contiguous()
        loc = sampling_locations.detach().to(acc).contiguous()
        attn = attention_weights.detach().to(acc).contiguous()
        bs, K, NH, D = v.shape
        Q, L, P = loc.shape[1], loc.shape[3], loc.shape[4]
        out = torch.zeros(bs, Q, NH, D, dtype=acc, device=v.device)
        BLOCK_Q, BLOCK_D = _blocks(D)
        if bs * Q * NH * D * P:
            _fwd_kernel[(triton.cdiv(bs * Q, BLOCK_Q), NH)](v, shapes_t, starts_t, loc, attn, out, bs * Q, Q, K, NH, D,
                                                            L, P, BLOCK_Q=BLOCK_Q, BLOCK_D=BLOCK_D)
        ctx.save_for_backward(v, shapes_t, starts_t, loc, attn)
        ctx.dtypes = (value.dtype, sampling_locations.dtype, attention_weights.dtype)
        return out.view(bs, Q, NH * D).to(value.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        v, shapes_t, starts_t, loc, attn = ctx.saved_tensors
        bs, K, NH, D = v.shape
        Q, L, P = loc.shape[1], loc.shape[3], loc.shape[4]
        g = grad_out.to(v.dtype).contiguous()
        gv, gloc, gattn = torch.zeros_like(v), torch.zeros_like(loc), torch.zeros_like(attn)
        BLOCK_Q, BLOCK_D = _blocks(D)
        if bs * Q * NH * D * P:
            _bwd_kernel[(triton.cdiv(bs * Q, BLOCK_Q), NH)](v, shapes_t, starts_t, loc, attn, g, gv, gloc, gattn,
                                                            bs * Q, Q, K, NH, D, L, P, BLOCK_Q=BLOCK_Q, BLOCK_D=BLOCK_D)
        dv, dl, da = ctx.dtypes
        return gv.to(dv), None, None, gloc.to(dl), gattn.to(da)


def ms_deform_attn_triton(value: torch.Tensor, shapes: list[tuple[int, int]], starts: list[int],
                          sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """(bs, q, heads*D) from checked inputs (``shapes``/``starts`` as Python ints, see
    :func:`occ_core.ops.deform_attn.check_deform_attn_inputs`); differentiable (Triton backward)."""
    dev = value.device
    shapes_t = torch.tensor(shapes, dtype=torch.int64, device=dev).view(-1)
    starts_t = torch.tensor(starts, dtype=torch.int64, device=dev)
    return _MSDeformAttnTriton.apply(value, shapes_t, starts_t, sampling_locations, attention_weights)
