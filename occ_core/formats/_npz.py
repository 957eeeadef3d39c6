"""Shared checked ``.npz`` reading: every wrong key, shape or dtype names the file."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from occ_core.errors import OccDataError


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, loaded eagerly.

    Raises:
        OccDataError: the file is missing or is not a readable ``.npz`` archive.
    """
    path = Path(path)
    if not path.is_file():
        raise OccDataError(f"{path}: file not found (expected an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise OccDataError(f"{path}: expected an .npz archive, found a single .npy array")
            return {k: z[k] for k in z.files}
    except OccDataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise OccDataError(f"{path}: not a readable .npz archive ({e})") from None


def require(path: Path | str, arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], dtypes: tuple[type, ...]) -> np.ndarray:
    """``arrays[key]`` checked against ``shape`` and one of ``dtypes``.

    Raises:
        OccDataError: naming the file, the key and what was expected.
    """
    if key not in arrays:
        raise OccDataError(f"{path}: missing key {key!r} (found {sorted(arrays)}); expected {key} {np.dtype(dtypes[0]).name} {shape}")
    a = arrays[key]
    if a.shape != tuple(shape):
        raise OccDataError(f"{path}: {key!r} has shape {a.shape}, expected {tuple(shape)}")
    if not any(a.dtype == np.dtype(d) for d in dtypes):
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise OccDataError(f"{path}: {key!r} has dtype {a.dtype}, expected {names}")
    return a


def check_labels(path: Path | str, key: str, labels: np.ndarray, valid_max: int, extra: tuple[int, ...] = ()) -> None:
    """Raise OccDataError if a label lies outside ``[0, valid_max]`` and ``extra``."""
    bad = labels > valid_max
    for v in extra:
        bad &= labels != v
    if bad.any():
        vals = np.unique(labels[bad])[:8].tolist()
        allowed = f"0..{valid_max}" + "".join(f", {v}" for v in extra)
        raise OccDataError(f"{path}: {key!r} holds labels {vals} outside {allowed} ({int(bad.sum())} voxels)")
