"""Worker processes that die with their parent.

A pool worker (``multiprocessing.Pool``, a ``DataLoader`` worker) is a child process; when its
parent is killed with SIGKILL nothing tells it, and it runs on as an orphan until its work is
done (``occ-synth``'s scene workers did, at 100 % CPU each). :func:`die_with_parent`, called
first in the worker (a pool's ``initializer``, a DataLoader's ``worker_init_fn``), asks Linux to
send the worker SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``), and exits at once if
the parent is already gone. Every pool in occ_core starts its workers through it.

A forked worker also starts with torch single-threaded (when the parent imported torch): the
parent's intra-op OpenMP thread pool does not survive ``fork``, and a forked child whose first
parallel torch op waits on it hangs for ever (GNU OpenMP; seen with occ-label's pool after the
parent had run multi-threaded ops). One thread per worker process is what the pools want anyway.

Linux semantics: the signal is sent when the *thread* that forked the worker exits, so pools
must be created from a thread that outlives them (the main thread, as everywhere here). On
other systems the call does nothing (the orphan finishes its task and exits when the pool's
pipe closes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Make the calling process receive SIGKILL when its parent exits.

    Args:
        parent_pid: the pid the parent had when it started the worker (``os.getpid()`` in the
            parent); if the worker's parent is already another process (the parent died before
            this call), the worker exits at once.

    Returns:
        True where the kernel supports it (Linux), else False.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    return True


class DieWithParent:
    """A picklable pool ``initializer`` / ``worker_init_fn``: :func:`die_with_parent` (parent =
    the process that built this object), then ``then(*args)`` if given."""

    def __init__(self, then=None, *args):
        self.parent_pid = os.getpid()
        self.then = then
        self.args = args

    def __call__(self, *worker_args) -> None:
        die_with_parent(self.parent_pid)
        if "torch" in sys.modules:  # the parent's OpenMP pool did not survive the fork (module docstring)
            sys.modules["torch"].set_num_threads(1)
        if self.then is not None:
            self.then(*self.args, *worker_args)


__all__ = ["die_with_parent", "DieWithParent"]
