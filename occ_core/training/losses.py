"""Occupancy losses of the seeds (OpenOccupancy / MonoScene / BEVDet), per sample then averaged.

Every loss is computed per sample on that sample's supervised voxels and averaged over the
batch, so that a DDP step (mean over ranks of per-rank batch means) equals one process on the
concatenated batch.

- class-weighted cross entropy (OpenOccupancy weights ``1 / log(count)``);
- Lovasz-softmax (Berman et al. 2018), over the classes present in the sample;
- ``sem_scal`` and ``geo_scal`` (MonoScene): per class (resp. occupied-vs-free) precision,
  recall and specificity of the soft prediction, each pushed to 1 with BCE;
- depth: NLL of the LiDAR depth bin (:func:`occ_core.models.lss.depth_loss`);
- flow (OpenOcc v2 / OccNet occupancy flow): L1 of the (vx, vy) flow error on supervised
  non-free voxels, **balanced between moving and static voxels**
  (:func:`balanced_flow_l1`). A voxel is moving when its GT speed ``|(vx, vy)|`` exceeds
  ``loss.flow_moving_speed`` (m/s, default 0.1). The per-voxel error ``|dvx| + |dvy|`` is
  averaged separately over the moving and over the static voxels, and the two means are
  averaged, so each group carries half of the term whatever its size (a sample without moving
  voxels, or without static ones, gets the mean of the group it has). On the synthetic world
  only about 6 % of the occupied voxels move; a plain mean over all of them (the previous loss,
  ``flow_moving_speed: 0``) has the median, zero flow, as its optimum, and the head learnt no
  motion (BENCHMARKS.md, *Flow (mAVE)*). With the balanced loss alone and random BEV flips
  the head learnt speed but not the sign of the motion; ``fusion_flow.yaml`` therefore trains
  with ``train.flip: false``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from occ_core.models.config import ModelConfig
from occ_core.models.lss import depth_loss, lidar_depth_targets
from occ_core.models.occnet import OccInputs, OccOutput


def class_weights_from_counts(counts: np.ndarray, power: float) -> torch.Tensor:
    """(K,) float32 CE weights ``(1 / log(count + 1e-3)) ** power`` normalised to mean 1.

    Classes never seen (count 0) get the largest weight of the seen classes.
    """
    c = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(c)
    seen = c > 1
    w[seen] = (1.0 / np.log(c[seen] + 1e-3)) ** power
    w[~seen] = w[seen].max() if seen.any() else 1.0
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension w.r.t. sorted errors (Berman et al., Alg. 1), along the
    last dim: ``gt_sorted`` (..., P) 0/1 ground truth in the order of decreasing error."""
    gts = gt_sorted.sum(-1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(-1)
    union = gts + (1 - gt_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    if gt_sorted.shape[-1] > 1:
        jaccard[..., 1:] = jaccard[..., 1:] - jaccard[..., :-1]
    return jaccard


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax over the classes present in ``labels``, all classes in one batched sort.

    Args:
        probs: (P, K) class probabilities; labels: (P,) int64 in 0..K-1.

    Returns:
        the mean over the present classes c of ``dot(sorted |fg_c - p_c|, lovasz_grad)``
        (equal errors may sort in any order: the value does not depend on it).
    """
    if labels.numel() == 0:
        return probs.sum() * 0.0
    classes = torch.unique(labels)  # (C,)
    fg = (labels[None, :] == classes[:, None]).to(probs.dtype)  # (C, P)
    errors = (fg - probs[:, classes].T).abs()
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    return (errors_sorted * lovasz_grad(torch.gather(fg, 1, perm))).sum(1).mean()


def _bce1(x: torch.Tensor) -> torch.Tensor:
    """Per-element BCE of ratios in (0, 1] against the target 1 (same shape as ``x``)."""
    return F.binary_cross_entropy(x.clamp(1e-6, 1.0), torch.ones_like(x), reduction="none")


def sem_scal_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MonoScene semantic scene-class affinity loss, over the classes present in ``labels``.

    Per class c: BCE-to-1 of the precision and recall of the soft prediction and, when some
    voxels are not c, of its specificity; summed per class and averaged over the classes.
    probs (P, K), labels (P,).
    """
    if labels.numel() == 0:
        return probs.sum() * 0.0
    classes = torch.unique(labels)
    p = probs[:, classes]  # (P, C)
    t = (labels[:, None] == classes[None, :]).to(p.dtype)
    nominator = (p * t).sum(0)
    loss = _bce1(nominator / p.sum(0).clamp_min(1e-6)) + _bce1(nominator / t.sum(0))
    negatives = (1 - t).sum(0)
    has_neg = negatives > 0
    spec = ((1 - p) * (1 - t)).sum(0) / negatives.clamp_min(1.0)
    loss = loss + torch.where(has_neg, _bce1(spec), torch.zeros_like(spec))
    return loss.mean()


def geo_scal_loss(probs: torch.Tensor, labels: torch.Tensor, free: int) -> torch.Tensor:
    """MonoScene geometry scene-class affinity loss (occupied vs free). probs (P, K), labels (P,)."""
    p = 1 - probs[:, free]
    t = (labels != free).to(p.dtype)
    nominator = (p * t).sum()
    loss = probs.sum() * 0.0
    if t.sum() > 0:
        loss = loss + _bce1(nominator / p.sum().clamp_min(1e-6)) + _bce1(nominator / t.sum())
    if (1 - t).sum() > 0:
        loss = loss + _bce1(((1 - p) * (1 - t)).sum() / (1 - t).sum())
    return loss


def balanced_flow_l1(pred: torch.Tensor, gt: torch.Tensor, moving_speed: float) -> torch.Tensor:
    """Flow L1 averaged separately over moving and static voxels, then over the two groups.

    Args:
        pred, gt: (P, 2) predicted and GT (vx, vy) in m/s of the supervised occupied voxels.
        moving_speed: a voxel moves when ``|gt| > moving_speed``; ``<= 0``: one plain mean of
            ``|dvx| + |dvy|`` over all P voxels (no balancing).

    Returns:
        scalar: ``(mean_moving + mean_static) / 2``, or the mean of the only group present
        (0 for P = 0).
    """
    err = (pred - gt).abs().sum(-1)  # (P,)
    if err.numel() == 0:
        return pred.sum() * 0.0
    if moving_speed <= 0:
        return err.mean()
    moving = gt.norm(dim=-1) > moving_speed
    means = [err[m].mean() for m in (moving, ~moving) if m.any()]
    return torch.stack(means).mean()


def height_layer_weights(counts: torch.Tensor, w_min: float = 1.0, w_max: float = 3.0) -> torch.Tensor:
    """HBEVOcc's per-height-layer weights from the occupied voxel count of each layer.

    ``w_z = w_max * (w_min / w_max) ** (count_z / max_z count_z)`` for layers with occupied
    voxels (the fullest layer gets w_min, a nearly empty one tends to w_max), 0 for empty layers.

    Args:
        counts: (Z,) occupied supervised voxels per height layer.

    Returns:
        (Z,) float32 weights.
    """
    c = counts.to(torch.float32)
    top = c.max()
    if top <= 0:
        return torch.zeros_like(c)
    return torch.where(c > 0, w_max * (w_min / w_max) ** (c / top), torch.zeros_like(c))


def height_voxel_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None, free: int,
                      columns: int = 4000, weights: tuple[float, float] = (1.0, 3.0),
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """HBEVOcc's height-weighted voxel loss of one sample.

    Draws ``columns`` x/y columns at random (all of them when ``columns`` is 0 or exceeds X*Y),
    counts the occupied (label != ``free``) supervised voxels of each height layer in them,
    weights each layer by :func:`height_layer_weights` and returns the mean over those voxels
    of ``SmoothL1(w_z * log(p_true + 1e-3), 0)`` (beta 1), p_true the softmax probability of
    the voxel's label. 0 when the columns hold no occupied supervised voxel.

    Args:
        logits: (K, X, Y, Z) class logits; labels: (X, Y, Z) int64; mask: (X, Y, Z) bool
            supervised voxels or None (all).
    """
    K, X, Y, Z = logits.shape
    n = X * Y
    if 0 < columns < n:
        idx = torch.randperm(n, generator=generator)[:columns].to(logits.device)
    else:
        idx = torch.arange(n, device=logits.device)
    lg = logits.reshape(K, n, Z)[:, idx]  # (K, M, Z)
    lb = labels.reshape(n, Z)[idx]  # (M, Z)
    use = lb != free
    if mask is not None:
        use = use & mask.reshape(n, Z)[idx]
    if not bool(use.any()):
        return logits.sum() * 0.0
    w = height_layer_weights(use.sum(0), *weights).to(logits.dtype)  # (Z,)
    logp = torch.log(lg.float().softmax(0).gather(0, lb[None]).squeeze(0) + 1e-3)  # (M, Z)
    x = (w[None, :] * logp)[use]
    return F.smooth_l1_loss(x, torch.zeros_like(x))


@dataclass
class LossTerms:
    """Weighted loss terms (scalars); ``total`` is their sum."""

    total: torch.Tensor
    ce: torch.Tensor
    lovasz: torch.Tensor
    sem_scal: torch.Tensor
    geo_scal: torch.Tensor
    depth: torch.Tensor
    flow: torch.Tensor
    coarse: torch.Tensor
    height_voxel: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def supervised_mask(mask_name: str, mask_camera: torch.Tensor, mask_lidar: torch.Tensor) -> torch.Tensor | None:
    """(B, X, Y, Z) bool of supervised voxels, or None for all."""
    return {"camera": mask_camera, "lidar": mask_lidar, "both": mask_camera & mask_lidar, "none": None}[mask_name]


def occupancy_loss(out: OccOutput, inputs: OccInputs, semantics: torch.Tensor, mask: torch.Tensor | None,
                   flow: torch.Tensor | None, cfg: ModelConfig, class_weights: torch.Tensor) -> LossTerms:
    """All loss terms of one batch.

    Args:
        out: model outputs (logits (B, K, X, Y, Z), ...).
        inputs: the batch inputs (LiDAR points for the depth targets, camera geometry).
        semantics: (B, X, Y, Z) int64 labels; mask: (B, X, Y, Z) bool supervised voxels or None.
        flow: (B, X, Y, Z, 2) GT flow or None.
        class_weights: (K,) CE weights.
    """
    lc = cfg.loss
    B, K = out.logits.shape[:2]
    zero = out.logits.sum() * 0.0
    names = ("ce", "lovasz", "sem_scal", "geo_scal", "depth", "flow", "coarse", "height_voxel")
    terms = {k: zero for k in names}
    w = class_weights.to(out.logits.device)
    coarse_up = None
    if out.coarse_logits is not None:
        coarse_up = F.interpolate(out.coarse_logits.float(), size=out.logits.shape[-3:], mode="nearest")
    for b in range(B):
        sel = (slice(None),) if mask is None else (mask[b],)
        logits = out.logits[b].float().permute(1, 2, 3, 0)[sel].reshape(-1, K)  # (P, K)
        labels = semantics[b][sel].reshape(-1)
        if labels.numel() == 0:
            continue
        probs = logits.softmax(1)
        terms["ce"] = terms["ce"] + lc.ce * F.cross_entropy(logits, labels, weight=w) / B
        if lc.lovasz:
            terms["lovasz"] = terms["lovasz"] + lc.lovasz * lovasz_softmax(probs, labels) / B
        if lc.sem_scal:
            terms["sem_scal"] = terms["sem_scal"] + lc.sem_scal * sem_scal_loss(probs, labels) / B
        if lc.geo_scal:
            terms["geo_scal"] = terms["geo_scal"] + lc.geo_scal * geo_scal_loss(probs, labels, cfg.free_label) / B
        if lc.height_voxel:
            terms["height_voxel"] = terms["height_voxel"] + lc.height_voxel * height_voxel_loss(
                out.logits[b], semantics[b], None if mask is None else mask[b], cfg.free_label,
                lc.height_voxel_columns, lc.height_voxel_weights) / B
        if coarse_up is not None:
            cl = coarse_up[b].permute(1, 2, 3, 0)[sel].reshape(-1, K)
            terms["coarse"] = terms["coarse"] + lc.cascade_coarse * F.cross_entropy(cl, labels, weight=w) / B
        if out.flow is not None and flow is not None:
            occ = semantics[b] != cfg.free_label
            if mask is not None:
                occ = occ & mask[b]
            if occ.any():
                terms["flow"] = terms["flow"] + lc.flow * balanced_flow_l1(
                    out.flow[b].float()[occ], flow[b][occ].float(), lc.flow_moving_speed) / B
    terms["depth"] = terms["depth"] + lss_depth_loss(out, inputs, cfg)
    total = sum(terms.values())
    return LossTerms(total=total, **terms)


def lss_depth_loss(out: OccOutput, inputs: OccInputs, cfg: ModelConfig) -> torch.Tensor:
    """``lss.depth_loss_weight`` x the NLL of the LiDAR depth bin of the LSS depth head, per
    sample then averaged (0 for models without a depth head, a zero weight or no points).

    A 2D label (the LiDAR's depth per image pixel), so rendering-supervised models
    (RenderOcc-style, ``render.occ3d: 0``) keep it too.
    """
    if out.depth_probs is None or cfg.lss is None or not cfg.lss.depth_loss_weight or inputs.points is None:
        ref = out.logits if out.logits is not None else getattr(out.field, "geo", None)
        return torch.zeros((), device=None if ref is None else ref.device)
    zero = out.depth_probs.sum() * 0.0
    B, N = inputs.intrinsics.shape[:2]
    h, w_ = out.depth_probs.shape[-2:]
    targets = lidar_depth_targets(inputs.points, inputs.intrinsics, inputs.T_base_from_cam,
                                  tuple(inputs.images.shape[-2:]), (h, w_), cfg.lss)
    total = zero
    for b in range(B):
        sl = slice(b * N, (b + 1) * N)
        total = total + cfg.lss.depth_loss_weight * depth_loss(out.depth_probs[sl], targets[sl]) / B
    return total
