"""What machine a benchmark ran on, and wall-clock timing: shared by the bench/*.py scripts (not a
benchmark itself)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other processes on a shared machine inflate timings."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def timed(fn, repeats: int, device) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after one warm-up call; on a CUDA ``device``
    (a ``torch.device``) each call is bracketed by synchronisations."""
    sync = device.type == "cuda"
    if sync:
        import torch
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out
