"""Backend choice for the ops in :mod:`occ_core.ops`.

Every op has a torch reference (runs on any device) and a Triton kernel (CUDA; on CPU tensors
only under the Triton interpreter). Which one runs is decided per call:

1. the explicit ``backend=`` argument of the op, if given;
2. otherwise the environment variable ``OCC_OPS_BACKEND``;
3. values: ``"auto"`` (default) -- the Triton kernel for CUDA tensors when triton is installed,
   the torch reference otherwise; ``"torch"`` -- always the reference; ``"triton"`` -- always
   the kernel.

Forcing ``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` in the environment *before*
triton is first imported (the interpreter is chosen when triton loads); this module checks the
variable and raises otherwise. The kernels live in :mod:`occ_core.ops.triton` and are imported
only when chosen, so ``import occ_core.ops`` never imports triton.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKEND_ENV = "OCC_OPS_BACKEND"
BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Return ``"torch"`` or ``"triton"`` for a call on tensors living on ``device``.

    Args:
        backend: the op's ``backend=`` argument (``None``: use ``$OCC_OPS_BACKEND``, default
            ``"auto"``).
        device: device of the op's input tensors.

    Raises:
        ValueError: unknown backend name.
        RuntimeError: ``"triton"`` forced where it cannot run (triton missing, or CPU tensors
            without ``TRITON_INTERPRET=1``).
    """
    source = "backend argument"
    if backend is None:
        backend = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
        source = f"${BACKEND_ENV}"
    if backend not in BACKENDS:
        raise ValueError(f"{source}: expected one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(f"{source} asks for the Triton kernel but triton is not installed")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError(
                f"{source} asks for the Triton kernel on {device.type} tensors: set TRITON_INTERPRET=1 "
                "in the environment before triton is imported (CPU runs use the Triton interpreter)"
            )
    return backend
