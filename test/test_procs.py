"""Jobs that die leave nothing behind (issue 12, item 6): pool workers die with their parent, and
the next run removes what a killed one left."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from occ_core.data.synthetic import cli as synth_cli
from occ_core.procs import die_with_parent

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")


def _procs() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, pgid, state) of every process."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        out.append((int(d), int(fields[1]), int(fields[2]), fields[0]))
    return out


def _alive_in_group(pgid: int) -> list[int]:
    return [pid for pid, _, g, state in _procs() if g == pgid and state not in ("Z", "X")]


def test_synth_workers_die_with_a_killed_parent(tmp_path):
    out = tmp_path / "world"
    cmd = [sys.executable, "-m", "occ_core.data.synthetic.cli", "--out", str(out), "--scenes", "2",
           "--samples-per-scene", "60", "--image-size", "64x36", "--workers", "2", "--quiet"]
    p = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len([q for q, ppid, _, _ in _procs() if ppid == p.pid]) < 2:
            assert p.poll() is None, "occ-synth ended before its workers were seen"
            assert time.monotonic() < deadline, "no pool workers within 60 s"
            time.sleep(0.1)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 5
        while _alive_in_group(p.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive_in_group(p.pid) == [], "worker processes outlived the killed occ-synth"
    finally:
        for pid in _alive_in_group(p.pid):  # never leave orphans behind, whatever happened
            os.kill(pid, signal.SIGKILL)
    assert list(tmp_path.glob(".world.tmp-*")), "the killed run's temporary folder should be there"
    # the next run removes the temporary folder of the killed one
    assert synth_cli.main(["--out", str(out), "--scenes", "1", "--samples-per-scene", "1", "--image-size", "32x18",
                           "--no-sweeps", "--workers", "1", "--quiet"]) == 0
    assert not list(tmp_path.glob(".world.tmp-*")) and (out / "v1.0-mini").is_dir()


def _child(conn, parent_pid):
    die_with_parent(parent_pid)
    conn.send(os.getpid())
    time.sleep(30)


def test_die_with_parent_exits_when_the_parent_is_already_gone():
    """A worker whose parent died before the call exits at once (the race prctl alone leaves)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    a, b = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(b, os.getpid() + 10**6))  # "the parent" is not our pid
    proc.start()
    proc.join(10)
    assert proc.exitcode == 1 and not a.poll()

