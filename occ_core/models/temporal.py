"""Temporal state: the previous frame's BEV feature, warped into the current frame, fused there.

One rule, :func:`link_frames`, decides whether frame ``k - 1``'s state carries into frame ``k``;
training (:func:`occ_core.data.nuscenes_dataset.collate` links the frames of an item),
``occ-predict`` and the node (both through :class:`TemporalState` inside
:class:`~occ_core.models.predictor.OccupancyPredictor`) call it. The state resets on:

==================  =========================================================================
reason              when
==================  =========================================================================
``first_frame``     there is no previous frame (start of a scene, of a run, after a reset)
``missing_pose``    the ego pose of either frame is unknown (``SensorFrame.ego_pose`` None or
                    not finite)
``stamp_order``     the stamp is not after the previous one (a bag played again, a clock reset)
``stamp_gap``       the stamps lie more than ``max_gap_factor * period_s`` apart (frames lost)
``pose_jump``       the ego moved more than ``max_translation_m`` or turned more than
                    ``max_rotation_deg`` between the two frames (relocalisation, new recording)
==================  =========================================================================

The ego motion between two frames is ``T_cur_from_prev = inv(P_cur) @ P_prev`` with ``P`` the
ego pose (base_link -> world) at each frame's LiDAR stamp: a point ``p`` in the previous
base_link is ``T_cur_from_prev @ p`` in the current one. :func:`warp_bev` resamples a (B, C, X, Y)
BEV feature on the grid's x/y cells by it (rotation and translation, ``grid_sample``), and the
model fuses the warped feature (BEVFormer: its temporal self-attention takes it as ``prev_bev``;
HBEVOcc with ``hbevocc.frames`` = K > 1: the state is the stack of the last K forward BEVs,
advanced by :func:`push_bev_stack`, and a conv reduces the stack).

During training, the previous frames of an item run first, oldest first, without gradient and
with the model in eval mode (BEVFormer's ``obtain_history_bev``), each fed the state of the one
before when their link carries; the current frame then runs with gradient on the last state
(:func:`forward_with_history`). At inference the state is recurrent over the whole sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from occ_core.grid import GridSpec
from occ_core.models.config import TemporalConfig

RESET_REASONS: tuple[str, ...] = ("first_frame", "missing_pose", "stamp_order", "stamp_gap", "pose_jump")


@dataclass(frozen=True)
class TemporalLink:
    """How frame ``k - 1`` relates to frame ``k``.

    Attributes:
        reset: None when the state carries over, else one of :data:`RESET_REASONS`.
        T_cur_from_prev: (4, 4) float64 ego motion, previous base_link -> current base_link
            (None when a pose is missing or there is no previous frame).
        dt_s: stamp difference in seconds (None without a previous frame).
    """

    reset: str | None
    T_cur_from_prev: np.ndarray | None = None
    dt_s: float | None = None

    @property
    def carries(self) -> bool:
        return self.reset is None


def _pose_ok(P) -> bool:
    return P is not None and np.shape(P) == (4, 4) and bool(np.isfinite(P).all())


def rotation_angle_deg(R: np.ndarray) -> float:
    """The angle (degrees, 0..180) of a 3x3 rotation matrix, from its trace."""
    c = (float(np.trace(R)) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def link_frames(prev_stamp_ns: int | None, prev_pose: np.ndarray | None, stamp_ns: int,
                pose: np.ndarray | None, cfg: TemporalConfig) -> TemporalLink:
    """The reset rule (see the module docstring): does frame ``k - 1``'s state carry into frame ``k``?

    Args:
        prev_stamp_ns: stamp (ns) of the previous frame, None when there is none.
        prev_pose, pose: (4, 4) ego poses (base_link -> world) of the two frames, or None.
        stamp_ns: stamp (ns) of the current frame.
        cfg: thresholds.
    """
    if prev_stamp_ns is None:
        return TemporalLink("first_frame")
    dt = (int(stamp_ns) - int(prev_stamp_ns)) * 1e-9
    if not (_pose_ok(prev_pose) and _pose_ok(pose)):
        return TemporalLink("missing_pose", None, dt)
    if dt <= 0.0:
        return TemporalLink("stamp_order", None, dt)
    T = np.linalg.solve(np.asarray(pose, np.float64), np.asarray(prev_pose, np.float64))
    if dt > cfg.max_gap_factor * cfg.period_s:
        return TemporalLink("stamp_gap", T, dt)
    if float(np.linalg.norm(T[:3, 3])) > cfg.max_translation_m or rotation_angle_deg(T[:3, :3]) > cfg.max_rotation_deg:
        return TemporalLink("pose_jump", T, dt)
    return TemporalLink(None, T, dt)


def warp_bev(prev_bev: torch.Tensor, T_cur_from_prev: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Resample the previous frame's BEV feature into the current ego frame.

    Every current cell centre ``(x, y, 0)`` (current base_link) is moved into the previous
    base_link with ``inv(T_cur_from_prev)`` (rotation and translation) and the previous BEV is
    sampled there bilinearly (``grid_sample``, cell centres at pixel centres); cells that fall
    outside the previous BEV get zeros.

    Args:
        prev_bev: (B, C, X, Y) features on ``grid``'s x/y cells in the previous base_link.
        T_cur_from_prev: (B, 4, 4) or (4, 4) ego motion, ``p_cur = T_cur_from_prev @ p_prev``.
        grid: the BEV grid (its x/y cells and range).

    Returns:
        (B, C, X, Y) the previous features in the current base_link.
    """
    from occ_core.models.bevformer_sca import bev_cell_centres

    X, Y = grid.dims[:2]
    if prev_bev.ndim != 4 or tuple(prev_bev.shape[-2:]) != (X, Y):
        raise ValueError(f"warp_bev: prev_bev must be (B, C, {X}, {Y}) for grid {grid.name!r}, got {tuple(prev_bev.shape)}")
    B = prev_bev.shape[0]
    T = torch.as_tensor(T_cur_from_prev, device=prev_bev.device)
    if T.shape == (4, 4):
        T = T.expand(B, 4, 4)
    if tuple(T.shape) != (B, 4, 4):
        raise ValueError(f"warp_bev: T_cur_from_prev must be (4, 4) or ({B}, 4, 4), got {tuple(T.shape)}")
    T_prev_from_cur = torch.linalg.inv(T.to(torch.float64))
    xy = bev_cell_centres(grid).to(device=prev_bev.device, dtype=torch.float64)  # (X*Y, 2)
    p = torch.cat([xy, xy.new_zeros(xy.shape[0], 1), xy.new_ones(xy.shape[0], 1)], 1)  # (X*Y, 4), z = 0
    p_prev = torch.einsum("bij,qj->bqi", T_prev_from_cur, p)[..., :2]  # (B, X*Y, 2) x, y
    lo, hi = grid.range_min, grid.range_max
    # grid_sample on a (X, Y) map: last grid dim is (w = y index, h = x index) in [-1, 1]
    gx = (p_prev[..., 1] - lo[1]) / (hi[1] - lo[1]) * 2 - 1
    gy = (p_prev[..., 0] - lo[0]) / (hi[0] - lo[0]) * 2 - 1
    g = torch.stack([gx, gy], -1).view(B, X, Y, 2).to(prev_bev.dtype)
    return F.grid_sample(prev_bev, g, mode="bilinear", padding_mode="zeros", align_corners=False)


def push_bev_stack(stack: torch.Tensor | None, bev: torch.Tensor, T_cur_from_prev: torch.Tensor | None,
                   prev_valid: torch.Tensor | None, grid: GridSpec, frames: int) -> torch.Tensor:
    """Advance a multi-frame BEV stack (BEVDet4D / HBEVOcc) by one frame.

    A stack holds ``frames`` = K slots of C channels, newest first: slot k (channels
    ``[k*C, (k+1)*C)``) is the BEV of the frame k steps before the one that produced the stack,
    in that frame's base_link; zeros where there is none (a sequence start, a reset). One step
    warps the previous stack into the current base_link (:func:`warp_bev`, rotation and
    translation), drops its oldest slot and puts ``bev`` in front; a sample whose link does not
    carry (``prev_valid`` False) or a missing ``stack`` gets zeros in slots 1..K-1. (Only the
    K - 1 kept slots are warped: the warp acts on each channel alone.)

    Args:
        stack: (B, K*C, X, Y) the previous frame's stack, or None (no previous frame).
        bev: (B, C, X, Y) the current frame's BEV on ``grid``'s x/y cells.
        T_cur_from_prev: (B, 4, 4) or (4, 4) ego motion, previous base_link -> current; required
            with ``stack``.
        prev_valid: (B,) bool, the samples whose ``stack`` carries; None = all.
        grid: the BEV grid.
        frames: K >= 1 (K = 1: the stack is ``bev`` itself; ``stack`` must be None).

    Returns:
        (B, K*C, X, Y) the current stack, in the current base_link.
    """
    B, C, X, Y = bev.shape
    if frames < 1:
        raise ValueError(f"push_bev_stack: frames must be >= 1, got {frames}")
    if frames == 1:
        if stack is not None:
            raise ValueError("push_bev_stack: a one-frame stack has no past slots; stack must be None")
        return bev
    keep = (frames - 1) * C
    if stack is None:
        return torch.cat([bev, bev.new_zeros(B, keep, X, Y)], 1)
    if tuple(stack.shape) != (B, frames * C, X, Y):
        raise ValueError(f"push_bev_stack: stack must be (B, K*C, X, Y) = {(B, frames * C, X, Y)} for {frames} frames of "
                         f"{tuple(bev.shape)}, got {tuple(stack.shape)}")
    if T_cur_from_prev is None:
        raise ValueError("push_bev_stack: a previous stack needs T_cur_from_prev (the ego motion, previous -> current "
                         "base_link; the identity when the ego stood still)")
    past = warp_bev(stack[:, :keep], T_cur_from_prev, grid).to(bev.dtype)
    if prev_valid is not None:
        past = past.masked_fill(~prev_valid.to(device=past.device, dtype=torch.bool).view(B, 1, 1, 1), 0.0)
    return torch.cat([bev, past], 1)


@dataclass
class TemporalState:
    """The streaming state of one sensor stream: the last BEV, its stamp and ego pose.

    ``link = state.link(stamp_ns, pose)`` applies :func:`link_frames` against the stored
    frame; after the model ran, ``state.update(bev, stamp_ns, pose)`` stores the new one. A
    state without a BEV (fresh, or after :meth:`reset`) answers ``first_frame``. ``resets``
    counts the reasons seen (``first_frame`` included), ``carried`` the frames that used a state.
    """

    cfg: TemporalConfig
    bev: torch.Tensor | None = None
    stamp_ns: int | None = None
    pose: np.ndarray | None = None
    resets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESET_REASONS, 0))
    carried: int = 0

    def reset(self) -> None:
        """Forget the stored frame (the next one is a ``first_frame``)."""
        self.bev, self.stamp_ns, self.pose = None, None, None

    def link(self, stamp_ns: int, pose: np.ndarray | None) -> TemporalLink:
        """The link from the stored frame to a new one (counted)."""
        lk = link_frames(None if self.bev is None else self.stamp_ns, self.pose, stamp_ns, pose, self.cfg)
        if lk.carries:
            self.carried += 1
        else:
            self.resets[lk.reset] += 1
        return lk

    def update(self, bev: torch.Tensor, stamp_ns: int, pose: np.ndarray | None) -> None:
        """Store the new frame's state ``OccOutput.bev`` (B, C, X', Y'; a K-slot stack for
        multi-frame HBEVOcc) (detached), stamp and pose."""
        self.bev = bev.detach()
        self.stamp_ns = int(stamp_ns)
        self.pose = None if pose is None else np.asarray(pose, np.float64).copy()


def forward_with_history(model: torch.nn.Module, inputs, history: list, T_cur_from_prev: torch.Tensor,
                         link_valid: torch.Tensor, net: torch.nn.Module | None = None):
    """Run an item's previous frames without gradient, then the current frame on their state.

    The previous frames run in eval mode, or, when the model trains and its config says
    ``temporal.history_batch_stats``, in training mode (BatchNorm on batch statistics, as the
    current frame).

    Args:
        model: the temporal model (forward ``(inputs, prev_bev, T_cur_from_prev, prev_valid)``,
            returning an output with ``bev`` (B, C, X', Y')).
        inputs: the current frame's :class:`~occ_core.models.occnet.OccInputs` (batch B).
        history: S - 1 previous frames' OccInputs (batch B each), oldest first.
        T_cur_from_prev: (S, B, 4, 4) float: step ``s``'s ego motion from step ``s - 1``
            (step ``S - 1`` = the current frame; row 0 unused).
        link_valid: (S, B) bool: whether step ``s - 1``'s state carries into step ``s`` (row 0
            False: the first frame).
        net: the module that runs the current frame (e.g. the DDP wrapper); default ``model``.

    Returns:
        the current frame's output.
    """
    S = len(history) + 1
    if tuple(T_cur_from_prev.shape[:2]) != (S, inputs_batch(inputs)) or tuple(link_valid.shape) != (S, inputs_batch(inputs)):
        raise ValueError(f"forward_with_history: {S - 1} history frames need T_cur_from_prev (S, B, 4, 4) and "
                         f"link_valid (S, B) with S = {S}; got {tuple(T_cur_from_prev.shape)}, {tuple(link_valid.shape)}")
    prev = None
    if history:
        was_training = model.training
        temporal = model.cfg.temporal
        model.train(was_training and temporal is not None and temporal.history_batch_stats)
        with torch.no_grad():
            for s, past in enumerate(history):
                valid = link_valid[s]
                out = model(past, prev if prev is not None and bool(valid.any()) else None, T_cur_from_prev[s], valid)
                prev = out.bev
        model.train(was_training)
    valid = link_valid[S - 1]
    run = net if net is not None else model
    if prev is None or not bool(valid.any()):
        return run(inputs)
    return run(inputs, prev, T_cur_from_prev[S - 1], valid)


def inputs_batch(inputs) -> int:
    """The batch size B of an OccInputs (images or points)."""
    if inputs.images is not None:
        return int(inputs.images.shape[0])
    return len(inputs.points)
