"""RayIoU (SparseOcc) and mAVE / OccScore (OpenOcc v2), with the SparseOcc ray set and origins.

Protocol (SparseOcc ``ray_metrics.py`` and ``EgoPoseDataset``; OpenDriveLab OccNet
``ray_metrics.py`` for flow):

Rays. Pitches: ``-(pi/2 - atan(k))`` for k = 1..10, then continued with the step between the
last two until a pitch reaches 0.21 rad (nuScenes LiDAR field of view): 39 pitches.
Azimuths: 0, 1, ..., 359 degrees. Direction ``(cos p cos a, cos p sin a, sin p)``:
39 × 360 = 14,040 unit rays per origin, in the ego frame of the current sample.

Origins. Every keyframe of the sample's scene gives the position of its LIDAR_TOP sensor
expressed in the current sample's ego frame (``ego_from_lidar_ref · lidar_ref_from_global ·
global_from_lidar_t · 0``; for the sample itself: the LiDAR mount position). Keep those with
``|x| < 39`` and ``|y| < 39`` m, in scene order; if more than 8 remain, keep indices
``round(linspace(0, n - 1, 8))`` (numpy rounding, half to even).

Casting. Occupied = label != free. First hit by DDA in voxel units (:func:`occ_core.ops.raycast`);
its distance is the exit of the hit voxel, in metres; its label (and flow) those of the hit
voxel. A ray without a hit has label free (the DVR returns the last free voxel it traversed).

Counting. Rays whose ground-truth label is free (no GT hit inside the grid) are dropped. Per
class c over the split: ``gt_c`` = rays with GT label c, ``pred_c`` = rays with predicted label
c, ``tp_c(tau)`` = rays with both labels c and ``|d_pred - d_gt| < tau``.
``IoU_c(tau) = tp / (gt + pred - tp)`` (FP = predicted c but not a TP, FN = GT c but not a
TP: a ray of the right class at the wrong depth counts once in the union). RayIoU@tau =
nanmean over the non-free classes; RayIoU = nanmean over all classes and tau in {1, 2, 4} m
(= the mean of the three, since undefined classes are the same for every tau).

mAVE (OpenOcc v2 only). On the true-positive rays at tau = 2 m of each of the 8 dynamic
classes (car ... pedestrian), the L2 norm of (flow at the GT hit voxel - flow at the
predicted hit voxel), (vx, vy) in m/s, averaged per class (nan for a class without such
rays); mAVE = nanmean over the 8 classes. OccScore = 0.9 · RayIoU + 0.1 · max(1 - mAVE, 0).
The distance test is the plain ``|d_pred - d_gt| < tau`` of the current OccNet code (an older
revision also accepted a 10 % relative error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OPENOCC_CLASSES, OPENOCC_DYNAMIC_CLASSES, OPENOCC_FREE
from occ_core.errors import OccDataError
from occ_core.eval.report import ClassRow, MetricReport
from occ_core.grid import OCC3D, GridSpec

THRESHOLDS: tuple[float, ...] = (1.0, 2.0, 4.0)
MAVE_THRESHOLD_INDEX = 1  # tau = 2 m
ORIGIN_LIMIT_M = 39.0
MAX_ORIGINS = 8


def lidar_pitches() -> np.ndarray:
    """The 39 SparseOcc ray pitches in radians, ascending (float64)."""
    p = [-(math.pi / 2 - math.atan(k + 1)) for k in range(10)]
    while p[-1] < 0.21:
        p.append(p[-1] + (p[-1] - p[-2]))
    return np.array(p)


def lidar_ray_directions() -> np.ndarray:
    """(14040, 3) float32 unit directions: pitch-major (39 pitches × azimuths 0..359 deg)."""
    p = lidar_pitches()[:, None]
    a = np.deg2rad(np.arange(0, 360, 1))[None, :]
    d = np.stack([np.cos(p) * np.cos(a), np.cos(p) * np.sin(a), np.broadcast_to(np.sin(p), (p.shape[0], a.shape[1]))], -1)
    return d.reshape(-1, 3).astype(np.float32)


def select_ray_origins(global_from_lidar: np.ndarray, ref_index: int, ego_from_lidar_ref: np.ndarray,
                       limit: float = ORIGIN_LIMIT_M, max_origins: int = MAX_ORIGINS) -> np.ndarray:
    """SparseOcc's ray origins for the keyframe ``ref_index`` of a scene.

    Args:
        global_from_lidar: (T, 4, 4) pose of LIDAR_TOP in the global frame for every keyframe
            of the scene, in time order.
        ref_index: index of the current sample in that list.
        ego_from_lidar_ref: (4, 4) LIDAR_TOP -> ego (base_link) of the current sample.

    Returns:
        (K, 3) float32 origins in the current sample's ego frame, K <= max_origins.
    """
    T = np.asarray(global_from_lidar, np.float64)
    ref_from_global = np.linalg.inv(T[ref_index])
    pos_lidar = np.einsum("ij,tjk->tik", ref_from_global, T)[:, :, 3]  # (T, 4) origins in the ref lidar frame
    pos_lidar[ref_index] = [0.0, 0.0, 0.0, 1.0]
    pos = (np.asarray(ego_from_lidar_ref, np.float64)[:3] @ pos_lidar.T).T.astype(np.float32)  # (T, 3)
    keep = pos[(np.abs(pos[:, 0]) < limit) & (np.abs(pos[:, 1]) < limit)]
    if len(keep) > max_origins:
        keep = keep[np.round(np.linspace(0, len(keep) - 1, max_origins)).astype(np.int64)]
    return keep


@dataclass
class CastRays:
    """First hits of one label grid: label (R,) int64, distance (R,) float64 m, flow (R, 2) or None."""

    label: np.ndarray
    distance: np.ndarray
    flow: np.ndarray | None


def cast_labels(semantics: np.ndarray, origins: np.ndarray, free: int, grid: GridSpec = OCC3D,
                flow: np.ndarray | None = None, directions: np.ndarray | None = None,
                device: str | torch.device = "cpu") -> CastRays:
    """Cast the SparseOcc ray set from every origin through ``semantics``.

    Args:
        semantics: (X, Y, Z) integer labels on ``grid``; occupied = ``!= free``.
        origins: (K, 3) metres in the grid's (ego) frame.
        flow: (X, Y, Z, 2) per-voxel flow, or None.
        directions: (D, 3) unit directions (default :func:`lidar_ray_directions`).

    Returns:
        CastRays of K·D rays, origin-major; label free and distance inf where no hit.
    """
    dirs = lidar_ray_directions() if directions is None else np.asarray(directions, np.float32)
    origins = np.asarray(origins, np.float32).reshape(-1, 3)
    from occ_core.ops import raycast

    occ = torch.from_numpy(np.asarray(semantics) != free).to(device)
    o = torch.from_numpy(np.repeat(origins, len(dirs), axis=0)).to(device)
    d = torch.from_numpy(np.tile(dirs, (len(origins), 1))).to(device)
    hits = raycast(occ, o, d, grid)
    hit = hits.hit.cpu().numpy()
    vox = hits.voxel.cpu().numpy()
    label = np.full(hit.shape, free, dtype=np.int64)
    vx, vy, vz = vox[hit].T
    label[hit] = np.asarray(semantics)[vx, vy, vz]
    f = None
    if flow is not None:
        f = np.zeros((hit.shape[0], 2), dtype=np.float64)
        f[hit] = np.asarray(flow)[vx, vy, vz]
    return CastRays(label, hits.distance.cpu().numpy().astype(np.float64), f)


@dataclass
class RayIoU:
    """RayIoU accumulator (and mAVE when ``dynamic_classes`` is set).

    Attributes:
        class_names: C names, index = label, free included.
        free: free label.
        grid: the grid of the label volumes.
        dynamic_classes: names over which mAVE is averaged; empty = no flow metrics.
        gt_cnt, pred_cnt: (C,) int64 ray counts; tp_cnt: (T, C) int64 for the thresholds.
        ave_sum: (C,) float64 summed flow L2 error on TP rays at tau = 2 m; ave_cnt: (C,) int64.
    """

    class_names: tuple[str, ...] = OCC3D_CLASSES
    free: int = OCC3D_FREE
    grid: GridSpec = OCC3D
    dynamic_classes: tuple[str, ...] = ()
    thresholds: tuple[float, ...] = THRESHOLDS
    device: str = "cpu"
    title: str = "RayIoU (SparseOcc)"
    gt_cnt: np.ndarray = field(default=None)  # type: ignore[assignment]
    pred_cnt: np.ndarray = field(default=None)  # type: ignore[assignment]
    tp_cnt: np.ndarray = field(default=None)  # type: ignore[assignment]
    ave_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    ave_cnt: np.ndarray = field(default=None)  # type: ignore[assignment]
    frames: int = 0

    def __post_init__(self) -> None:
        c, t = len(self.class_names), len(self.thresholds)
        for name, shape, dt in (("gt_cnt", (c,), np.int64), ("pred_cnt", (c,), np.int64), ("tp_cnt", (t, c), np.int64),
                                ("ave_sum", (c,), np.float64), ("ave_cnt", (c,), np.int64)):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape, dtype=dt))
        self._dynamic = np.array([n in self.dynamic_classes for n in self.class_names])

    @property
    def with_flow(self) -> bool:
        return bool(self._dynamic.any())

    def update(self, gt: np.ndarray, pred: np.ndarray, origins: np.ndarray,
               gt_flow: np.ndarray | None = None, pred_flow: np.ndarray | None = None) -> None:
        """Add one sample.

        Args:
            gt, pred: (X, Y, Z) integer labels in ``0..free`` on ``grid``.
            origins: (K, 3) ray origins in metres in the sample's ego frame
                (:func:`select_ray_origins`).
            gt_flow, pred_flow: (X, Y, Z, 2) flow, required when computing mAVE.
        """
        if self.with_flow and (gt_flow is None or pred_flow is None):
            raise OccDataError("mAVE needs both the ground-truth and the predicted flow")
        for name, a in (("gt", gt), ("pred", pred)):
            if np.shape(a) != tuple(self.grid.dims):
                raise OccDataError(f"RayIoU: {name} has shape {np.shape(a)}, expected {self.grid.dims}")
            if int(np.max(a)) > self.free or int(np.min(a)) < 0:
                raise OccDataError(f"RayIoU: {name} holds labels outside 0..{self.free}")
        if len(np.asarray(origins).reshape(-1, 3)) == 0:
            raise OccDataError("RayIoU: no ray origin (SparseOcc always has the sample's own LiDAR)")
        g = cast_labels(gt, origins, self.free, self.grid, gt_flow if self.with_flow else None, device=self.device)
        p = cast_labels(pred, origins, self.free, self.grid, pred_flow if self.with_flow else None, device=self.device)
        self.update_rays(g, p)

    def update_rays(self, gt: CastRays, pred: CastRays) -> None:
        """Add the cast rays of one sample (all rays; those with a free GT label are dropped here)."""
        keep = gt.label != self.free
        gl, gd = gt.label[keep], gt.distance[keep]
        pl, pd = pred.label[keep], pred.distance[keep]
        c = len(self.class_names)
        self.gt_cnt += np.bincount(gl, minlength=c)[:c]
        self.pred_cnt += np.bincount(pl, minlength=c)[:c]
        same = gl == pl
        with np.errstate(invalid="ignore"):
            err = np.abs(pd - gd)
        for j, tau in enumerate(self.thresholds):
            tp = same & (err < tau)
            self.tp_cnt[j] += np.bincount(gl[tp], minlength=c)[:c]
            if j == MAVE_THRESHOLD_INDEX and self.with_flow:
                tp &= self._dynamic[gl]
                e = np.linalg.norm(gt.flow[keep][tp] - pred.flow[keep][tp], axis=1)
                self.ave_sum += np.bincount(gl[tp], weights=e, minlength=c)[:c]
                self.ave_cnt += np.bincount(gl[tp], minlength=c)[:c]
        self.frames += 1

    # ------------------------------------------------------------------ distributed
    def state(self) -> dict[str, np.ndarray]:
        """Sufficient statistics; summing them across processes merges the accumulators."""
        return {"gt_cnt": self.gt_cnt.copy(), "pred_cnt": self.pred_cnt.copy(), "tp_cnt": self.tp_cnt.copy(),
                "ave_sum": self.ave_sum.copy(), "ave_cnt": self.ave_cnt.copy(),
                "frames": np.array([self.frames], dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> "RayIoU":
        for k in ("gt_cnt", "pred_cnt", "tp_cnt", "ave_cnt"):
            setattr(self, k, np.asarray(state[k]).astype(np.int64).reshape(getattr(self, k).shape))
        self.ave_sum = np.asarray(state["ave_sum"], np.float64).reshape(self.ave_sum.shape).copy()
        self.frames = int(np.asarray(state["frames"]).reshape(-1)[0])
        return self

    def merge(self, other: "RayIoU") -> "RayIoU":
        if other.class_names != self.class_names or other.thresholds != self.thresholds:
            raise ValueError("cannot merge RayIoU accumulators over different classes or thresholds")
        for k in ("gt_cnt", "pred_cnt", "tp_cnt", "ave_sum", "ave_cnt"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.frames += other.frames
        return self

    # ------------------------------------------------------------------ results
    def per_class_iou(self) -> np.ndarray:
        """(T, C-1) float64 IoU per threshold and non-free class (nan where undefined)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.tp_cnt / (self.gt_cnt[None, :] + self.pred_cnt[None, :] - self.tp_cnt)
        return np.delete(iou, self.free, axis=1)

    def rayiou_at(self) -> np.ndarray:
        """(T,) RayIoU at each threshold: nanmean over the non-free classes."""
        iou = self.per_class_iou()
        return np.array([np.nanmean(r) if np.any(~np.isnan(r)) else np.nan for r in iou])

    def rayiou(self) -> float:
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")

    def per_class_ave(self) -> np.ndarray:
        """(C-1,) mean flow error per class at tau = 2 m (nan for non-dynamic or TP-less classes)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ave = np.where(self._dynamic, self.ave_sum / self.ave_cnt, np.nan)
        return np.delete(ave, self.free)

    def mave(self) -> float:
        ave = self.per_class_ave()
        return float(np.nanmean(ave)) if np.any(~np.isnan(ave)) else float("nan")

    def occ_score(self) -> float:
        """0.9 · RayIoU + 0.1 · max(1 - mAVE, 0) (nan if either is undefined)."""
        r, m = self.rayiou(), self.mave()
        if math.isnan(r) or math.isnan(m):
            return float("nan")
        return 0.9 * r + 0.1 * max(1.0 - m, 0.0)

    def report(self) -> MetricReport:
        iou = self.per_class_iou()
        ave = self.per_class_ave()
        names = [n for i, n in enumerate(self.class_names) if i != self.free]
        cols = [f"RayIoU@{t:g}" for t in self.thresholds]
        rows = []
        for i, n in enumerate(names):
            vals = {c: float(iou[j, i]) for j, c in enumerate(cols)}
            if self.with_flow:
                vals["AVE"] = float(ave[i])
            rows.append(ClassRow(n, vals))
        at = self.rayiou_at()
        summary = {"RayIoU": self.rayiou(), **{c: float(v) for c, v in zip(cols, at)}}
        if self.with_flow:
            summary.update({"mAVE": self.mave(), "OccScore": self.occ_score()})
        return MetricReport(
            title=self.title,
            columns=cols + (["AVE"] if self.with_flow else []),
            rows=rows, summary=summary,
            percent=cols + ["RayIoU", "OccScore"],
            frames=self.frames,
            notes=["14,040 rays per origin (39 pitches x 360 azimuths), <= 8 LiDAR origins per sample; rays whose GT "
                   "hit is free are dropped; TP = same class and |d_pred - d_gt| < tau"]
                  + (["mAVE: flow L2 error (m/s) on TP rays at tau = 2 m over the 8 dynamic classes"] if self.with_flow else []),
        )


def occ3d_rayiou(device: str = "cpu") -> RayIoU:
    """RayIoU on Occ3D labels (SparseOcc's Occ3D evaluation)."""
    return RayIoU(OCC3D_CLASSES, OCC3D_FREE, OCC3D, (), THRESHOLDS, device, "RayIoU (SparseOcc, Occ3D classes)")


def openocc_rayiou(with_flow: bool = True, device: str = "cpu") -> RayIoU:
    """RayIoU (+ mAVE and OccScore when ``with_flow``) on OpenOcc v2 labels."""
    from occ_core.grid import OPENOCC

    return RayIoU(OPENOCC_CLASSES, OPENOCC_FREE, OPENOCC, OPENOCC_DYNAMIC_CLASSES if with_flow else (), THRESHOLDS,
                  device, "RayIoU / mAVE (OpenOcc v2)")
