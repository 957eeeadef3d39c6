"""ApproximateTimeSync (LiDAR trigger, message_filters queue/slop semantics) and DropOldestWorker, without DDS."""

from __future__ import annotations

import threading

import pytest

from occ_ros.sync import ApproximateTimeSync, IncompleteSet, SyncedSet
from occ_ros.worker import DropOldestWorker

MS = 1_000_000


def make(queue_size=5, slop=0.05):
    out: list[SyncedSet] = []
    inc: list[IncompleteSet] = []
    s = ApproximateTimeSync(["lidar", "a", "b"], "lidar", queue_size, slop, out.append, inc.append)
    return s, out, inc


def test_matches_closest_within_slop_regardless_of_arrival_order():
    s, out, inc = make()
    s.add("a", 90 * MS, "a90")
    s.add("a", 101 * MS, "a101")
    s.add("lidar", 100 * MS, "L100")
    assert out == []  # b missing
    s.add("b", 130 * MS, "b130")
    assert len(out) == 1 and out[0].stamp_ns == 100 * MS
    assert out[0].payloads == {"lidar": "L100", "a": "a101", "b": "b130"}
    assert out[0].stamps_ns == {"lidar": 100 * MS, "a": 101 * MS, "b": 130 * MS}
    assert s.queued() == {"lidar": 0, "a": 1, "b": 0}  # a90 stays (message_filters keeps unmatched)
    assert inc == []


def test_slop_is_strict_and_spread_is_checked():
    s, out, _ = make(slop=0.05)
    s.add("lidar", 100 * MS, "L")
    s.add("a", 150 * MS, "a")  # |d| == slop: not < slop
    s.add("b", 100 * MS, "b")
    assert out == []
    s2, out2, _ = make(slop=0.05)
    s2.add("lidar", 100 * MS, "L")
    s2.add("a", 70 * MS, "a")  # each within 30 ms of the trigger, but spread 60 ms >= slop
    s2.add("b", 130 * MS, "b")
    assert out2 == []
    s2.add("b", 110 * MS, "b2")  # spread 40 ms
    assert [o.payloads["b"] for o in out2] == ["b2"]


def test_older_triggers_dropped_as_incomplete_when_a_newer_matches():
    s, out, inc = make()
    s.add("lidar", 100 * MS, "L1")
    s.add("a", 100 * MS, "a1")  # b never comes for L1
    s.add("lidar", 200 * MS, "L2")
    s.add("a", 200 * MS, "a2")
    s.add("b", 200 * MS, "b2")
    assert [o.stamp_ns for o in out] == [200 * MS]
    assert inc == [IncompleteSet(100 * MS, ("b",))]
    assert s.queued()["lidar"] == 0


def test_queue_size_evicts_oldest_trigger_and_reports_it():
    s, out, inc = make(queue_size=2)
    for t in (100, 200, 300):
        s.add("lidar", t * MS, f"L{t}")
    assert [i.stamp_ns for i in inc] == [100 * MS] and inc[0].missing == ("a", "b")
    assert s.queued()["lidar"] == 2
    for t in (10, 20, 30):  # camera queue keeps only the newest 2
        s.add("a", t * MS, t)
    assert s.queued()["a"] == 2


def test_zero_slop_needs_equal_stamps_and_pending_triggers_match_in_order():
    s, out, _ = make(slop=0.0)
    s.add("lidar", 100 * MS, "L1")
    s.add("lidar", 200 * MS, "L2")
    s.add("a", 101 * MS, "x")
    s.add("b", 100 * MS, "b1")
    assert out == []
    s.add("a", 100 * MS, "a1")
    s.add("a", 200 * MS, "a2")
    s.add("b", 200 * MS, "b2")
    assert [o.stamp_ns for o in out] == [100 * MS, 200 * MS]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a"], "lidar", 5, 0.1, print)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["lidar"], "lidar", 0, 0.1, print)
    s, _, _ = make()
    with pytest.raises(KeyError):
        s.add("c", 0, None)


def test_worker_drops_oldest_counts_and_survives_errors():
    gate, started = threading.Event(), threading.Event()
    done: list[int] = []
    errors: list[int] = []

    def handler(item):
        started.set()
        gate.wait(5)
        if item == 3:
            raise RuntimeError("bad frame")
        done.append(item)

    w = DropOldestWorker(handler, maxsize=2, on_error=lambda item, e: errors.append(item))
    try:
        w.put(0)  # taken by the thread, blocks on the gate
        assert started.wait(5) and not w.join_idle(0.01)
        drops = [w.put(i) for i in (1, 2, 3, 4)]  # 1 and 2 are dropped
        assert drops == [False, False, True, True]
        gate.set()
        assert w.join_idle(5)
        st = w.stats()
        assert done == [0, 4] and errors == [3]
        assert (st.submitted, st.dropped, st.processed, st.failed, st.queued) == (5, 2, 2, 1, 0)
    finally:
        w.stop()
    with pytest.raises(RuntimeError):
        w.put(5)


def test_queues_are_bounded_in_bytes_too():
    matched, incomplete = [], []
    sync = ApproximateTimeSync(("lidar", "cam"), "lidar", queue_size=10, slop=0.05, on_match=matched.append,
                               on_incomplete=incomplete.append, max_bytes=1000, sizeof=len)
    for i in range(5):
        sync.add("cam", i * 10**9, b"x" * 400)  # 400 B each: at most 2 fit in 1000 B
    assert sync.queued()["cam"] == 2 and sync.queued_bytes()["cam"] == 800
    sync.add("cam", 9 * 10**9, b"x" * 5000)  # larger than the bound alone: kept, everything older goes
    assert sync.queued()["cam"] == 1 and sync.queued_bytes()["cam"] == 5000
    for i in range(3):
        sync.add("lidar", (20 + i) * 10**9, b"y" * 600)  # triggers evicted by bytes are reported incomplete
    assert sync.queued()["lidar"] == 1 and [inc.stamp_ns for inc in incomplete] == [20 * 10**9, 21 * 10**9]
    sync.add("cam", 22 * 10**9, b"z")  # 5001 B > 1000: the 5000 B image goes, "z" matches the trigger
    assert len(matched) == 1 and sync.queued_bytes() == {"lidar": 0, "cam": 0}
    sync.add("cam", 23 * 10**9, b"w" * 10)
    assert sync.queued_bytes()["cam"] == 10
    sync.reset()
    assert sync.queued() == {"lidar": 0, "cam": 0} and sync.queued_bytes() == {"lidar": 0, "cam": 0}
