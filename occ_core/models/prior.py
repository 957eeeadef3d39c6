"""The per-voxel prior: the most frequent training label at each voxel.

This is the baseline every learned occupancy model has to beat (issue: models that learn).
It sees no sensor data: for every voxel ``[x, y, z]`` of the ego-frame grid it predicts the
label that voxel carried most often over the training frames (ties go to the lower class
index). It captures the layout that the driving scenes share (road under the ego, free space
above it) and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from occ_core.classes import OCC3D_NUM_CLASSES
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_save_npz


@dataclass
class PerVoxelPrior:
    """Per-voxel label counts over the training frames.

    Attributes:
        counts: (X, Y, Z, K) int64, how often each voxel carried each of K classes.
    """

    counts: np.ndarray

    @classmethod
    def fit(cls, frames: Iterable[np.ndarray], num_classes: int = OCC3D_NUM_CLASSES) -> "PerVoxelPrior":
        """Count labels over ``frames``, each an (X, Y, Z) integer grid with labels < num_classes."""
        counts = None
        for i, labels in enumerate(frames):
            labels = np.asarray(labels)
            if counts is None:
                counts = np.zeros((labels.size, num_classes), dtype=np.int64)
                shape = labels.shape
            elif labels.shape != shape:
                raise OccDataError(f"training frame {i}: shape {labels.shape}, expected {shape} like the first frame")
            if labels.size and labels.max() >= num_classes:
                raise OccDataError(f"training frame {i}: label {labels.max()} outside 0..{num_classes - 1}")
            flat = np.arange(labels.size, dtype=np.int64) * num_classes + labels.reshape(-1)
            counts.reshape(-1)[:] += np.bincount(flat, minlength=counts.size)
        if counts is None:
            raise OccDataError("PerVoxelPrior.fit: no training frames")
        return cls(counts.reshape(*shape, num_classes))

    def predict(self) -> np.ndarray:
        """(X, Y, Z) uint8: the most frequent training label per voxel (lowest index on ties)."""
        return np.argmax(self.counts, axis=-1).astype(np.uint8)

    def save(self, path: str | os.PathLike) -> None:
        """Write the counts to an ``.npz`` file atomically."""
        atomic_save_npz(path, counts=self.counts)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PerVoxelPrior":
        with np.load(path) as f:
            if "counts" not in f.files or f["counts"].ndim != 4:
                raise OccDataError(f"{path}: expected key 'counts' with shape (X, Y, Z, K)")
            return cls(f["counts"])
