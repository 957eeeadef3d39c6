"""Occ3D-nuScenes ground truth and predictions (DESIGN.md §3).

Layout::

    <gts>/<scene_name>/<sample_token>/labels.npz
        semantics    uint8 (200, 200, 16)  Occ3D classes 0-16, 17 = free
        mask_lidar   bool/uint8 (200, 200, 16)  voxels observed by LiDAR rays
        mask_camera  bool/uint8 (200, 200, 16)  voxels visible from a camera
    <pred_dir>/<sample_token>.npz
        semantics    uint8 (200, 200, 16)

Grids are indexed ``[x, y, z]`` in the ego (``base_link``) frame of the sample (grid
:data:`occ_core.grid.OCC3D`). The published files store the masks as uint8 0/1; both bool and
uint8 are accepted and returned as bool.

Prediction key: ``semantics`` is canonical and what :func:`write_prediction` writes. The key
``pred`` (used by several BEVDet/FlashOcc export scripts) is accepted when ``semantics`` is
absent; a file with neither is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occ_core.classes import OCC3D_FREE
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_save_npz
from occ_core.formats._npz import check_labels, load_npz, require
from occ_core.grid import OCC3D
from occ_core.paths import safe_component

SHAPE: tuple[int, int, int] = OCC3D.dims
PRED_KEYS: tuple[str, ...] = ("semantics", "pred")


@dataclass
class Occ3DSample:
    """One Occ3D ground-truth frame.

    Attributes:
        semantics: (X, Y, Z) uint8 Occ3D labels, 17 = free.
        mask_lidar: (X, Y, Z) bool.
        mask_camera: (X, Y, Z) bool.
    """

    semantics: np.ndarray
    mask_lidar: np.ndarray
    mask_camera: np.ndarray


def read_gt(path: str | os.PathLike, shape: tuple[int, int, int] = SHAPE) -> Occ3DSample:
    """Read ``labels.npz``; a wrong key, shape, dtype or label raises OccDataError naming the file."""
    arrays = load_npz(path)
    sem = require(path, arrays, "semantics", shape, (np.uint8,))
    check_labels(path, "semantics", sem, OCC3D_FREE)
    masks = [require(path, arrays, k, shape, (np.bool_, np.uint8)).astype(bool) for k in ("mask_lidar", "mask_camera")]
    return Occ3DSample(sem, masks[0], masks[1])


def write_gt(path: str | os.PathLike, sample: Occ3DSample) -> None:
    """Write ``labels.npz`` atomically (semantics uint8, masks uint8 0/1 as published)."""
    _check_write(path, "semantics", sample.semantics, OCC3D_FREE)
    atomic_save_npz(path, semantics=np.asarray(sample.semantics, np.uint8),
                    mask_lidar=np.asarray(sample.mask_lidar).astype(np.uint8),
                    mask_camera=np.asarray(sample.mask_camera).astype(np.uint8))


def sample_path(root: str | os.PathLike, scene: str, token: str) -> Path:
    """``<root>/<scene>/<token>/labels.npz``, the Occ3D ``gts/`` layout (``root`` = the ``gts``
    folder, or ``occ-label``'s ``--out``); scene name and token checked as single file names."""
    return Path(root) / safe_component(scene, "scene.name") / safe_component(token, "sample.token") / "labels.npz"


def prediction_path(folder: str | os.PathLike, token: str) -> Path:
    """``<folder>/<token>.npz``, a prediction file; the token checked as a single file name."""
    return Path(folder) / f"{safe_component(token, 'sample.token')}.npz"


def read_prediction(path: str | os.PathLike, shape: tuple[int, int, int] = SHAPE, free: int = OCC3D_FREE) -> np.ndarray:
    """Read a prediction ``<token>.npz``: (X, Y, Z) uint8 labels in ``0..free``.

    The key is ``semantics`` or, if absent, ``pred``.
    """
    arrays = load_npz(path)
    key = next((k for k in PRED_KEYS if k in arrays), "semantics")
    sem = require(path, arrays, key, shape, (np.uint8,))
    check_labels(path, key, sem, free)
    return sem


def write_prediction(path: str | os.PathLike, semantics: np.ndarray, free: int = OCC3D_FREE) -> None:
    """Write a prediction ``<token>.npz`` (key ``semantics``, uint8) atomically."""
    _check_write(path, "semantics", semantics, free)
    atomic_save_npz(path, semantics=np.asarray(semantics, np.uint8))


def _check_write(path, key: str, labels: np.ndarray, free: int) -> None:
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise OccDataError(f"{path}: {key!r} must be an integer (X, Y, Z) grid, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > free):
        raise OccDataError(f"{path}: {key!r} labels must lie in 0..{free}, got {labels.min()}..{labels.max()}")


@dataclass(frozen=True)
class GtEntry:
    """One ground-truth frame found on disk: ``<root>/<scene>/<token>/labels.npz``."""

    scene: str
    token: str
    path: Path


def list_gt(root: str | os.PathLike, filename: str = "labels.npz") -> list[GtEntry]:
    """All ``<root>/<scene>/<token>/<filename>`` files, sorted by scene then token.

    Scene and token come from folder names, which later name other files (``<pred>/<token>.npz``):
    each is checked as one file name (:func:`occ_core.paths.safe_component`).

    Raises:
        OccDataError: ``root`` is not a folder, holds no frames, a folder name that cannot be a
            scene name or token (e.g. a control character), or a token that appears twice.
    """
    root = Path(root)
    if not root.is_dir():
        raise OccDataError(f"{root}: ground-truth folder not found (expected <scene>/<token>/{filename})")
    entries = [GtEntry(safe_component(p.parent.parent.name, f"{root}: scene folder"),
                       safe_component(p.parent.name, f"{root}: token folder"), p)
               for p in sorted(root.glob(f"*/*/{filename}"))]
    if not entries:
        raise OccDataError(f"{root}: no <scene>/<token>/{filename} files found")
    seen: dict[str, GtEntry] = {}
    for e in entries:
        if e.token in seen:
            raise OccDataError(f"{root}: token {e.token} appears in scenes {seen[e.token].scene} and {e.scene}")
        seen[e.token] = e
    return entries
