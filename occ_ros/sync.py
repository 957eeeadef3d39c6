"""Approximate-time synchronization of N inputs with one trigger input (the LiDAR).

Semantics follow ``message_filters.ApproximateTimeSynchronizer`` (Python): every input keeps
its last ``queue_size`` messages keyed by stamp (oldest stamp evicted first); a set matches
when it holds one message per input and ``max(stamps) - min(stamps) < slop``; matched
messages leave their queues. Differences, because the trigger decides the output rate and
stamp: a set is always built around a trigger message (per other input, the stamp closest to
the trigger's, ties to the older), trigger messages are tried oldest first, and when a trigger
message matches, the older trigger messages are dropped as incomplete (outputs keep stamp
order). With ``max_bytes`` the queues are bounded in payload bytes too, so memory stays bounded
whatever sizes arrive. A trigger message that leaves its queue unmatched (evicted, or overtaken) is reported
to ``on_incomplete`` with the inputs that had no message within the slop. A slop of 0 asks
for exactly equal stamps.

Pure Python and thread-safe (one lock); no ROS types: stamps are integer nanoseconds and the
payloads are whatever the caller stores (decoded arrays in the node).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class SyncedSet:
    """One matched set.

    Attributes:
        stamp_ns: the trigger's stamp (nanoseconds).
        payloads: input name -> payload, one per input (trigger included).
        stamps_ns: input name -> the stamp of its payload.
    """

    stamp_ns: int
    payloads: dict[str, Any]
    stamps_ns: dict[str, int]


@dataclass(frozen=True)
class IncompleteSet:
    """A trigger message that left the synchronizer unmatched: its stamp and the inputs it lacked."""

    stamp_ns: int
    missing: tuple[str, ...]


class ApproximateTimeSync:
    """Approximate-time synchronizer with a trigger input.

    Args:
        inputs: input names (unique); must contain ``trigger``.
        trigger: the input whose messages define the sets (the LiDAR).
        queue_size: messages kept per input (>= 1).
        slop: seconds; a set matches when its stamp spread is < slop.
        on_match: called with each :class:`SyncedSet` (outside the lock).
        on_incomplete: called with each :class:`IncompleteSet` (outside the lock).
        max_bytes: bytes kept per input at most (``sizeof`` of the payloads); the oldest
            messages are evicted first, the newest one always stays. None = no byte bound.
        sizeof: payload -> bytes (needed with ``max_bytes``).
    """

    def __init__(self, inputs: Sequence[str], trigger: str, queue_size: int, slop: float,
                 on_match: Callable[[SyncedSet], None], on_incomplete: Callable[[IncompleteSet], None] | None = None,
                 max_bytes: int | None = None, sizeof: Callable[[Any], int] | None = None):
        inputs = tuple(inputs)
        if len(set(inputs)) != len(inputs) or trigger not in inputs:
            raise ValueError(f"inputs must be unique and contain the trigger {trigger!r}, got {list(inputs)}")
        if queue_size < 1:
            raise ValueError(f"queue_size: expected >= 1, got {queue_size}")
        if not slop >= 0.0:
            raise ValueError(f"slop: expected >= 0 seconds, got {slop}")
        self.inputs = inputs
        self.trigger = trigger
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop * 1e9))
        self.on_match = on_match
        self.on_incomplete = on_incomplete
        if max_bytes is not None and (max_bytes < 1 or sizeof is None):
            raise ValueError(f"max_bytes: expected >= 1 with a sizeof function, got {max_bytes}")
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._queues: dict[str, dict[int, Any]] = {name: {} for name in inputs}
        self._bytes: dict[str, int] = {name: 0 for name in inputs}
        self._lock = threading.Lock()

    def add(self, name: str, stamp_ns: int, payload: Any) -> None:
        """Add one message of input ``name`` (a later message with the same stamp replaces it)."""
        if name not in self._queues:
            raise KeyError(f"unknown input {name!r}; inputs are {list(self.inputs)}")
        matched: list[SyncedSet] = []
        incomplete: list[IncompleteSet] = []
        with self._lock:
            q = self._queues[name]
            stamp_ns = int(stamp_ns)
            if stamp_ns in q:
                self._bytes[name] -= self._size(q[stamp_ns])
            q[stamp_ns] = payload
            self._bytes[name] += self._size(payload)
            while len(q) > self.queue_size or (self.max_bytes is not None and len(q) > 1
                                               and self._bytes[name] > self.max_bytes):
                old = min(q)
                self._bytes[name] -= self._size(q.pop(old))
                if name == self.trigger:
                    incomplete.append(IncompleteSet(old, self._missing(old)))
            self._match(matched, incomplete)
        for inc in incomplete:
            if self.on_incomplete is not None:
                self.on_incomplete(inc)
        for m in matched:
            self.on_match(m)

    def queued(self) -> dict[str, int]:
        """Messages waiting per input."""
        with self._lock:
            return {name: len(q) for name, q in self._queues.items()}

    def queued_bytes(self) -> dict[str, int]:
        """Payload bytes waiting per input (0 without ``sizeof``)."""
        with self._lock:
            return dict(self._bytes)

    def reset(self) -> None:
        """Forget every queued message (after the clock jumped back: old stamps would never match)."""
        with self._lock:
            for name in self.inputs:
                self._queues[name].clear()
                self._bytes[name] = 0

    # ------------------------------------------------------------------ internals (lock held)
    def _size(self, payload: Any) -> int:
        return int(self._sizeof(payload)) if self._sizeof is not None else 0

    def _closest(self, name: str, t: int) -> int | None:
        best = None
        for s in self._queues[name]:
            d = abs(s - t)
            if d < self.slop_ns or (d == 0 and self.slop_ns == 0):
                if best is None or d < abs(best - t) or (d == abs(best - t) and s < best):
                    best = s
        return best

    def _missing(self, t: int) -> tuple[str, ...]:
        return tuple(n for n in self.inputs if n != self.trigger and self._closest(n, t) is None)

    def _match(self, matched: list[SyncedSet], incomplete: list[IncompleteSet]) -> None:
        trig = self._queues[self.trigger]
        for t in sorted(trig):
            chosen = {self.trigger: t}
            for n in self.inputs:
                if n != self.trigger:
                    s = self._closest(n, t)
                    if s is None:
                        break
                    chosen[n] = s
            else:
                stamps = chosen.values()
                if max(stamps) - min(stamps) >= self.slop_ns and self.slop_ns > 0:
                    continue
                for older in [s for s in trig if s < t]:
                    incomplete.append(IncompleteSet(older, self._missing(older)))
                    del trig[older]
                payloads = {n: self._queues[n].pop(s) for n, s in chosen.items()}
                for n, p in payloads.items():
                    self._bytes[n] -= self._size(p)
                matched.append(SyncedSet(t, payloads, dict(chosen)))
                self._match(matched, incomplete)  # the rest of the trigger queue may match now
                return
