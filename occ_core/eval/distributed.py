"""Merging metric accumulators across ``torch.distributed`` processes.

Every accumulator exposes ``state() -> dict[str, np.ndarray]`` of sufficient statistics whose
element-wise sum over processes is the state of one pass over all their samples, and
``load_state(state)``. :func:`all_reduce_metric` sums the state over the default process group
(float64 on the wire: counts stay exact below 2**53) and loads it back on every rank.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist


class Accumulator(Protocol):
    def state(self) -> dict[str, np.ndarray]: ...

    def load_state(self, state: dict[str, np.ndarray]): ...


def all_reduce_state(state: dict[str, np.ndarray], device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Element-wise sum of ``state`` over all ranks (identity without an initialised group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return {k: np.asarray(v).copy() for k, v in state.items()}
    out = {}
    for k in sorted(state):  # the same order on every rank
        a = np.asarray(state[k])
        t = torch.from_numpy(a.astype(np.float64)).to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        r = t.cpu().numpy()
        out[k] = np.rint(r).astype(a.dtype) if np.issubdtype(a.dtype, np.integer) else r.astype(a.dtype)
    return out


def all_reduce_metric(metric: Accumulator, device: str | torch.device = "cpu") -> Accumulator:
    """Replace ``metric``'s statistics by their sum over all ranks; returns it."""
    metric.load_state(all_reduce_state(metric.state(), device))
    return metric
