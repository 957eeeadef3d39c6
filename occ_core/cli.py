"""What every console script shares: argument types for numbers, output checks done before the
long work starts, and one error convention.

The convention: bad input (a path that does not exist or cannot be written, a file of the
wrong kind, a bad number) ends the program with **one line** on stderr, ``<prog>: <message>``,
the message naming the file or field and what was expected, and **exit code 2**; never a
traceback. :func:`run_cli` applies it around a ``main``; argparse's own errors (unknown flags,
values the types below reject) already exit 2 with a usage line.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

from occ_core.errors import OccDataError


# ------------------------------------------------------------------ argparse types
def _number(kind: type, lo: float | None, hi: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and value != value:  # NaN
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its message
    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, 1, None, "an integer >= 1")(text)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, 0, None, "an integer >= 0")(text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(float, None, None, "a number > 0")(text)
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _number(float, None, None, "a number >= 0")(text)
    if not (0.0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


# ------------------------------------------------------------------ inputs and outputs, checked early
def check_input_file(path: str | os.PathLike, field: str) -> Path:
    """``path`` if it is a readable regular file.

    Raises:
        OccDataError: naming ``field`` and the path: missing, a folder, or unreadable.
    """
    p = Path(path)
    if not p.exists():
        raise OccDataError(f"{field}: {p} does not exist")
    if not p.is_file():
        raise OccDataError(f"{field}: {p} is not a file")
    if not os.access(p, os.R_OK):
        raise OccDataError(f"{field}: {p} is not readable")
    return p


def check_input_dir(path: str | os.PathLike, field: str) -> Path:
    """``path`` if it is a readable folder.

    Raises:
        OccDataError: naming ``field`` and the path: missing, not a folder, or unreadable.
    """
    p = Path(path)
    if not p.exists():
        raise OccDataError(f"{field}: {p} does not exist")
    if not p.is_dir():
        raise OccDataError(f"{field}: {p} is not a folder")
    if not os.access(p, os.R_OK | os.X_OK):
        raise OccDataError(f"{field}: {p} is not readable")
    return p


def _probe_writable(folder: Path, field: str, target: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".occ-write-check.", dir=folder)
    except OSError as e:
        raise OccDataError(f"{field}: cannot write in {folder} for {target} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)


def _make_dir(folder: Path, field: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OccDataError(f"{field}: cannot create the folder {folder} ({e.strerror or e})") from None


def check_output_dir(path: str | os.PathLike, field: str, create: bool = True) -> Path:
    """Make sure results can be written under the folder ``path`` (created with its parents when
    ``create``) before the long work starts.

    Raises:
        OccDataError: naming ``field`` and the path: an existing file, a folder that cannot be
            created, or one that is not writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OccDataError(f"{field}: {p} exists and is not a folder")
    if not p.exists() and not create:
        raise OccDataError(f"{field}: {p} does not exist")
    _make_dir(p, field)
    _probe_writable(p, field, p)
    return p


def check_output_file(path: str | os.PathLike, field: str) -> Path:
    """Make sure the file ``path`` can be written (its folder is created when missing) before the
    long work starts; an existing file is kept until the result replaces it.

    Raises:
        OccDataError: naming ``field`` and the path: a folder where the file should be, or a
            parent that cannot be created or written.
    """
    p = Path(path)
    if p.is_dir():
        raise OccDataError(f"{field}: {p} is a folder, expected a file path")
    if p.name in ("", ".", ".."):
        raise OccDataError(f"{field}: expected a file path, got {str(path)!r}")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise OccDataError(f"{field}: {parent} is not a folder, so {p} cannot be written")
    _make_dir(parent, field)
    _probe_writable(parent, field, p)
    return p


def check_device(text: str, field: str = "--device"):
    """``text`` as a ``torch.device`` this torch can use (``cpu``, ``cuda``, ``cuda:1``, ...).

    Raises:
        OccDataError: naming ``field``: not a device name, or CUDA asked of a torch without CUDA
            or with fewer devices.
    """
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise OccDataError(f"{field}: expected a torch device such as cpu, cuda or cuda:0, got {text!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OccDataError(f"{field}: {text!r} asked for, but this torch {torch.__version__} has no usable CUDA "
                               f"device; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OccDataError(f"{field}: {text!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise OccDataError(f"{field}: expected cpu or cuda[:N], got {text!r}")
    return dev


# ------------------------------------------------------------------ one error convention
def _one_line(text: str) -> str:
    """A message on one line (library errors such as torch's carry several)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def run_cli(prog: str, main: Callable[[], int | None]) -> int:
    """Run ``main``; bad input ends it with one line ``<prog>: <message>`` and exit code 2.

    Caught: :class:`OccDataError` (the project's bad-input error, whose message already names the
    file/field) and :class:`OSError` (a file that vanished or a disk that filled up mid-run,
    named by its path). ``KeyboardInterrupt`` exits 130. Anything else is a bug and keeps its
    traceback.
    """
    try:
        return int(main() or 0)
    except OccDataError as e:
        print(f"{prog}: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        reason = e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e)
        print(f"{prog}: {_one_line(where + reason)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


__all__ = ["positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "check_input_file",
           "check_input_dir", "check_output_dir", "check_output_file", "check_device", "run_cli"]
