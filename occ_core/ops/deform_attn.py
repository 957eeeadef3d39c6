"""Multi-scale deformable attention (Deformable DETR / BEVFormer), forward and backward.

Each query samples the value maps of every head at a few learned locations per feature
level and returns the attention-weighted sum of the samples:

    out[b, q, h*D + d] = sum over levels l, points p of
        attention_weights[b, q, h, l, p] *
        bilinear(value of level l, head h, channel d; at sampling_locations[b, q, h, l, p])

Conventions (the same as mmcv's ``multi_scale_deformable_attn_pytorch`` and the CUDA op of
Deformable DETR, so that weights and configs carry over):

- ``value`` (bs, num_keys, heads, D): the feature maps of all levels, each flattened row-major
  (level l occupies keys ``level_start_index[l] : level_start_index[l] + H_l*W_l``, key
  ``start + y*W_l + x`` is pixel (x, y)).
- ``spatial_shapes`` (levels, 2) integer ``(H_l, W_l)``; ``level_start_index`` (levels,) the
  exclusive cumulative sum of ``H_l*W_l``.
- ``sampling_locations`` (bs, q, heads, levels, points, 2) ``(x, y)`` normalised to [0, 1]
  per level: 0 is the left/top edge of the map and 1 its right/bottom edge, so pixel (i, j)'s
  centre is ``((i + 0.5)/W_l, (j + 0.5)/H_l)`` (``F.grid_sample`` with ``align_corners=False``
  after mapping to [-1, 1]).
- Bilinear interpolation with zero padding: each of the four neighbours outside the map
  contributes 0 (a location further than half a pixel outside the map samples 0).
- ``attention_weights`` (bs, q, heads, levels, points), used as given (callers softmax them).
- Output (bs, q, heads*D), channel ``h*D + d``.

Two implementations, chosen per call by :func:`occ_core.ops.backend.resolve_backend`:

- :func:`ms_deform_attn_torch`: ``F.grid_sample`` per level; autograd differentiates it.
- the Triton kernels of :mod:`occ_core.ops.triton.deform_attn_kernel`: a forward kernel and a
  hand-written backward kernel (gradients for value, sampling_locations and attention_weights;
  the value gradient is accumulated with atomics, so its float32 rounding order varies from run
  to run). Not twice differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occ_core.ops.backend import resolve_backend


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_deform_attn_inputs(value: torch.Tensor, spatial_shapes, level_start_index, sampling_locations: torch.Tensor,
                             attention_weights: torch.Tensor) -> tuple[list[tuple[int, int]], list[int]]:
    """Validate the arguments of :func:`ms_deform_attn`; returns the level shapes and starts
    as Python ints (host copies; one device sync for CUDA index tensors).

    Raises:
        ValueError: naming the argument that is wrong and what was expected.
    """
    where = "ms_deform_attn"
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or not value.is_floating_point():
        raise ValueError(f"{where}: value must be a float tensor (bs, num_keys, heads, dim), got "
                         f"{getattr(value, 'dtype', type(value))} {_shape(value) if isinstance(value, torch.Tensor) else ''}")
    ss = torch.as_tensor(spatial_shapes)
    if ss.ndim != 2 or ss.shape[1] != 2 or ss.shape[0] == 0 or ss.is_floating_point() or ss.dtype == torch.bool:
        raise ValueError(f"{where}: spatial_shapes must be an integer tensor (levels, 2) of (H, W), got {ss.dtype} {_shape(ss)}")
    shapes = [(int(h), int(w)) for h, w in ss.tolist()]
    if min(min(s) for s in shapes) <= 0:
        raise ValueError(f"{where}: spatial_shapes must be positive (H, W) per level, got {shapes}")
    L = len(shapes)
    lsi = torch.as_tensor(level_start_index)
    if lsi.shape != (L,) or lsi.is_floating_point():
        raise ValueError(f"{where}: level_start_index must be an integer tensor ({L},) (one start per level of "
                         f"spatial_shapes), got {lsi.dtype} {_shape(lsi)}")
    starts = [int(s) for s in lsi.tolist()]
    expected = [sum(h * w for h, w in shapes[:i]) for i in range(L)]
    if starts != expected:
        raise ValueError(f"{where}: level_start_index must be the exclusive cumulative sum of H*W, {expected}, got {starts}")
    bs, K, NH, _ = value.shape
    total = sum(h * w for h, w in shapes)
    if K != total:
        raise ValueError(f"{where}: value has {K} keys (dim 1) but spatial_shapes {shapes} cover {total}")
    loc = sampling_locations
    if (not isinstance(loc, torch.Tensor) or loc.ndim != 6 or loc.shape[0] != bs or loc.shape[2] != NH
            or loc.shape[3] != L or loc.shape[5] != 2 or not loc.is_floating_point()):
        raise ValueError(f"{where}: sampling_locations must be a float tensor (bs={bs}, q, heads={NH}, levels={L}, "
                         f"points, 2), got {_shape(loc) if isinstance(loc, torch.Tensor) else type(loc)}")
    aw = attention_weights
    if not isinstance(aw, torch.Tensor) or _shape(aw) != _shape(loc)[:5] or not aw.is_floating_point():
        raise ValueError(f"{where}: attention_weights must be a float tensor {_shape(loc)[:5]} (sampling_locations "
                         f"without the last dim), got {_shape(aw) if isinstance(aw, torch.Tensor) else type(aw)}")
    for name, t in (("sampling_locations", loc), ("attention_weights", aw)):
        if t.device != value.device:
            raise ValueError(f"{where}: {name} is on {t.device}, value on {value.device}")
    return shapes, starts


def ms_deform_attn_torch(value: torch.Tensor, spatial_shapes, level_start_index, sampling_locations: torch.Tensor,
                         attention_weights: torch.Tensor) -> torch.Tensor:
    """Torch reference of :func:`ms_deform_attn` (``F.grid_sample`` per level, differentiable by
    autograd in value, sampling_locations and attention_weights). Shapes as there."""
    shapes, starts = check_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                              attention_weights)
    return _reference(value, shapes, starts, sampling_locations, attention_weights)


def _reference(value: torch.Tensor, shapes: list[tuple[int, int]], starts: list[int], sampling_locations: torch.Tensor,
               attention_weights: torch.Tensor) -> torch.Tensor:
    bs, _, NH, D = value.shape
    Q, P = sampling_locations.shape[1], sampling_locations.shape[4]
    if bs * Q * NH * D == 0 or P == 0:
        return value.new_zeros(bs, Q, NH * D)
    # [0, 1] -> [-1, 1]; (bs, Q, NH, L, P, 2) -> per level (bs*NH, Q, P, 2)
    grids = sampling_locations.to(value.dtype) * 2 - 1
    weights = attention_weights.to(value.dtype)
    out = None
    for lvl, ((H, W), s) in enumerate(zip(shapes, starts)):
        v = value[:, s:s + H * W].permute(0, 2, 3, 1).reshape(bs * NH, D, H, W)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(bs * NH, Q, P, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (bs*NH, D, Q, P)
        a = weights[:, :, :, lvl].transpose(1, 2).reshape(bs * NH, 1, Q, P)
        term = (sampled * a).sum(-1)  # (bs*NH, D, Q)
        out = term if out is None else out + term
    return out.view(bs, NH * D, Q).transpose(1, 2).contiguous()


def ms_deform_attn(value: torch.Tensor, spatial_shapes, level_start_index, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Multi-scale deformable attention; see the module docstring for the conventions.

    Args:
        value: (bs, num_keys, heads, D) float, all levels flattened row-major.
        spatial_shapes: (levels, 2) integer ``(H_l, W_l)`` (tensor or nested list).
        level_start_index: (levels,) integer, ``[0, H_0*W_0, H_0*W_0 + H_1*W_1, ...]``.
        sampling_locations: (bs, q, heads, levels, points, 2) ``(x, y)`` in [0, 1] per level.
        attention_weights: (bs, q, heads, levels, points).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; None reads ``$OCC_OPS_BACKEND``.

    Returns:
        (bs, q, heads*D) in value's dtype; differentiable in value, sampling_locations and
        attention_weights with either backend.

    Raises:
        ValueError: a bad shape, dtype or level index, naming the argument.
    """
    shapes, starts = check_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                              attention_weights)
    if resolve_backend(backend, value.device) == "triton":
        from occ_core.ops.triton.deform_attn_kernel import ms_deform_attn_triton

        return ms_deform_attn_triton(value, shapes, starts, sampling_locations, attention_weights)
    return _reference(value, shapes, starts, sampling_locations, attention_weights)
