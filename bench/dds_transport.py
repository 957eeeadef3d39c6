"""Same-host DDS loss of PointCloud2-sized messages: size x rate x QoS x CPU load x Fast DDS profile.

Run from the repository root: ``.venv/bin/python bench/dds_transport.py`` (the whole grid, a few
minutes), or a single cell with more messages, e.g.
``.venv/bin/python bench/dds_transport.py --sizes 600 --rates 10 --qos best_effort --load 2 --count 300``.

Two worker processes per profile, as on a robot: a publisher (like a LiDAR driver or a bag player)
and a subscriber (like ``occupancy_node``), both plain rclpy over the venv's Fast DDS
(rmw_fastrtps_cpp). Each cell creates a fresh topic, waits until publisher and subscription have
matched, publishes ``--count`` PointCloud2 messages of the given size (x, y, z, intensity, ring
float32, 20 bytes a point, like /LIDAR_TOP) on an absolute schedule at the given rate, waits for
stragglers and reports:

* loss = 1 - received / sent (distinct messages, by the sequence number carried in the stamp);
* ``dds_lost``: Fast DDS's own count of lost samples (the subscription's ``message_lost`` event),
  which shows whether the middleware notices the loss;
* the median delivery latency (publish -> subscriber callback, same clock).

QoS: ``best_effort`` is a sensor-data publisher and a ``qos_profile_sensor_data`` subscription
(best effort, keep last 5: a driver and the node's default ``input_qos``); ``reliable`` is a
reliable keep-last-10 pair (the node's ``input_qos: reliable``, a bag player).

Load: ``--load N`` starts N busy-loop processes at normal priority for the cells that ask for it,
standing in for the model saturating the 2 cores in the node (torch uses every core).

Profiles: ``default`` runs with no Fast DDS XML (the variable removed from the environment);
any other name is a file ``config/fastdds/<name>.xml`` (or a path), or a variant written by this
script (``shm=MB``: shared-memory segment of MB megabytes + UDPv4; ``udp``: UDPv4 only; ``udp=MB``:
UDPv4 only with larger socket buffers), given to both processes through
``FASTRTPS_DEFAULT_PROFILES_FILE``; ``<name>@sub`` / ``<name>@pub`` gives it to one side only, to
show which side needs it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model, load_average  # noqa: E402

PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
POINT_STEP = 20


# --------------------------------------------------------------------------- worker side


def _qos(kind: str):
    from rclpy.qos import QoSProfile, qos_profile_sensor_data

    return qos_profile_sensor_data if kind == "best_effort" else QoSProfile(depth=10)


def _cloud(size_bytes: int):
    """A PointCloud2 of ``size_bytes // 20`` points (x, y, z, intensity, ring float32) in LIDAR_TOP."""
    import array

    from sensor_msgs.msg import PointCloud2, PointField

    n = max(1, size_bytes // POINT_STEP)
    msg = PointCloud2()
    msg.header.frame_id = "LIDAR_TOP"
    msg.height, msg.width = 1, n
    msg.fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, name in enumerate(("x", "y", "z", "intensity", "ring"))]
    msg.point_step, msg.row_step = POINT_STEP, POINT_STEP * n
    msg.is_dense = True
    msg.data = array.array("B", os.urandom(POINT_STEP * n))
    return msg


def _reply(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker(role: str) -> int:
    """A publisher or subscriber process driven by JSON lines on stdin (one reply line each)."""
    import threading

    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node(f"dds_bench_{role}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    def spin():
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    cells: dict[str, dict] = {}
    old_pub = None
    _reply({"ready": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        topic = cmd.get("topic", "")
        if cmd["cmd"] == "sub":
            state = {"ids": set(), "lat": [], "lost": 0, "lock": threading.Lock()}

            def on_msg(msg, state=state):
                now = time.time()
                with state["lock"]:
                    state["ids"].add(int(msg.header.frame_id.rsplit("#", 1)[1]))
                    state["lat"].append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

            def on_lost(info, state=state):
                state["lost"] = int(info.total_count)

            state["sub"] = node.create_subscription(
                PointCloud2, topic, on_msg, _qos(cmd["qos"]),
                event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
            cells[topic] = state
            _reply({"ok": True})
        elif cmd["cmd"] == "pub":
            if old_pub is not None:  # destroyed only now: a writer that leaves can take its last sample with it
                node.destroy_publisher(old_pub)
            pub = node.create_publisher(PointCloud2, topic, _qos(cmd["qos"]))
            deadline = time.monotonic() + 15.0
            while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)  # the reader's side of the match (best effort drops data sent before it)
            msg = _cloud(int(cmd["size"]))
            period = 1.0 / float(cmd["rate"])
            t0 = time.monotonic() + 0.05
            late = 0
            for i in range(int(cmd["count"])):
                delay = t0 + i * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    late += 1
                now = time.time()
                msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1.0) * 1e9)
                msg.header.frame_id = f"LIDAR_TOP#{i}"
                pub.publish(msg)
            _reply({"sent": int(cmd["count"]), "late": late, "matched": pub.get_subscription_count()})
            old_pub = pub
        elif cmd["cmd"] == "stop":
            state = cells.pop(topic)
            deadline = time.monotonic() + float(cmd["drain"])
            while len(state["ids"]) < int(cmd["sent"]) and time.monotonic() < deadline:
                time.sleep(0.02)
            with state["lock"]:
                lat = sorted(state["lat"])
                missing = sorted(set(range(int(cmd["sent"]))) - state["ids"])
                _reply({"received": len(state["ids"]), "dds_lost": state["lost"], "missing": missing[:8],
                        "lat_ms": 1e3 * statistics.median(lat) if lat else float("nan")})
            node.destroy_subscription(state["sub"])
    rclpy.try_shutdown()  # wakes the executor: spin() returns
    spinner.join(5.0)
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    return 0


# --------------------------------------------------------------------------- driver side


@dataclass
class Cell:
    profile: str
    load: int
    qos: str
    rate: float
    size_kb: float
    sent: int
    received: int
    dds_lost: int
    lat_ms: float
    late: int

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else float("nan")


class Worker:
    def __init__(self, role: str, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, __file__, "--role", role], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.ask(None)  # the "ready" line

    def ask(self, cmd: dict | None) -> dict:
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker exited (rc {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def variant_xml(spec: str) -> str:
    """A Fast DDS XML profile for a bench-only variant (not shipped; for finding out what matters).

    ``shm=MB``: SHM segment of MB megabytes + default UDPv4 (what the shipped profile does);
    ``udp``: UDPv4 only, default socket buffers (what crosses hosts, or what runs when SHM cannot);
    ``udp=MB``: UDPv4 only with MB-megabyte socket send/receive buffers (capped by net.core.[rw]mem_max).
    """
    kind, _, value = spec.partition("=")
    transports = []
    if kind == "shm":
        transports.append(("SHM", f"<segment_size>{int(float(value) * 2**20)}</segment_size>"))
        transports.append(("UDPv4", ""))
    elif kind == "udp":
        extra = ""
        if value:
            b = int(float(value) * 2**20)
            extra = f"<sendBufferSize>{b}</sendBufferSize><receiveBufferSize>{b}</receiveBufferSize>"
        transports.append(("UDPv4", extra))
    else:
        raise SystemExit(f"dds_transport: unknown profile variant {spec!r} (expected shm=MB, udp or udp=MB)")
    descriptors = "".join(f"<transport_descriptor><transport_id>t{i}</transport_id><type>{t}</type>{extra}"
                          f"</transport_descriptor>" for i, (t, extra) in enumerate(transports))
    ids = "".join(f"<transport_id>t{i}</transport_id>" for i in range(len(transports)))
    return ('<?xml version="1.0" encoding="UTF-8" ?>\n'
            '<dds xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"><profiles>'
            f"<transport_descriptors>{descriptors}</transport_descriptors>"
            '<participant profile_name="bench" is_default_profile="true"><rtps>'
            f"<userTransports>{ids}</userTransports><useBuiltinTransports>false</useBuiltinTransports>"
            "</rtps></participant></profiles></dds>\n")


def profile_path(name: str, tmp: Path) -> Path:
    """The XML file of a profile name: a path ending in .xml, a variant (``shm=8``, ``udp``, ``udp=4``)
    written under ``tmp``, or a shipped profile ``config/fastdds/<name>.xml``."""
    if name.endswith(".xml"):
        return Path(name).resolve()
    if name.startswith(("shm=", "udp")):
        path = tmp / ("".join(c if c.isalnum() else "_" for c in name) + ".xml")
        path.write_text(variant_xml(name))
        return path
    return REPO / "config" / "fastdds" / f"{name}.xml"


def profile_env(profile: str, side: str, tmp: Path) -> dict[str, str]:
    """The environment of a worker: ``default`` = no Fast DDS XML; ``name`` = both sides;
    ``name@sub`` / ``name@pub`` = that side only (the other runs with the defaults)."""
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARS}
    name, _, only = profile.partition("@")
    if name != "default" and (not only or only == side):
        path = profile_path(name, tmp)
        if not path.is_file():
            raise SystemExit(f"dds_transport: no profile file {path}")
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(path)
    return env


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def run_profile(profile: str, args, run_id: str, tmp: Path) -> list[Cell]:
    sub = Worker("sub", profile_env(profile, "sub", tmp))
    pub = Worker("pub", profile_env(profile, "pub", tmp))
    cells = []
    try:
        for load in args.load:
            hogs = busy_loops(load)
            try:
                time.sleep(0.5 if load else 0.0)
                for qos in args.qos:
                    for rate in args.rates:
                        for size_kb in args.sizes:
                            topic = f"/dds_bench_{run_id}_{len(cells)}_{profile.replace('@', '_').replace('.', '_')}"
                            topic = "".join(c if c.isalnum() or c in "/_" else "_" for c in topic)
                            sub.ask({"cmd": "sub", "topic": topic, "qos": qos})
                            sent = pub.ask({"cmd": "pub", "topic": topic, "qos": qos, "size": int(size_kb * 1000),
                                            "rate": rate, "count": args.count})
                            got = sub.ask({"cmd": "stop", "topic": topic, "sent": sent["sent"], "drain": args.drain})
                            cell = Cell(profile, load, qos, rate, size_kb, sent["sent"], got["received"],
                                        got["dds_lost"], got["lat_ms"], sent["late"])
                            cells.append(cell)
                            print(f"  {profile:>20} load {load} {qos:>11} {rate:4.0f} Hz {size_kb:7.0f} kB: "
                                  f"{cell.received:4d}/{cell.sent:<4d} loss {100 * cell.loss:5.1f} % "
                                  f"(dds_lost {cell.dds_lost}, median latency {cell.lat_ms:.1f} ms"
                                  + (f", first missing {got['missing']}" if got["missing"] else "") + ")", flush=True)
            finally:
                stop_all(hogs)
    finally:
        sub.close()
        pub.close()
    return cells


def print_table(cells: list[Cell]) -> None:
    profiles = list(dict.fromkeys(c.profile for c in cells))
    print()
    print("| load | QoS | rate Hz | size kB | " + " | ".join(f"{p} loss % (dds_lost)" for p in profiles) + " |")
    print("|--:|---|--:|--:|" + "--:|" * len(profiles))
    keys = list(dict.fromkeys((c.load, c.qos, c.rate, c.size_kb) for c in cells))
    for key in keys:
        row = []
        for p in profiles:
            match = [c for c in cells if (c.load, c.qos, c.rate, c.size_kb) == key and c.profile == p]
            row.append(f"{100 * match[0].loss:.1f} ({match[0].dds_lost})" if match else "-")
        print(f"| {key[0]} | {key[1]} | {key[2]:.0f} | {key[3]:.0f} | " + " | ".join(row) + " |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=float, nargs="+", default=[10, 100, 300, 600, 1200], help="message sizes, kB")
    p.add_argument("--rates", type=float, nargs="+", default=[10, 20], help="publish rates, Hz")
    p.add_argument("--qos", nargs="+", default=["best_effort", "reliable"], choices=("best_effort", "reliable"))
    p.add_argument("--load", type=int, nargs="+", default=[0, 2], help="numbers of busy-loop processes")
    p.add_argument("--profiles", nargs="+", default=["default", "occ_ros"],
                   help="'default' (no XML), a name under config/fastdds/, an .xml path, or a bench variant "
                        "shm=MB / udp / udp=MB; '<name>@sub' or '@pub' = that side only")
    p.add_argument("--count", type=int, default=50, help="messages per cell")
    p.add_argument("--drain", type=float, default=2.0,
                   help="at most this many seconds to wait for stragglers after the last message")
    p.add_argument("--json", type=Path, help="also write the cells as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.role:
        return worker(args.role)
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 - os.getpid() % 50))
    run_id = f"{os.getpid()}"
    start = datetime.datetime.now(datetime.timezone.utc)
    print(f"dds_transport: {start:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} x {cpu_model()}, "
          f"load average {load_average()}, ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}, {args.count} messages a cell",
          flush=True)
    cells = []
    with tempfile.TemporaryDirectory(prefix="dds_bench_") as tmp:
        for profile in args.profiles:
            cells += run_profile(profile, args, run_id, Path(tmp))
    print_table(cells)
    print(f"\nfinished {datetime.datetime.now(datetime.timezone.utc):%H:%M} UTC, "
          f"{(datetime.datetime.now(datetime.timezone.utc) - start).total_seconds():.0f} s, "
          f"load average {load_average()}")
    if args.json:
        args.json.write_text(json.dumps([c.__dict__ for c in cells], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
