"""Depth metrics as OccNeRF reports them (monodepth2 ``compute_errors``, OccNeRF ``Runer.val``).

Per image (one camera of one sample, prediction already resized to the GT resolution):

1. Valid pixels: ``min_depth < gt < max_depth`` (OccNeRF's ``min_depth_test`` /
   ``max_depth_test``: 0.1 m and 80 m); ``gt = 0`` marks pixels without a LiDAR return.
2. Optional median scaling (``median_scaling=True``: OccNeRF's "scale-ambiguous" row):
   ``pred *= median(gt) / median(pred)`` over the valid pixels. OccNeRF's self-supervised
   model reports the "scale-aware" row, without it (the default here).
3. ``pred`` is clamped to ``[min_depth, max_depth]``.
4. abs rel = mean(|gt - pred| / gt); sq rel = mean((gt - pred)^2 / gt);
   rmse = sqrt(mean((gt - pred)^2)); rmse log = sqrt(mean((ln gt - ln pred)^2));
   delta_k = mean(max(gt / pred, pred / gt) < 1.25^k) for k = 1, 2, 3.

Aggregation: per camera, the mean over its images (images without a valid pixel give nan in
OccNeRF and are skipped by its ``nanmean``; here they are counted as ``empty``); the split's
number ("all") is the mean over the cameras of the per-camera means. With the single camera
``"all"`` this is the plain monodepth2 mean over images, never a mean over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occ_core.eval.report import ClassRow, MetricReport

DEPTH_METRICS: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def frame_depth_errors(gt: np.ndarray, pred: np.ndarray, min_depth: float = 0.1, max_depth: float = 80.0,
                       median_scaling: bool = False) -> np.ndarray | None:
    """The 7 metrics of one image, ordered as :data:`DEPTH_METRICS`; None if no pixel is valid.

    Args:
        gt: (H, W) (or any shape) ground-truth depth in metres (0 = none).
        pred: predicted depth in metres, same shape.
    """
    gt = np.asarray(gt, np.float64)
    pred = np.asarray(pred, np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"depth shapes differ: gt {gt.shape}, pred {pred.shape}")
    valid = (gt > min_depth) & (gt < max_depth)
    if not valid.any():
        return None
    g, p = gt[valid], pred[valid]
    if median_scaling:
        p = p * (np.median(g) / np.median(p))
    p = np.clip(p, min_depth, max_depth)
    thresh = np.maximum(g / p, p / g)
    return np.array([
        np.mean(np.abs(g - p) / g),
        np.mean((g - p) ** 2 / g),
        np.sqrt(np.mean((g - p) ** 2)),
        np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        np.mean(thresh < 1.25),
        np.mean(thresh < 1.25 ** 2),
        np.mean(thresh < 1.25 ** 3),
    ])


@dataclass
class DepthMetric:
    """Accumulates per-image depth errors per camera.

    Attributes:
        cameras: the camera names (fixed, so that states of all processes line up).
        sums: (K, 7) summed per-image metrics; counts: (K,) images; empty: (K,) images
            without valid pixels.
    """

    cameras: tuple[str, ...] = ("all",)
    min_depth: float = 0.1
    max_depth: float = 80.0
    median_scaling: bool = False
    sums: np.ndarray = field(default=None)  # type: ignore[assignment]
    counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    empty: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        k = len(self.cameras)
        if self.sums is None:
            self.sums = np.zeros((k, len(DEPTH_METRICS)))
        if self.counts is None:
            self.counts = np.zeros(k, np.int64)
        if self.empty is None:
            self.empty = np.zeros(k, np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray, camera: str = "all") -> None:
        """Add one image of ``camera``: gt, pred (H, W) depth in metres."""
        if camera not in self.cameras:
            raise ValueError(f"camera {camera!r} is not one of {self.cameras}")
        k = self.cameras.index(camera)
        e = frame_depth_errors(gt, pred, self.min_depth, self.max_depth, self.median_scaling)
        if e is None:
            self.empty[k] += 1
            return
        self.sums[k] += e
        self.counts[k] += 1

    def state(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums.copy(), "counts": self.counts.copy(), "empty": self.empty.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> "DepthMetric":
        self.sums = np.asarray(state["sums"], np.float64).reshape(self.sums.shape).copy()
        self.counts = np.asarray(state["counts"]).astype(np.int64).reshape(self.counts.shape)
        self.empty = np.asarray(state["empty"]).astype(np.int64).reshape(self.empty.shape)
        return self

    def merge(self, other: "DepthMetric") -> "DepthMetric":
        if other.cameras != self.cameras:
            raise ValueError("cannot merge depth metrics over different cameras")
        self.sums += other.sums
        self.counts += other.counts
        self.empty += other.empty
        return self

    def per_camera(self) -> np.ndarray:
        """(K, 7) mean over each camera's images (nan rows for cameras without images)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sums / self.counts[:, None]

    def result(self) -> dict[str, float]:
        """The split's numbers: mean over cameras (with images) of the per-camera means."""
        pc = self.per_camera()
        have = self.counts > 0
        m = pc[have].mean(0) if have.any() else np.full(len(DEPTH_METRICS), np.nan)
        return {k: float(v) for k, v in zip(DEPTH_METRICS, m)}

    def report(self) -> MetricReport:
        pc = self.per_camera()
        rows = [ClassRow(c, {k: float(v) for k, v in zip(DEPTH_METRICS, pc[i])}) for i, c in enumerate(self.cameras)]
        return MetricReport(
            title=f"Depth ({self.min_depth} < gt < {self.max_depth} m, median scaling {'on' if self.median_scaling else 'off'})",
            columns=list(DEPTH_METRICS), rows=rows, summary=self.result(), percent=[], frames=int(self.counts.sum()),
            notes=["per-image metrics averaged per camera, then over cameras (OccNeRF / monodepth2)",
                   f"{int(self.empty.sum())} images had no valid pixel and were not averaged"],
        )
