"""A worker thread fed by a bounded drop-oldest queue.

The node's callbacks put synchronized frames here and return; the thread runs the predictor
and publishes. When the predictor is slower than the sensors the queue drops its oldest
frame (fresh data wins, as in perception nodes), and counts it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class WorkerStats:
    """Counters of a :class:`DropOldestWorker`: items put, dropped (oldest, queue full), done, failed; queued now."""

    submitted: int
    dropped: int
    processed: int
    failed: int
    queued: int


class DropOldestWorker:
    """Run ``handler(item)`` on a thread for items from a bounded drop-oldest queue.

    Args:
        handler: called on the worker thread for each item.
        maxsize: queue capacity (>= 1); ``put`` on a full queue drops the oldest item.
        on_error: called with ``(item, exception)`` when the handler raises; the worker goes on.
        name: thread name.
    """

    def __init__(self, handler: Callable[[Any], None], maxsize: int,
                 on_error: Callable[[Any, BaseException], None] | None = None, name: str = "occ-worker"):
        if maxsize < 1:
            raise ValueError(f"maxsize: expected >= 1, got {maxsize}")
        self._handler = handler
        self._on_error = on_error
        self._queue: deque = deque()
        self._maxsize = int(maxsize)
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._submitted = self._dropped = self._processed = self._failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> bool:
        """Queue ``item``; returns True when the oldest queued item was dropped to make room."""
        with self._cond:
            if self._stop:
                raise RuntimeError("worker is stopped")
            dropped = len(self._queue) >= self._maxsize
            if dropped:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(item)
            self._submitted += 1
            self._cond.notify()
        return dropped

    def stats(self) -> WorkerStats:
        with self._cond:
            return WorkerStats(self._submitted, self._dropped, self._processed, self._failed, len(self._queue))

    def join_idle(self, timeout: float) -> bool:
        """Wait until the queue is empty and no item is running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the item in progress; queued items are discarded."""
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if self._stop:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._handler(item)
                ok = True
            except Exception as e:  # noqa: BLE001 - the worker must survive any bad frame
                ok = False
                if self._on_error is not None:
                    try:
                        self._on_error(item, e)
                    except Exception:  # noqa: BLE001
                        pass
            with self._cond:
                self._busy = False
                if ok:
                    self._processed += 1
                else:
                    self._failed += 1
                self._cond.notify_all()
