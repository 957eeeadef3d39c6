"""A model's Occ3D output from its class logits: the argmax, or an occupancy threshold.

Every model ends in class logits (B, K, X, Y, Z) with free = the last class (K - 1). Its labels
are their argmax, unless ``occ_threshold`` is set (:attr:`ModelConfig.occupancy_threshold`):
then a voxel is occupied where its occupancy probability exceeds the threshold, and it takes its
best non-free class there. Two kinds of model need one:

- models trained by rendering alone (OccNeRF, RenderOcc-style ``render.occ3d: 0``): rendering
  spreads a surface over samples whose occupancy each stays well below 0.5
  (:mod:`occ_core.models.occnerf`; the threshold comes from
  :func:`occ_core.training.render_eval.label_free_threshold`, without 3D labels);
- classifiers trained with class-weighted cross entropy (OpenOccupancy's ``1 / log(count)``
  weights give "free", by far the most frequent class, the smallest weight): their argmax calls a
  voxel occupied at occupancy probabilities well below 0.5, i.e. it over-fills. The threshold
  that maximises geometric IoU on labelled training frames
  (:func:`occ_core.training.calibrate.iou_threshold`) undoes that.

Both apply :func:`thresholded_logits`, so the predictor, evaluation, deploy graph and node read
the result as the argmax of logits like any other model's.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn


def occupancy_logit_of_classes(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The logit of P(occupied) = 1 - softmax(logits)[free] of class logits (free = last along
    ``dim``): ``logsumexp(non-free logits) - free logit``; ``dim`` is kept with size 1."""
    k = logits.shape[dim]
    sem, free = logits.split([k - 1, 1], dim)
    return torch.logsumexp(sem, dim, keepdim=True) - free


def thresholded_logits(occ_logit: torch.Tensor, sem: torch.Tensor, tau: float) -> torch.Tensor:
    """Logits whose argmax thresholds occupancy at ``tau``.

    Args:
        occ_logit: (...,) logit of each voxel's occupancy probability p.
        sem: (..., K') logits of the K' = K - 1 non-free classes.
        tau: the threshold, 0 < tau < 1.

    Returns:
        (..., K): class k = logit(p) - logit(tau) + log_softmax_k(sem) - max_j log_softmax_j(sem),
        free (last) = 0. The argmax is free exactly where p <= tau and the best class elsewhere,
        so the same predictor, eval and node code as every other model applies (the softmax
        "scores" of these logits are not calibrated probabilities).
    """
    ls = F.log_softmax(sem, -1)
    cls = occ_logit[..., None] - math.log(tau / (1.0 - tau)) + ls - ls.max(-1, keepdim=True).values
    return torch.cat([cls, torch.zeros_like(occ_logit)[..., None]], -1)


def thresholded_class_logits(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Class logits (B, K, ...) (free = K - 1) -> logits (B, K, ...) whose argmax is free where
    P(occupied) = 1 - softmax free <= ``tau`` and the best non-free class elsewhere."""
    occ = occupancy_logit_of_classes(logits)[:, 0]
    return thresholded_logits(occ, logits[:, :-1].movedim(1, -1), tau).movedim(-1, 1)


def threshold_class_output(module: nn.Module, args, out):
    """Forward hook that :func:`occ_core.models.occnet.build_model` puts on a classifier model:
    in eval mode, with ``module.occ_threshold`` set (not None), its ``logits`` become
    :func:`thresholded_class_logits` at that threshold. Training mode, and a threshold of None
    (the argmax), leave the output as it is."""
    tau = module.occ_threshold
    if module.training or tau is None:
        return out
    return dataclasses.replace(out, logits=thresholded_class_logits(out.logits, tau))
