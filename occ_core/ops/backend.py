"""Backend choice for the ops in :mod:`occ_core.ops`.

Every op has a torch reference (runs on any device) and a Triton kernel (CUDA; on CPU tensors
only under the Triton interpreter); the ray ops (:func:`~occ_core.ops.raycast.raycast`,
:func:`~occ_core.ops.ray_traverse.ray_traverse`) also have a numba CPU kernel. Which one runs
is decided per call:

1. the explicit ``backend=`` argument of the op, if given;
2. otherwise the environment variable ``OCC_OPS_BACKEND``;
3. values: ``"auto"`` (default) -- the Triton kernel for CUDA tensors when triton is installed;
   on other devices the numba kernel when the op has one and numba is installed; the torch
   reference otherwise. ``"torch"`` -- always the reference. ``"triton"`` -- always the Triton
   kernel. ``"numba"`` -- the numba kernel (CPU tensors only); for an op without one, a
   ``backend="numba"`` argument is an error while ``OCC_OPS_BACKEND=numba`` (a process-wide
   preference) runs the torch reference.

Forcing ``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` in the environment *before*
triton is first imported (the interpreter is chosen when triton loads); this module checks the
variable and raises otherwise. The kernels live in :mod:`occ_core.ops.triton` and
:mod:`occ_core.ops.numba` and are imported only when chosen, so ``import occ_core.ops`` never
imports triton or numba.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKEND_ENV = "OCC_OPS_BACKEND"
BACKENDS = ("auto", "torch", "triton", "numba")


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def numba_available() -> bool:
    """True when the ``numba`` package can be imported (without importing it)."""
    return importlib.util.find_spec("numba") is not None


def resolve_backend(backend: str | None, device: torch.device, has_numba: bool = False) -> str:
    """Return ``"torch"``, ``"triton"`` or ``"numba"`` for a call on tensors living on ``device``.

    Args:
        backend: the op's ``backend=`` argument (``None``: use ``$OCC_OPS_BACKEND``, default
            ``"auto"``).
        device: device of the op's input tensors.
        has_numba: the op has a numba CPU kernel.

    Raises:
        ValueError: unknown backend name, or a ``backend="numba"`` argument for an op without
            a numba kernel.
        RuntimeError: ``"triton"`` or ``"numba"`` forced where it cannot run (package missing;
            Triton on CPU tensors without ``TRITON_INTERPRET=1``; numba on non-CPU tensors).
    """
    source = "backend argument"
    if backend is None:
        backend = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
        source = f"${BACKEND_ENV}"
    if backend not in BACKENDS:
        raise ValueError(f"{source}: expected one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda":
            return "triton" if triton_available() else "torch"
        return "numba" if has_numba and device.type == "cpu" and numba_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(f"{source} asks for the Triton kernel but triton is not installed")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError(
                f"{source} asks for the Triton kernel on {device.type} tensors: set TRITON_INTERPRET=1 "
                "in the environment before triton is imported (CPU runs use the Triton interpreter)"
            )
    if backend == "numba":
        if not has_numba:
            if source == "backend argument":
                raise ValueError(f"{source}: this op has no numba kernel (choose 'auto', 'torch' or 'triton')")
            return "torch"
        if not numba_available():
            raise RuntimeError(f"{source} asks for the numba kernel but numba is not installed")
        if device.type != "cpu":
            raise RuntimeError(f"{source} asks for the numba kernel on {device.type} tensors: it runs on CPU tensors only")
    return backend
