"""File I/O: atomic writes (a result appears complete under its final name, or not at all),
temporary folders for results built whole (``.<name>.tmp-<pid>``, removed by the next run when
their process was killed) and YAML reads whose errors name the file."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml

from occ_core.errors import OccDataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file lives in the same directory (same file system), so the final
    ``os.replace`` is atomic. On an exception the temporary file is removed and ``path`` is
    left untouched. The result gets the permissions of a plainly created file (0666 less the
    umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask() is process-wide, racy under threads


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, compressed: bool = True, **arrays: np.ndarray) -> None:
    """Save arrays to an ``.npz`` file atomically (``np.savez_compressed`` by default)."""
    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object keeps numpy from appending '.npz'
            save(f, **arrays)


def read_yaml(path: str | os.PathLike, what: str) -> object:
    """The parsed YAML document at ``path``.

    Raises:
        OccDataError: naming the file and ``what`` it should be, when it cannot be read or is
            not valid YAML.
    """
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise OccDataError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise OccDataError(f"{path}: the {what} is not valid YAML ({e})") from None


# ------------------------------------------------------------------ temporary folders of whole results
def temp_dir_for(out: str | os.PathLike) -> Path:
    """The temporary folder of this process for the result ``out``: ``<parent>/.<name>.tmp-<pid>``."""
    out = Path(out)
    return out.parent / f".{out.name}.tmp-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temp_dirs(out: str | os.PathLike, prog: str | None = None) -> list[Path]:
    """Remove ``<parent>/.<name>.tmp-<pid>`` folders of ``out`` left by runs that no longer exist
    (killed before they could clean up); returns what was removed. Folders of live processes
    (another run writing the same output right now) are kept. With ``prog``, one line per folder
    goes to stderr."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{out.name}.tmp-") + r"(\d+)$")
    removed = []
    for d in sorted(out.parent.iterdir()):
        m = pattern.match(d.name)
        if not m or not d.is_dir() or d.is_symlink():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        if prog:
            print(f"{prog}: removed {d}, the temporary folder of an earlier run (pid {pid}) that did not finish",
                  file=sys.stderr)
    return removed
