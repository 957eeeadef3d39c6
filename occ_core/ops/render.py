"""Volume rendering of an occupancy field along camera rays (OccNeRF), torch reference.

**Contraction** (OccNeRF's ``world2contracted`` / ``contracted2world``, after Mip-NeRF 360): a
box ROI ``[lo, hi]`` maps linearly onto the inner ``ratio`` of ``[-1, 1]`` per axis and the
rest of space onto the border shell:

    s = (2 (x - lo) / (hi - lo) - 1) * t,   t = ratio / (1 - ratio)   (t = 2 for ratio 2/3)
    c = s / (t + 1)                                  if |s| <= t
    c = sign(s) (1 + t - 1 / (|s| + 1 - t)) / (t + 1)  otherwise     (|c| -> 1 at infinity)

so a grid over ``[-1, 1]^3`` holds the ROI at a fixed resolution in its inner 2/3 and all of
space out to infinity in the outer shell. The same contraction in one dimension (ROI
``[-R, R]``) spaces the **samples along a ray**: ``S`` depths uniform in contracted distance
between ``near`` and ``far`` (linear out to ``R``, then growing), shifted per ray by a uniform
jitter of up to half a step while training.

**Rendering** of one ray with samples at depths ``t_1 < ... < t_S`` (z-depth; the ray direction
has optical z = 1, so its length ``|d| >= 1`` turns depth steps into metres):

- ``"prob"`` (OccNeRF's default): ``p_i = sigmoid(g_i)`` is the probability that sample i is
  occupied; the last sample is set to 1 (every ray ends); weights
  ``w = diff(clamp(cumsum(p), max=1))`` with a leading 0.
- ``"density"`` (NeRF): ``sigma_i = softplus(g_i)`` per metre, ``delta_i = (t_{i+1} - t_i) |d|``
  ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``alpha_S = 1`` (the transmittance left at the far
  plane ends there, as the prob mode's last sample, so weights sum to 1),
  ``w_i = alpha_i prod_{j<i} (1 - alpha_j)``.

Depth = ``sum_i w_i t_i``; semantics = ``sum_i w_i l_i`` (class logits at the samples);
opacity = the weight the ray put before its last sample (the hit probability within ``far``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

RENDER_MODES: tuple[str, ...] = ("prob", "density")


def _t(ratio: float) -> float:
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"contraction ratio must be in (0, 1), got {ratio}")
    return ratio / (1.0 - ratio)


def contract(xyz: torch.Tensor, lo, hi, ratio: float = 2.0 / 3.0) -> torch.Tensor:
    """(..., D) world coordinates -> (..., D) contracted coordinates in (-1, 1) (see the module
    docstring); ``lo``, ``hi``: (D,) the ROI box."""
    t = _t(ratio)
    lo = torch.as_tensor(lo, dtype=xyz.dtype, device=xyz.device)
    hi = torch.as_tensor(hi, dtype=xyz.dtype, device=xyz.device)
    s = (2.0 * (xyz - lo) / (hi - lo) - 1.0) * t
    a = s.abs()
    outer = s.sign() * (1.0 + t - 1.0 / (a.clamp_min(t) + 1.0 - t))
    return torch.where(a <= t, s, outer) / (t + 1.0)


def uncontract(c: torch.Tensor, lo, hi, ratio: float = 2.0 / 3.0) -> torch.Tensor:
    """The inverse of :func:`contract`: (..., D) contracted (|c| < 1) -> world coordinates."""
    t = _t(ratio)
    lo = torch.as_tensor(lo, dtype=c.dtype, device=c.device)
    hi = torch.as_tensor(hi, dtype=c.dtype, device=c.device)
    x = c * (t + 1.0)
    a = x.abs()
    outer = x.sign() * (t - 1.0 + 1.0 / (t + 1.0 - a.clamp(t, t + 1.0 - 1e-6)))
    s = torch.where(a <= t, x, outer) / t
    return 0.5 * (s + 1.0) * (hi - lo) + lo


def sample_depths(n_rays: int, n_samples: int, near: float, far: float, roi: float, ratio: float = 2.0 / 3.0,
                  jitter: bool = False, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_rays, n_samples) increasing depths in [near, far], uniform in 1D contracted distance
    (ROI ``[-roi, roi]`` metres); ``jitter`` shifts each ray's samples by up to half a step."""
    if not 0 < near < far:
        raise ValueError(f"sampler: need 0 < near < far, got near {near}, far {far}")
    lo, hi = torch.tensor([-roi]), torch.tensor([roi])
    c0 = float(contract(torch.tensor([near], dtype=torch.float64), lo, hi, ratio))
    c1 = float(contract(torch.tensor([far], dtype=torch.float64), lo, hi, ratio))
    step = (c1 - c0) / n_samples
    c = c0 + step * (torch.arange(n_samples, dtype=torch.float32, device=device) + 0.5)
    c = c.expand(n_rays, n_samples)
    if jitter:
        c = c + (torch.rand(n_rays, 1, device=device, generator=generator) - 0.5) * step
    d = uncontract(c[..., None], lo.to(device), hi.to(device), ratio)[..., 0]
    return d.clamp(near, far)


@dataclass
class RenderResult:
    """Rendered rays (R of them).

    Attributes:
        depth: (R,) z-depth in metres.
        weights: (R, S) sample weights (each row sums to 1).
        opacity: (R,) the weight before the last sample (hit probability within ``far``).
        semantics: (R, K) rendered class logits, or None.
    """

    depth: torch.Tensor
    weights: torch.Tensor
    opacity: torch.Tensor
    semantics: torch.Tensor | None = None


def render_weights(geo: torch.Tensor, depths: torch.Tensor, ray_norm: torch.Tensor | None, mode: str) -> torch.Tensor:
    """(R, S) sample weights from (R, S) geometry values ``geo`` at ``depths`` (see the module
    docstring); ``ray_norm`` (R,) the direction lengths |d| (density mode; None = 1)."""
    if mode == "prob":
        p = torch.sigmoid(geo)
        p = torch.cat([p[:, :-1], torch.ones_like(p[:, -1:])], 1)
        acc = torch.cumsum(p, 1).clamp(max=1.0)
        return torch.diff(acc, dim=1, prepend=torch.zeros_like(acc[:, :1]))
    if mode == "density":
        sigma = F.softplus(geo)
        delta = torch.diff(depths, dim=1)
        if ray_norm is not None:
            delta = delta * ray_norm[:, None]
        delta = torch.cat([delta, torch.full_like(delta[:, :1], 1e4)], 1)
        alpha = 1.0 - torch.exp(-sigma * delta)
        alpha = torch.cat([alpha[:, :-1], torch.ones_like(alpha[:, -1:])], 1)  # every ray ends at far
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], 1), 1)
        return alpha * trans
    raise ValueError(f"render mode {mode!r} is not one of {RENDER_MODES}")


def render_rays(geo: torch.Tensor, depths: torch.Tensor, mode: str = "prob", ray_norm: torch.Tensor | None = None,
                semantics: torch.Tensor | None = None) -> RenderResult:
    """Render R rays of S samples each.

    Args:
        geo: (R, S) geometry logits (prob mode) or pre-softplus densities (density mode).
        depths: (R, S) increasing sample z-depths in metres.
        mode: ``"prob"`` or ``"density"``.
        ray_norm: (R,) |d| of each ray direction (optical z = 1), for density mode.
        semantics: (R, S, K) class logits at the samples, or None.
    """
    w = render_weights(geo, depths, ray_norm, mode)
    depth = (w * depths).sum(1)
    sem = None if semantics is None else (w[..., None] * semantics).sum(1)
    return RenderResult(depth, w, w[:, :-1].sum(1), sem)


def sample_field(field: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of a voxel field.

    Args:
        field: (B, C, X, Y, Z) values at voxel centres; voxel i of X spans ``[-1 + 2i/X,
            -1 + 2(i+1)/X]`` of its normalised axis.
        coords: (B, P, 3) normalised (x, y, z) in [-1, 1] (e.g. :func:`contract` output).

    Returns:
        (B, P, C); points beyond the outer voxel centres take the border value.
    """
    B, P = coords.shape[:2]
    grid = coords.flip(-1).view(B, P, 1, 1, 3).to(field.dtype)  # grid_sample wants (W, H, D) = (z, y, x)
    out = F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(B, field.shape[1], P).transpose(1, 2)


def distortion_loss(weights: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Mip-NeRF 360 distortion loss per ray, mean over rays.

    Args:
        weights: (R, S) sample weights; s: (R, S + 1) interval edges (normalised distance, e.g.
            contracted), sample i spanning ``[s_i, s_{i+1}]``.

    ``sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (s_{i+1} - s_i)`` with m the midpoints,
    computed in O(S) with prefix sums.
    """
    m = 0.5 * (s[:, 1:] + s[:, :-1])
    ds = s[:, 1:] - s[:, :-1]
    wm = weights * m
    w_cum = torch.cumsum(weights, 1)
    wm_cum = torch.cumsum(wm, 1)
    # sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i W_{<i} - WM_{<i})
    w_prev = w_cum - weights
    wm_prev = wm_cum - wm
    uni = 2.0 * (weights * (m * w_prev - wm_prev)).sum(1)
    bi = (weights ** 2 * ds).sum(1) / 3.0
    return (uni + bi).mean()
