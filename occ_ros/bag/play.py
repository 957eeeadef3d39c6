"""``occ-bag-play BAG [--rate R] [--loop] [--max-gap S] [--topics ...] [--namespace NS]``: publish a rosbag2 onto the live ROS 2 graph.

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

Long pauses: a gap between consecutive messages longer than ``--max-gap`` seconds of bag time
(default 2; the synthetic world's scenes are an hour apart) is skipped, not slept through: the
next message follows at once and a line says so (``skipped a 3598.5 s gap at ...``). ``/clock``
keeps the bag time (it jumps over the gap).

Namespaces (``--namespace /robot1``): every recorded topic is published below the namespace
(``/LIDAR_TOP`` as ``/robot1/LIDAR_TOP``), as a node in that namespace resolves its relative
topic names, so a bag recorded at the root feeds a node started with ``__ns:=/robot1``. Kept as
recorded (``--global-topics``, default :data:`GLOBAL_TOPICS`): ``/tf`` and ``/tf_static``, because
tf2 listeners and broadcasters use these absolute names whatever their node's namespace (ROS 2
robots share one TF tree unless a launch remaps ``/tf:=tf`` on purpose; pass ``--global-topics``
with nothing, or without them, to move TF too). ``/clock`` is never namespaced (``use_sim_time``
nodes read the absolute ``/clock``). The player's own node (``bag_player``) is started in the
namespace too. ``--topics`` names the bag's topics; ``--wait-for``, ``--preroll``,
``--expect-outputs`` and ``--lidar-topic`` name topics on the graph (after the namespace), and
the counts printed use the graph names. ``ros2 bag play`` has no such option (its publishers
use the recorded absolute names; ``--remap`` renames topics one by one).

Playing to a node (what ``occ-launch bag:=...`` runs):

- ``--reliable`` publishes every topic RELIABLE whatever the bag recorded (a reliable publisher
  matches both reliable and best-effort subscribers; a node with ``input_qos: reliable`` matches
  only reliable ones).
- ``--wait-for TOPIC ...`` (with ``--wait-for-node NAME``, or ``/NS/NAME`` for a node in a namespace): before playing, wait up to
  ``--wait-timeout`` s until each of these topics has a matched subscription (of that node).
  ``occupancy_node`` creates its input subscriptions only once its model is loaded, so this is
  its readiness signal. On timeout the tool says which topics lack a subscriber (and whether
  the QoS is incompatible) and exits 1.
- ``--preroll TOPIC ...``: publish the first message of these topics once before playing (the
  cameras' ``CameraInfo``, so the first keyframe does not lack intrinsics).
- ``--expect-outputs TOPIC``: after the bag ends, keep running until every played LiDAR frame
  (``--lidar-topic``) has a message with its header stamp on TOPIC (the node stamps its outputs
  with the LiDAR stamp), or until no output came for ``--drain-idle`` s; then print
  ``predicted N of M LiDAR frames`` and exit 0 (1 when frames were played and none was predicted).

The bag is read with ``rosbags`` (MCAP or sqlite3, metadata.yaml folders); a missing path, a file
that is not a bag and a truncated bag end the tool with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from occ_core.cli import nonnegative_float, positive_float, run_cli
from occ_core.errors import OccDataError
from occ_ros.bag.bagio import bag_messages, header_stamp_ns, open_bag

CLOCK_TOPIC = "/clock"
LIDAR_TOPIC = "/LIDAR_TOP"
#: Topics ``--namespace`` leaves at their recorded names: TF is absolute in tf2 (see the module docstring).
GLOBAL_TOPICS = ("/tf", "/tf_static")


def check_namespace(namespace: str) -> str:
    """``namespace`` as a ROS 2 namespace (``/robot1``; ``''`` and ``/`` = the root, returned as ``''``).

    Raises:
        OccDataError: not a valid absolute namespace (rcl's rule: ``/``-led, alphanumerics and ``_``).
    """
    from rclpy.exceptions import InvalidNamespaceException
    from rclpy.validate_namespace import validate_namespace

    if namespace in ("", "/"):
        return ""
    try:
        validate_namespace(namespace)
    except InvalidNamespaceException as e:
        reason = str(e).splitlines()[0].removeprefix("Invalid namespace: ")
        raise OccDataError(f"--namespace {namespace!r}: expected a ROS 2 namespace such as /robot1 ({reason})") from None
    return namespace


def graph_topic(topic: str, namespace: str = "", keep: Sequence[str] = GLOBAL_TOPICS) -> str:
    """The name the recorded ``topic`` is published under: ``namespace + topic`` (``/LIDAR_TOP``
    below ``/robot1`` is ``/robot1/LIDAR_TOP``), or ``topic`` itself for the root namespace and
    for the topics in ``keep``."""
    topic = "/" + topic.lstrip("/")
    if not namespace.strip("/") or topic in keep:
        return topic
    return "/" + namespace.strip("/") + topic


class NotReadyError(RuntimeError):
    """The subscribers waited for did not appear in time (the message names the topics)."""


def message_class(typename: str) -> type | None:
    """The rclpy message class of ``pkg/msg/Name``, or None when its Python package is not importable."""
    parts = typename.split("/")
    if len(parts) != 3:
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        return None


def rclpy_qos(offered: Sequence[Any], default_depth: int = 10, reliable: bool = False):
    """An rclpy ``QoSProfile`` from a rosbags connection's offered QoS profiles (the first one);
    KEEP_LAST ``default_depth`` RELIABLE VOLATILE when none was recorded, as ``ros2 bag play``.
    ``reliable`` forces RELIABLE (what a reliable subscriber can match)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if not offered:
        return QoSProfile(depth=default_depth)
    q = offered[0]
    transient = getattr(q.durability, "name", str(q.durability)).upper() == "TRANSIENT_LOCAL"
    best_effort = getattr(q.reliability, "name", str(q.reliability)).upper() == "BEST_EFFORT" and not reliable
    keep_all = getattr(q.history, "name", str(q.history)).upper() == "KEEP_ALL"
    return QoSProfile(history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
                      depth=max(int(q.depth), 1) if not keep_all else default_depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)


@dataclass
class PlayConfig:
    """Arguments of :class:`BagPlayer` and :func:`run_playback` (see ``occ-bag-play --help``).

    Attributes:
        max_gap: bag-time gaps between consecutive messages longer than this (s) are skipped.
        reliable: publish every topic RELIABLE.
        wait_for, wait_for_node, wait_timeout: readiness (see the module docstring).
        preroll: topics whose first message goes out once before playing.
        expect_outputs, lidar_topic, drain_idle, drain_timeout: count the predicted LiDAR frames.
        namespace: publish the bag's topics below it (``/robot1``; ``''`` = as recorded), except
            ``global_topics``; also the namespace of the player's node.
        prog: prefix of the lines the player prints.
    """

    bag: Path
    rate: float = 1.0
    loop: bool = False
    topics: list[str] | None = None
    clock: bool = True
    wait_for_subscribers: float = 0.0
    start_delay: float = 0.2
    max_gap: float = 2.0
    reliable: bool = False
    wait_for: list[str] | None = None
    wait_for_node: str | None = None
    wait_timeout: float = 120.0
    preroll: list[str] | None = None
    expect_outputs: str | None = None
    lidar_topic: str = LIDAR_TOPIC
    drain_idle: float = 10.0
    drain_timeout: float = 600.0
    namespace: str = ""
    global_topics: tuple[str, ...] = GLOBAL_TOPICS
    prog: str = "occ-bag-play"


@dataclass
class PlayStats:
    """What one :meth:`BagPlayer.play` published: messages per topic (graph names, i.e. after the
    namespace), skipped topics (bag names, with the reason), the wall time (``time.monotonic``) each message went out, keyed by (topic, log time
    ns), the skipped gaps (bag time ns of the message before the gap, gap in s), and the header
    stamps (ns) of the LiDAR clouds played (``config.lidar_topic``), in order."""

    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    sent_at: dict[tuple[str, int], float] = field(default_factory=dict)
    wall_s: float = 0.0
    gaps_skipped: list[tuple[int, float]] = field(default_factory=list)
    lidar_stamps: list[int] = field(default_factory=list)


class BagPlayer:
    """Publishes a bag from an rclpy node it owns (``bag_player``); call :meth:`play` (blocking).

    Args:
        config: what to play.
        context: rclpy context (None = the default one, which must be initialised).
        on_publish: called as ``on_publish(topic, log_time_ns)`` (graph topic) right after each message went out.

    Attributes:
        publishers: graph topic -> publisher. topic_of: bag topic -> graph topic (see ``namespace``).

    Raises:
        OccDataError: a rate that is not > 0, a max gap < 0, an invalid namespace, a missing path, a
            file that is not a bag, or a bag that cannot be read (named in the message).
    """

    def __init__(self, config: PlayConfig, context: Any = None, on_publish: Callable[[str, int], None] | None = None,
                 node_name: str = "bag_player"):
        from rclpy.node import Node
        from rclpy.qos import QoSProfile

        if not config.rate > 0:
            raise OccDataError(f"--rate: expected a number > 0, got {config.rate}")
        if not config.max_gap >= 0:
            raise OccDataError(f"--max-gap: expected a number >= 0, got {config.max_gap}")
        namespace = check_namespace(config.namespace)
        self.config = config
        self.on_publish = on_publish
        self._stop = threading.Event()
        path = Path(config.bag)
        self.reader = open_bag(path)
        self.node = Node(node_name, namespace=namespace or None, context=context)
        self.stats = PlayStats()
        self.connections = []
        self.publishers: dict[str, Any] = {}
        self.topic_of = {c.topic: graph_topic(c.topic, namespace, config.global_topics) for c in self.reader.connections}
        wanted = set(config.topics) if config.topics else None
        for c in self.reader.connections:
            if wanted is not None and c.topic not in wanted:
                continue
            cls = message_class(c.msgtype)
            if cls is None:
                self.stats.skipped[c.topic] = f"no Python message package for {c.msgtype}"
                self.node.get_logger().warning(f"skipping {c.topic}: no Python message package for {c.msgtype} here")
                continue
            out = self.topic_of[c.topic]
            if out not in self.publishers:
                qos = getattr(c.ext, "offered_qos_profiles", [])
                self.publishers[out] = self.node.create_publisher(cls, out, rclpy_qos(qos, reliable=config.reliable))
            self.connections.append(c)
        if wanted is not None:
            for t in sorted(wanted - {c.topic for c in self.reader.connections}):
                self.node.get_logger().warning(f"topic {t} is not in {path}")
        self.clock_pub = None
        if config.clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10))

    def say(self, text: str) -> None:
        """One line ``<prog>: text`` on stdout."""
        print(f"{self.config.prog}: {text}", flush=True)

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

    def _subscribed(self, topic: str, node_name: str | None) -> tuple[bool, list[Any]]:
        """(ready, the subscription endpoints of ``node_name`` (or all) on ``topic``); a
        ``node_name`` with a namespace (``/robot1/occupancy_node``) must match both."""
        infos = self.node.get_subscriptions_info_by_topic(topic)
        if node_name:
            ns, _, name = node_name.rpartition("/")
            infos = [i for i in infos if i.node_name == name and (not node_name.startswith("/")
                                                                    or i.node_namespace == (ns or "/"))]
        return bool(infos) and self.publishers[topic].get_subscription_count() > 0, infos

    def wait_until_subscribed(self, topics: Sequence[str], node_name: str | None, timeout: float) -> list[str]:
        """Wait until each of ``topics`` that this bag plays has a matched subscription (of the node
        ``node_name`` when given); returns the topics waited for (those in the bag).

        Raises:
            NotReadyError: after ``timeout`` s, naming the topics without one (and a QoS mismatch).
        """
        from rclpy.qos import ReliabilityPolicy

        absent = [t for t in topics if t not in self.publishers]
        if absent:
            self.say(f"not waiting for {', '.join(absent)}: not played from this bag")
        topics = [t for t in topics if t in self.publishers]
        end = time.monotonic() + timeout
        missing = list(topics)
        while not self._stop.is_set():
            missing = [t for t in missing if not self._subscribed(t, node_name)[0]]
            if not missing or time.monotonic() >= end:
                break
            time.sleep(0.05)
        if missing:
            who = f" of {node_name}" if node_name else ""
            hints = []
            for t in missing:
                _, infos = self._subscribed(t, node_name)
                ours = self.publishers[t].qos_profile.reliability
                if infos and ours == ReliabilityPolicy.BEST_EFFORT and any(
                        i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos):
                    hints.append(f"{t} is subscribed RELIABLE but the bag offers BEST_EFFORT (use --reliable)")
            raise NotReadyError(f"no subscription{who} on {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} "
                                f"after {timeout:g} s (is the node running, its model loaded and its input topics these?)"
                                + (f"; {'; '.join(hints)}" if hints else ""))
        return topics

    def publish_first(self, topics: Sequence[str]) -> int:
        """Publish the first message of each of ``topics`` (graph names) now (a pre-roll, e.g.
        ``CameraInfo`` so that a node has its calibration before the first images); returns how many went out."""
        conns = [c for c in self.connections if self.topic_of[c.topic] in set(topics)]
        done: set[str] = set()
        if not conns:
            return 0
        for conn, _t, raw in bag_messages(self.reader, self.config.bag, conns):
            out = self.topic_of[conn.topic]
            if out not in done:
                self.publishers[out].publish(bytes(raw))
                done.add(out)
            if len(done) == len({self.topic_of[c.topic] for c in conns}):
                break
        return len(done)

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        self.clock_pub.publish(Clock(clock=Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)))

    def play(self) -> PlayStats:
        """Publish the bag (again and again with ``loop``) at ``rate``; returns the statistics.

        Gaps of more than ``max_gap`` s between consecutive messages (bag time) are skipped: the
        message after the gap goes out right after the one before it, and a line says so.
        """
        cfg = self.config
        if cfg.wait_for_subscribers > 0:
            self.wait_for_subscribers(cfg.wait_for_subscribers)
        if cfg.start_delay > 0:
            time.sleep(cfg.start_delay)
        max_gap_ns = int(cfg.max_gap * 1e9)
        t_start = time.monotonic()
        while not self._stop.is_set():
            first_ns = prev_ns = None
            skipped_ns = 0
            t0 = time.monotonic()
            for conn, t_ns, raw in bag_messages(self.reader, cfg.bag, self.connections):
                if self._stop.is_set():
                    break
                if first_ns is None:
                    first_ns = t_ns
                if prev_ns is not None and t_ns - prev_ns > max_gap_ns:
                    gap_s = (t_ns - prev_ns) * 1e-9
                    skipped_ns += t_ns - prev_ns
                    self.stats.gaps_skipped.append((prev_ns, gap_s))
                    self.say(f"skipped a {gap_s:.1f} s gap at {(prev_ns - first_ns) * 1e-9:.1f} s into the bag "
                             f"(bag time {prev_ns * 1e-9:.3f} -> {t_ns * 1e-9:.3f} s; --max-gap {cfg.max_gap:g})")
                prev_ns = t_ns
                due = t0 + (t_ns - first_ns - skipped_ns) * 1e-9 / cfg.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                if self.clock_pub is not None:
                    self._publish_clock(t_ns)
                out = self.topic_of[conn.topic]
                self.publishers[out].publish(bytes(raw))
                self.stats.sent_at[(out, t_ns)] = time.monotonic()
                self.stats.published[out] = self.stats.published.get(out, 0) + 1
                if out == cfg.lidar_topic:
                    stamp = header_stamp_ns(raw)
                    self.stats.lidar_stamps.append(t_ns if stamp is None else stamp)
                if self.on_publish is not None:
                    self.on_publish(out, t_ns)
            if not cfg.loop or first_ns is None:
                break
        self.stats.wall_s = time.monotonic() - t_start
        return self.stats


class OutputCounter:
    """Counts the messages on an output topic by header stamp (raw subscription, reliable).

    The topic's type is taken from the graph (the publisher's endpoint), so any stamped message
    works (PointCloud2, SemanticOccupancyGrid, ...)."""

    def __init__(self, node: Any, topic: str, timeout: float):
        from rclpy.qos import QoSProfile

        self.topic = topic
        self.stamps: Counter[int] = Counter()
        self.last_at = time.monotonic()
        self._lock = threading.Lock()
        end = time.monotonic() + timeout
        typename = None
        while typename is None:
            infos = node.get_publishers_info_by_topic(topic)
            typename = infos[0].topic_type if infos else None
            if typename is None:
                if time.monotonic() >= end:
                    raise NotReadyError(f"--expect-outputs: nobody publishes {topic} after {timeout:g} s")
                time.sleep(0.05)
        cls = message_class(typename)
        if cls is None:
            raise NotReadyError(f"--expect-outputs: {topic} is {typename}, which has no Python message package here")
        self.sub = node.create_subscription(cls, topic, self._on_msg, QoSProfile(depth=100), raw=True)

    def _on_msg(self, raw: bytes) -> None:
        stamp = header_stamp_ns(raw)
        with self._lock:
            self.stamps[-1 if stamp is None else stamp] += 1
            self.last_at = time.monotonic()

    def matched(self, played: Sequence[int]) -> int:
        """How many of the ``played`` stamps (repeats allowed: ``--loop``) have an output."""
        want = Counter(played)
        with self._lock:
            return sum(min(n, self.stamps[s]) for s, n in want.items())

    def drain(self, played: Sequence[int], idle: float, timeout: float) -> int:
        """Wait until every played stamp has an output, or none came for ``idle`` s, or ``timeout`` s;
        returns :meth:`matched`."""
        start = time.monotonic()
        end = start + timeout
        while time.monotonic() < end:
            n = self.matched(played)
            with self._lock:
                quiet = time.monotonic() - max(self.last_at, start)
            if n >= len(played) or quiet > idle:
                return n
            time.sleep(0.05)
        return self.matched(played)


@dataclass
class PlaybackResult:
    """What :func:`run_playback` did: the player's statistics and, with ``expect_outputs``, how
    many played LiDAR frames got an output (``predicted`` of ``played``)."""

    stats: PlayStats
    played: int = 0
    predicted: int | None = None


def run_playback(cfg: PlayConfig, context: Any = None) -> PlaybackResult:
    """Play ``cfg.bag`` as ``occ-bag-play`` does: readiness wait, pre-roll, playback, and drain.

    Raises:
        OccDataError: bad arguments or an unreadable bag. NotReadyError: see :meth:`BagPlayer.wait_until_subscribed`.
    """
    from rclpy.executors import SingleThreadedExecutor

    player = BagPlayer(cfg, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(player.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        if cfg.wait_for:
            t0 = time.monotonic()
            waited = player.wait_until_subscribed(cfg.wait_for, cfg.wait_for_node, cfg.wait_timeout)
            player.say(f"{cfg.wait_for_node or 'subscribers'} ready on {len(waited)} topics after "
                       f"{time.monotonic() - t0:.1f} s; playing {cfg.bag} at x{cfg.rate:g}")
        counter = OutputCounter(player.node, cfg.expect_outputs, max(cfg.wait_timeout, 1.0)) if cfg.expect_outputs else None
        if cfg.preroll:
            from rclpy.duration import Duration

            player.publish_first(cfg.preroll)
            for t in cfg.preroll:  # delivered before the stream starts (reliable topics)
                if t in player.publishers:
                    player.publishers[t].wait_for_all_acked(Duration(seconds=5))
        result = PlaybackResult(player.play())
        result.played = len(result.stats.lidar_stamps)
        if counter is not None:
            result.predicted = counter.drain(result.stats.lidar_stamps, cfg.drain_idle, cfg.drain_timeout)
        return result
    finally:
        executor.shutdown()
        spinner.join(10)  # a spin thread still inside rcl when the process exits aborts it (std::terminate)
        player.close()


def parse_args(argv: list[str] | None) -> PlayConfig:
    p = argparse.ArgumentParser(prog="occ-bag-play", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 folder (MCAP or sqlite3) or .mcap/.db3 file")
    p.add_argument("--rate", type=positive_float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument("--loop", action="store_true", help="play again and again")
    p.add_argument("--max-gap", type=positive_float, default=2.0, metavar="S",
                   help="skip gaps between messages longer than S seconds of bag time (default 2)")
    p.add_argument("--topics", nargs="+", help="only these topics (the bag's names)")
    p.add_argument("--namespace", default="", metavar="NS",
                   help="publish every topic below NS (e.g. /robot1: /LIDAR_TOP as /robot1/LIDAR_TOP), except "
                        "--global-topics; /clock stays /clock. The other topic options name the published topics")
    p.add_argument("--global-topics", nargs="*", default=list(GLOBAL_TOPICS), metavar="TOPIC",
                   help=f"with --namespace: topics kept at their recorded names (default: {' '.join(GLOBAL_TOPICS)}, "
                        f"as tf2 uses them in every namespace; give none to move them too)")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--wait-for-subscribers", type=nonnegative_float, default=0.0, metavar="S",
                   help="wait up to S seconds until every topic has a subscriber before playing")
    p.add_argument("--reliable", action="store_true", help="publish every topic RELIABLE (whatever the bag recorded)")
    p.add_argument("--wait-for", nargs="+", metavar="TOPIC",
                   help="before playing, wait until these topics have a matched subscriber (see --wait-for-node)")
    p.add_argument("--wait-for-node", metavar="NAME",
                   help="with --wait-for: the subscriber must be this node (/NS/NAME: also in that namespace)")
    p.add_argument("--wait-timeout", type=positive_float, default=120.0, metavar="S",
                   help="give up waiting for subscribers after S seconds (default 120; exit 1)")
    p.add_argument("--preroll", nargs="+", metavar="TOPIC", help="publish the first message of these topics before playing")
    p.add_argument("--expect-outputs", metavar="TOPIC",
                   help="after playing, wait for an output with each LiDAR frame's stamp on TOPIC and print the count")
    p.add_argument("--lidar-topic", default=LIDAR_TOPIC, help=f"LiDAR topic of --expect-outputs (default {LIDAR_TOPIC})")
    p.add_argument("--drain-idle", type=positive_float, default=10.0, metavar="S",
                   help="with --expect-outputs: stop waiting when no output came for S seconds (default 10)")
    a = p.parse_args(argv)
    return PlayConfig(a.bag, a.rate, a.loop, a.topics, not a.no_clock, a.wait_for_subscribers,
                      max_gap=a.max_gap, reliable=a.reliable, wait_for=a.wait_for, wait_for_node=a.wait_for_node,
                      wait_timeout=a.wait_timeout, preroll=a.preroll, expect_outputs=a.expect_outputs,
                      lidar_topic=a.lidar_topic, drain_idle=a.drain_idle, namespace=a.namespace,
                      global_topics=tuple("/" + t.lstrip("/") for t in a.global_topics))


def _main(cfg: PlayConfig) -> int:
    import rclpy

    from occ_ros.dds_profile import use_shipped_profile

    check_namespace(cfg.namespace)
    open_bag(cfg.bag).close()  # a bad path or a file that is not a bag: one line, before rclpy starts
    use_shipped_profile()  # the player publishes ~600 kB clouds to another process
    rclpy.init()
    try:
        res = run_playback(cfg)
    except NotReadyError as e:
        print(f"occ-bag-play: {e}", file=sys.stderr)
        return 1
    finally:
        rclpy.try_shutdown()
    stats = res.stats
    n = sum(stats.published.values())
    print(f"occ-bag-play: published {n} messages on {len(stats.published)} topics in {stats.wall_s:.1f} s"
          + (f"; skipped {', '.join(sorted(stats.skipped))}" if stats.skipped else ""), flush=True)
    if res.predicted is not None:
        print(f"occ-bag-play: predicted {res.predicted} of {res.played} LiDAR frames "
              f"(an output on {cfg.expect_outputs} with the frame's stamp)", flush=True)
        if res.played and not res.predicted:
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_cli("occ-bag-play", lambda: _main(cfg))


if __name__ == "__main__":
    sys.exit(main())
