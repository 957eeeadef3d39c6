"""Per-input accounting from header stamps: what arrived, what should have, what was lost.

A sensor stream has a period (a LiDAR at 20 Hz: 50 ms). Its stamps tell how many messages were
sent even when the transport lost some: a gap of about k periods between two consecutive stamps
means k - 1 messages never arrived. :class:`StampTracker` keeps, per input:

* ``received``: messages that arrived (well-formed or not);
* ``lost``: messages missing from the stamp sequence (gaps of 1.5 periods or more; the
  period is the lower quartile of the last 32 stamp steps, so lost messages do not stretch it);
* ``expected`` = stamps accepted + ``lost`` + unreadable messages: what the sender sent over
  the same span;
* ``malformed``: messages that did not convert (counted by the caller with :meth:`malformed`);
* ``out_of_order``: stamps equal to or older than the last accepted one (duplicates, reordering);
  the caller drops those messages;
* ``transport_lost``: messages the middleware itself reports lost (rmw's ``message_lost``
  event: Fast DDS sees the gaps in its own sequence numbers, the first message included), told
  by the caller with :meth:`transport_lost`; a second opinion beside ``lost``;
* ``pauses``: gaps longer than ``pause_s`` (a paused or skipped recording, a sensor restart):
  not counted as loss; ``resets``: stamps that jumped back by more than ``pause_s`` (a bag
  played again, a restarted clock): the sequence starts afresh and the message is accepted.

Pure Python and thread-safe; stamps are integer nanoseconds.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from enum import Enum


class StampVerdict(Enum):
    """What :meth:`StampTracker.observe` decided about one stamp."""

    ACCEPT = "accept"  #: in sequence: use the message
    OUT_OF_ORDER = "out_of_order"  #: equal to or older than the last accepted stamp: drop it
    RESET = "reset"  #: jumped back by more than ``pause_s``: a new sequence, use the message


@dataclass(frozen=True)
class InputCounts:
    """A snapshot of one input's counters (see the module docstring)."""

    received: int
    expected: int
    lost: int
    malformed: int
    out_of_order: int
    pauses: int
    resets: int
    transport_lost: int
    period_s: float | None

    @property
    def loss_fraction(self) -> float:
        """(max(lost, transport_lost) + malformed + out_of_order) / expected (the larger of the two
        loss counts: each can miss what the other sees); 0 when nothing was expected yet."""
        bad = max(self.lost, self.transport_lost) + self.malformed + self.out_of_order
        return bad / max(self.expected, self.received) if self.expected > 0 else 0.0

    def minus(self, earlier: "InputCounts") -> "InputCounts":
        """The counts since ``earlier`` (an older snapshot of the same input)."""
        return InputCounts(*(getattr(self, f) - getattr(earlier, f) for f in
                             ("received", "expected", "lost", "malformed", "out_of_order", "pauses", "resets",
                              "transport_lost")),
                           period_s=self.period_s)


class StampTracker:
    """Counts one input's messages from their header stamps.

    Args:
        pause_s: a forward gap longer than this is a pause (not loss); a backward jump longer
            than this is a reset.
        window: stamp steps kept for the period estimate.
    """

    def __init__(self, pause_s: float = 2.0, window: int = 32):
        self.pause_ns = int(pause_s * 1e9)
        self._steps: deque[int] = deque(maxlen=window)
        self._last: int | None = None
        self._lock = threading.Lock()
        self._received = self._accepted = self._lost = self._malformed = 0
        self._out_of_order = self._pauses = self._resets = 0
        self._unstamped = 0
        self._transport_lost = 0
        self._unstamped_pending = 0  # unreadable messages since the last accepted one

    def period_ns(self) -> int | None:
        """The stream's period estimate (lower quartile of recent steps), or None before 3 steps."""
        with self._lock:
            return self._period_locked()

    def _period_locked(self) -> int | None:
        if len(self._steps) < 3:
            return None
        steps = sorted(self._steps)
        return steps[(len(steps) - 1) // 4]  # lower quartile: holds while up to 3/4 of the steps span a loss

    def observe(self, stamp_ns: int) -> StampVerdict:
        """Count one arrived message with this stamp and say whether to use it."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            self._received += 1
            last = self._last
            if last is not None and stamp_ns <= last:
                if last - stamp_ns > self.pause_ns:
                    self._resets += 1
                    self._steps.clear()
                    self._last = stamp_ns
                    self._accepted += 1
                    return StampVerdict.RESET
                self._out_of_order += 1
                return StampVerdict.OUT_OF_ORDER
            if last is not None:
                step = stamp_ns - last
                if step > self.pause_ns:
                    self._pauses += 1
                else:
                    period = self._period_locked()
                    if period is not None and period > 0 and step >= 1.5 * period:
                        missing = max(int(round(step / period)) - 1, 0)
                        # messages that arrived but could not be read filled part of the gap
                        self._lost += max(missing - self._unstamped_pending, 0)
                    self._steps.append(step)
            self._last = stamp_ns
            self._accepted += 1
            self._unstamped_pending = 0
            return StampVerdict.ACCEPT

    def received_unstamped(self) -> None:
        """Count a message that arrived but whose stamp could not be read (it did not deserialize);
        it is counted malformed too, and the gap it leaves in the stamp sequence is not lost."""
        with self._lock:
            self._received += 1
            self._malformed += 1
            self._unstamped += 1
            self._unstamped_pending += 1

    def transport_lost(self, count: int) -> None:
        """Add ``count`` messages the middleware reports lost (rmw ``message_lost`` event)."""
        with self._lock:
            self._transport_lost += int(count)

    def malformed(self) -> None:
        """Count a message that arrived but did not convert (after :meth:`observe`, or alone)."""
        with self._lock:
            self._malformed += 1

    def counts(self) -> InputCounts:
        with self._lock:
            period = self._period_locked()
            return InputCounts(self._received, self._accepted + self._lost + self._unstamped, self._lost, self._malformed,
                               self._out_of_order, self._pauses, self._resets, self._transport_lost,
                               None if period is None else period * 1e-9)


__all__ = ["StampVerdict", "InputCounts", "StampTracker"]
