"""Depth metrics as OccNeRF reports them (the monodepth2 protocol).

Per frame (one depth image, or all six of a sample's cameras stacked):

1. Valid pixels: ``min_depth < gt < max_depth`` (defaults 0.1 m and 80 m, the nuScenes
   setting of SurroundDepth/OccNeRF); ``gt = 0`` marks pixels without a LiDAR return.
2. Optional median scaling (``median_scaling=True``, for scale-ambiguous predictions):
   ``pred *= median(gt) / median(pred)`` over the valid pixels; OccNeRF reports metric depth
   without it.
3. ``pred`` is clamped to ``[min_depth, max_depth]``.
4. abs rel = mean(|gt - pred| / gt); sq rel = mean((gt - pred)^2 / gt);
   rmse = sqrt(mean((gt - pred)^2)); rmse log = sqrt(mean((ln gt - ln pred)^2));
   delta_k = mean(max(gt / pred, pred / gt) < 1.25^k) for k = 1, 2, 3.

The split's numbers are the mean of the per-frame values over frames (monodepth2 averages
per image, not per pixel). Frames without any valid pixel are not averaged and are counted
in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occ_core.eval.report import ClassRow, MetricReport

DEPTH_METRICS: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def frame_depth_errors(gt: np.ndarray, pred: np.ndarray, min_depth: float = 0.1, max_depth: float = 80.0,
                       median_scaling: bool = False) -> np.ndarray | None:
    """The 7 metrics of one frame, ordered as :data:`DEPTH_METRICS`; None if no pixel is valid.

    Args:
        gt: (...) ground-truth depth in metres (0 = none).
        pred: (...) predicted depth in metres, same shape.
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
    """Accumulates per-frame depth errors; mean over frames."""

    min_depth: float = 0.1
    max_depth: float = 80.0
    median_scaling: bool = False
    sums: np.ndarray = field(default_factory=lambda: np.zeros(len(DEPTH_METRICS)))
    frames: int = 0
    empty_frames: int = 0

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: gt, pred (...) depth in metres."""
        e = frame_depth_errors(gt, pred, self.min_depth, self.max_depth, self.median_scaling)
        if e is None:
            self.empty_frames += 1
            return
        self.sums += e
        self.frames += 1

    def state(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums.copy(), "counts": np.array([self.frames, self.empty_frames], dtype=np.float64)}

    def load_state(self, state: dict[str, np.ndarray]) -> "DepthMetric":
        self.sums = np.asarray(state["sums"], np.float64).copy()
        c = np.asarray(state["counts"]).reshape(-1)
        self.frames, self.empty_frames = int(c[0]), int(c[1])
        return self

    def merge(self, other: "DepthMetric") -> "DepthMetric":
        self.sums += other.sums
        self.frames += other.frames
        self.empty_frames += other.empty_frames
        return self

    def result(self) -> dict[str, float]:
        """Mean of each metric over the frames with valid pixels (nan if none)."""
        m = self.sums / self.frames if self.frames else np.full(len(DEPTH_METRICS), np.nan)
        return {k: float(v) for k, v in zip(DEPTH_METRICS, m)}

    def report(self) -> MetricReport:
        r = self.result()
        return MetricReport(
            title=f"Depth (valid {self.min_depth} < gt < {self.max_depth} m, median scaling {'on' if self.median_scaling else 'off'})",
            columns=[], rows=[], summary=r, percent=[], frames=self.frames,
            notes=["per-frame metrics averaged over frames (monodepth2 protocol)",
                   f"{self.empty_frames} frames had no valid pixel and were not averaged"],
        )
