"""``occ-bag-play BAG [--rate R] [--loop] [--topics ...]``: publish a rosbag2 onto the live ROS 2 graph.

What ``ros2 bag play --clock`` does, for machines without rosbag2 (the PyPI rclpy wheels): every
message is published at its recorded receive time (scaled by ``--rate``) with the topic's recorded
(offered) QoS, and ``rosgraph_msgs/Clock`` on ``/clock`` carries the bag time before each message.
Messages travel as the bag's serialized CDR bytes (``Publisher.publish(bytes)``): nothing is
deserialized or converted, which is the cheapest path and keeps every field bit-exact. Each
publisher takes the Python class of the connection's type (:func:`message_class`), so the grids of
``occ-nusc2bag`` and ``occ-bag-eval`` (``/occupancy/gt_grid``, ``/occupancy/grid``) go out as
``occ_ros_msgs/SemanticOccupancyGrid``. A topic whose type has no importable Python message
package here (e.g. ``tf2_msgs`` from the bare wheels, or ``occ_ros_msgs`` where the project's
interfaces are not built) is skipped with a warning.

The bag is read with ``rosbags`` (MCAP or sqlite3, metadata.yaml folders).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from occ_core.errors import OccDataError

CLOCK_TOPIC = "/clock"


def message_class(typename: str) -> type | None:
    """The rclpy message class of ``pkg/msg/Name``, or None when its Python package is not importable."""
    parts = typename.split("/")
    if len(parts) != 3:
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        return None


def rclpy_qos(offered: Sequence[Any], default_depth: int = 10):
    """An rclpy ``QoSProfile`` from a rosbags connection's offered QoS profiles (the first one);
    KEEP_LAST ``default_depth`` RELIABLE VOLATILE when none was recorded, as ``ros2 bag play``."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if not offered:
        return QoSProfile(depth=default_depth)
    q = offered[0]
    transient = getattr(q.durability, "name", str(q.durability)).upper() == "TRANSIENT_LOCAL"
    best_effort = getattr(q.reliability, "name", str(q.reliability)).upper() == "BEST_EFFORT"
    keep_all = getattr(q.history, "name", str(q.history)).upper() == "KEEP_ALL"
    return QoSProfile(history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
                      depth=max(int(q.depth), 1) if not keep_all else default_depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)


@dataclass
class PlayConfig:
    """Arguments of :class:`BagPlayer` (see ``occ-bag-play --help``)."""

    bag: Path
    rate: float = 1.0
    loop: bool = False
    topics: list[str] | None = None
    clock: bool = True
    wait_for_subscribers: float = 0.0
    start_delay: float = 0.2


@dataclass
class PlayStats:
    """What one :meth:`BagPlayer.play` published: messages per topic, skipped topics (with the
    reason), and the wall time (``time.monotonic``) each message went out, keyed by (topic, log
    time ns)."""

    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    sent_at: dict[tuple[str, int], float] = field(default_factory=dict)
    wall_s: float = 0.0


class BagPlayer:
    """Publishes a bag from an rclpy node it owns (``bag_player``); call :meth:`play` (blocking).

    Args:
        config: what to play.
        context: rclpy context (None = the default one, which must be initialised).
        on_publish: called as ``on_publish(topic, log_time_ns)`` right after each message went out.
    """

    def __init__(self, config: PlayConfig, context: Any = None, on_publish: Callable[[str, int], None] | None = None,
                 node_name: str = "bag_player"):
        from rclpy.node import Node
        from rclpy.qos import QoSProfile
        from rosbags.highlevel import AnyReader

        if config.rate <= 0:
            raise ValueError(f"--rate: expected > 0, got {config.rate}")
        self.config = config
        self.on_publish = on_publish
        self._stop = threading.Event()
        path = Path(config.bag)
        if not path.exists():
            raise OccDataError(f"{path}: no such bag")
        self.reader = AnyReader([path])
        try:
            self.reader.open()
        except Exception as e:  # rosbags raises its own error types for unreadable bags
            raise OccDataError(f"{path}: cannot open the bag: {e}") from e
        self.node = Node(node_name, context=context)
        self.stats = PlayStats()
        self.connections = []
        self.publishers: dict[str, Any] = {}
        wanted = set(config.topics) if config.topics else None
        for c in self.reader.connections:
            if wanted is not None and c.topic not in wanted:
                continue
            cls = message_class(c.msgtype)
            if cls is None:
                self.stats.skipped[c.topic] = f"no Python message package for {c.msgtype}"
                self.node.get_logger().warning(f"skipping {c.topic}: no Python message package for {c.msgtype} here")
                continue
            if c.topic not in self.publishers:
                qos = getattr(c.ext, "offered_qos_profiles", [])
                self.publishers[c.topic] = self.node.create_publisher(cls, c.topic, rclpy_qos(qos))
            self.connections.append(c)
        if wanted is not None:
            for t in sorted(wanted - {c.topic for c in self.reader.connections}):
                self.node.get_logger().warning(f"topic {t} is not in {path}")
        self.clock_pub = None
        if config.clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10))

    def stop(self) -> None:
        """Ask :meth:`play` to return after the current message."""
        self._stop.set()

    def close(self) -> None:
        self.reader.close()
        self.node.destroy_node()

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait until every publisher has a matched subscription (or ``timeout`` s); True if all have."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self._stop.is_set():
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return True
            time.sleep(0.02)
        return all(p.get_subscription_count() > 0 for p in self.publishers.values())

    def publish_first(self, topics: Sequence[str]) -> int:
        """Publish the first message of each of ``topics`` now (a pre-roll, e.g. ``CameraInfo`` so
        that a node has its calibration before the first images); returns how many went out."""
        conns = [c for c in self.connections if c.topic in set(topics)]
        done: set[str] = set()
        for conn, _t, raw in self.reader.messages(connections=conns):
            if conn.topic not in done:
                self.publishers[conn.topic].publish(bytes(raw))
                done.add(conn.topic)
            if len(done) == len({c.topic for c in conns}):
                break
        return len(done)

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        self.clock_pub.publish(Clock(clock=Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)))

    def play(self) -> PlayStats:
        """Publish the bag (again and again with ``loop``) at ``rate``; returns the statistics."""
        cfg = self.config
        if cfg.wait_for_subscribers > 0:
            self.wait_for_subscribers(cfg.wait_for_subscribers)
        if cfg.start_delay > 0:
            time.sleep(cfg.start_delay)
        t_start = time.monotonic()
        while not self._stop.is_set():
            first_ns = None
            t0 = time.monotonic()
            for conn, t_ns, raw in self.reader.messages(connections=self.connections):
                if self._stop.is_set():
                    break
                if first_ns is None:
                    first_ns = t_ns
                due = t0 + (t_ns - first_ns) * 1e-9 / cfg.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                if self.clock_pub is not None:
                    self._publish_clock(t_ns)
                self.publishers[conn.topic].publish(bytes(raw))
                self.stats.sent_at[(conn.topic, t_ns)] = time.monotonic()
                self.stats.published[conn.topic] = self.stats.published.get(conn.topic, 0) + 1
                if self.on_publish is not None:
                    self.on_publish(conn.topic, t_ns)
            if not cfg.loop or first_ns is None:
                break
        self.stats.wall_s = time.monotonic() - t_start
        return self.stats


def parse_args(argv: list[str] | None) -> PlayConfig:
    p = argparse.ArgumentParser(prog="occ-bag-play", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 folder (MCAP or sqlite3) or .mcap/.db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument("--loop", action="store_true", help="play again and again")
    p.add_argument("--topics", nargs="+", help="only these topics")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds until every topic has a subscriber before playing")
    a = p.parse_args(argv)
    return PlayConfig(a.bag, a.rate, a.loop, a.topics, not a.no_clock, a.wait_for_subscribers)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    import rclpy

    rclpy.init()
    player = None
    try:
        player = BagPlayer(cfg)
        stats = player.play()
    except (OccDataError, ValueError) as e:
        print(f"occ-bag-play: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if player is not None:
            player.close()
        rclpy.try_shutdown()
    n = sum(stats.published.values())
    print(f"occ-bag-play: published {n} messages on {len(stats.published)} topics in {stats.wall_s:.1f} s"
          + (f"; skipped {', '.join(sorted(stats.skipped))}" if stats.skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
