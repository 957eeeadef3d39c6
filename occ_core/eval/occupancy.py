"""Voxel metrics: Occ3D mIoU, geometric IoU and the OpenOccupancy/SurroundOcc SSC metrics.

Protocol (Occ3D ``Metric_mIoU``, CVPR 2023 occupancy challenge):

1. Per frame, keep the voxels inside the mask (``mask_camera`` by default; ``mask_lidar``,
   both (logical and) or none are selectable) and whose ground truth lies in ``0..C-1``.
2. Add ``bincount(C * gt + pred, minlength=C*C)`` to one C×C confusion matrix ``H``
   (rows = ground truth, columns = prediction) summed over the whole split; free (17) is a
   row and column of ``H`` like any other class.
3. ``IoU_c = H[c, c] / (sum_j H[c, j] + sum_i H[i, c] - H[c, c])``: a class absent from both
   ground truth and prediction over the split gives 0/0 = nan; a class absent from the
   ground truth but predicted gives 0.
4. ``mIoU = nanmean(IoU_c)`` over the non-free classes (0-16 for Occ3D); free is excluded
   from the mean but stays in the matrix (its false positives/negatives count for the
   other classes).

Geometric IoU, from the same matrix: occupied = any non-free class;
``IoU = TP / (TP + FP + FN)`` with TP = occupied in both, FP = free in GT and occupied in the
prediction, FN = occupied in GT and free in the prediction, on the same masked voxels.

SSC (OpenOccupancy ``cm_to_ious`` / SurroundOcc ``evaluation_semantic``): the same confusion
matrix on the dense SSC grid (0 = empty, 1-16 classes, 255 = ignore: ignored voxels are
dropped), ``IoU`` = the geometric IoU with empty as free, ``mIoU`` = nanmean of the IoU of
classes 1-16. Use :func:`ssc_metric` for that configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OPENOCC_CLASSES, OPENOCC_FREE
from occ_core.errors import OccDataError
from occ_core.eval.report import ClassRow, MetricReport

SSC_CLASSES: tuple[str, ...] = ("empty",) + OCC3D_CLASSES[1:17]
MASKS: tuple[str, ...] = ("camera", "lidar", "both", "none")


def select_mask(mask_name: str, mask_camera: np.ndarray | None, mask_lidar: np.ndarray | None, where: str = "sample") -> np.ndarray | None:
    """The evaluation mask for ``mask_name`` (camera | lidar | both | none); None for none.

    Raises:
        OccDataError: the named mask is missing for this sample.
    """
    if mask_name not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask_name!r}")
    if mask_name == "none":
        return None
    need = {"camera": ("mask_camera",), "lidar": ("mask_lidar",), "both": ("mask_camera", "mask_lidar")}[mask_name]
    got = {"mask_camera": mask_camera, "mask_lidar": mask_lidar}
    for k in need:
        if got[k] is None:
            raise OccDataError(f"{where}: mask {mask_name!r} needs {k!r}, which this sample does not have")
    if mask_name == "camera":
        return np.asarray(mask_camera, bool)
    if mask_name == "lidar":
        return np.asarray(mask_lidar, bool)
    return np.asarray(mask_camera, bool) & np.asarray(mask_lidar, bool)


@dataclass
class ConfusionMetric:
    """Accumulates one C×C confusion matrix (rows = GT) over a split.

    Attributes:
        class_names: the C class names, index = label.
        free: the free/empty label (kept in the matrix, excluded from mIoU).
        ignore: a GT label whose voxels are dropped (any GT label >= C is dropped too).
        mask_name: recorded in the report title.
        hist: (C, C) int64 confusion matrix.
        frames: samples accumulated.
    """

    class_names: tuple[str, ...] = OCC3D_CLASSES
    free: int = OCC3D_FREE
    ignore: int = 255
    mask_name: str = "camera"
    title: str = "Occ3D mIoU"
    hist: np.ndarray = field(default=None)  # type: ignore[assignment]
    frames: int = 0

    def __post_init__(self) -> None:
        c = len(self.class_names)
        if self.hist is None:
            self.hist = np.zeros((c, c), dtype=np.int64)
        if self.hist.shape != (c, c):
            raise ValueError(f"hist must be ({c}, {c}), got {self.hist.shape}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def update(self, gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one frame.

        Args:
            gt: (X, Y, Z) integer labels; voxels with labels outside ``0..C-1`` or equal to
                ``ignore`` are dropped.
            pred: (X, Y, Z) integer labels in ``0..C-1``.
            mask: (X, Y, Z) bool, voxels to evaluate; None = all.
        """
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape or (mask is not None and np.shape(mask) != gt.shape):
            raise OccDataError(f"shape mismatch: gt {gt.shape}, pred {pred.shape}, mask {None if mask is None else np.shape(mask)}")
        c = self.num_classes
        gt = gt.reshape(-1)
        pred = pred.reshape(-1)
        if pred.size and int(pred.max()) >= c:
            raise OccDataError(f"prediction holds label {int(pred.max())}, expected 0..{c - 1}")
        if pred.size and pred.min() < 0:
            raise OccDataError(f"prediction holds label {int(pred.min())}, expected 0..{c - 1}")
        # one flat index per voxel; dropped voxels go to the extra bin c*c (cheaper than a
        # boolean gather: the target is a few ms per 200x200x16 frame)
        small = c * c < np.iinfo(np.uint16).max
        idx = gt.astype(np.uint16 if small else np.int64) * c
        idx += pred.astype(idx.dtype)
        drop = None if mask is None else ~np.asarray(mask, bool).reshape(-1)
        if gt.size and (int(gt.max()) >= c or (self.ignore < c and (gt == self.ignore).any()) or gt.min() < 0):
            bad = (gt >= c) | (gt < 0) | ((gt == self.ignore) if self.ignore < c else False)
            drop = bad if drop is None else (drop | bad)
        if drop is not None:
            idx = np.where(drop, idx.dtype.type(c * c), idx)
        self.hist += np.bincount(idx, minlength=c * c + 1)[: c * c].reshape(c, c)
        self.frames += 1

    # ------------------------------------------------------------------ distributed
    def state(self) -> dict[str, np.ndarray]:
        """Sufficient statistics: sum them across processes (e.g. ``all_reduce``) to merge."""
        return {"hist": self.hist.copy(), "frames": np.array([self.frames], dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> "ConfusionMetric":
        """Replace the statistics by ``state`` (e.g. after an all_reduce); returns self."""
        self.hist = np.asarray(state["hist"]).astype(np.int64).reshape(self.num_classes, self.num_classes)
        self.frames = int(np.asarray(state["frames"]).reshape(-1)[0])
        return self

    def merge(self, other: "ConfusionMetric") -> "ConfusionMetric":
        """Add ``other``'s statistics into self (same classes); returns self."""
        if other.class_names != self.class_names or other.free != self.free:
            raise ValueError("cannot merge metrics over different class sets")
        self.hist += other.hist
        self.frames += other.frames
        return self

    # ------------------------------------------------------------------ results
    def per_class_iou(self) -> np.ndarray:
        """(C,) float64 IoU per class (nan where the class is absent from GT and prediction)."""
        tp = np.diag(self.hist).astype(np.float64)
        denom = self.hist.sum(1) + self.hist.sum(0) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return tp / denom

    def miou(self) -> float:
        """nanmean of the IoU over the non-free classes (nan if all are undefined)."""
        iou = np.delete(self.per_class_iou(), self.free)
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")

    def geometric_iou(self) -> float:
        """Occupied-vs-free IoU on the evaluated voxels (nan if nothing is occupied anywhere)."""
        occ = np.ones(self.num_classes, bool)
        occ[self.free] = False
        tp = self.hist[np.ix_(occ, occ)].sum()
        fn = self.hist[occ, self.free].sum()
        fp = self.hist[self.free, occ].sum()
        d = tp + fp + fn
        return float(tp / d) if d else float("nan")

    def report(self) -> MetricReport:
        iou = self.per_class_iou()
        rows = [ClassRow(n, {"IoU": float(iou[i])}) for i, n in enumerate(self.class_names) if i != self.free]
        return MetricReport(
            title=f"{self.title} (mask: {self.mask_name})",
            columns=["IoU"],
            rows=rows,
            summary={"mIoU": self.miou(), "IoU (geometric)": self.geometric_iou()},
            percent=["IoU", "mIoU", "IoU (geometric)"],
            frames=self.frames,
            notes=[f"one {self.num_classes}x{self.num_classes} confusion matrix over the split; mIoU = nanmean over "
                   f"the {self.num_classes - 1} non-free classes; nan = class absent from GT and prediction"],
        )


def occ3d_miou(mask_name: str = "camera") -> ConfusionMetric:
    """Occ3D mIoU / geometric IoU accumulator (18 classes, free = 17)."""
    return ConfusionMetric(OCC3D_CLASSES, OCC3D_FREE, 255, mask_name, "Occ3D mIoU")


def openocc_miou(mask_name: str = "none") -> ConfusionMetric:
    """Voxel mIoU on the OpenOcc v2 label space (17 classes, free = 16)."""
    return ConfusionMetric(OPENOCC_CLASSES, OPENOCC_FREE, 255, mask_name, "OpenOcc voxel mIoU")


def ssc_metric(title: str = "OpenOccupancy SSC") -> ConfusionMetric:
    """SSC accumulator: 0 = empty, classes 1-16, 255 ignored; IoU = geometric, mIoU over 1-16."""
    return ConfusionMetric(SSC_CLASSES, 0, 255, "none", title)
