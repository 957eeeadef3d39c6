"""What the bag tools share: opening a bag with errors that name it, header stamps read straight
from CDR bytes, and temporary folders that a killed run does not leave behind for good.

- :func:`open_bag` / :func:`bag_messages`: a missing path, a file that is not a bag (wrong
  suffix, a folder without ``metadata.yaml``), a truncated or corrupt bag become an
  :class:`~occ_core.errors.OccDataError` naming the path and the field (``bag``), never a
  rosbags traceback; this holds while the messages are read too, as a bag can be cut short
  after a valid index.
- :func:`header_stamp_ns`: the ``std_msgs/Header`` stamp that starts the CDR of every stamped
  message (PointCloud2, CompressedImage, SemanticOccupancyGrid, ...), without deserializing it.
- :func:`temp_dir_for` / :func:`remove_stale_temp_dirs`: a result ``<parent>/<name>`` is built
  in ``<parent>/.<name>.tmp-<pid>`` and renamed when complete; a run killed with ``kill -9``
  cannot remove its folder, so the next run for the same output removes every such folder whose
  pid is no longer alive (a recycled pid keeps its folder until that process is gone too).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

from occ_core.errors import OccDataError
from occ_core.fileio import remove_stale_temp_dirs, temp_dir_for  # noqa: F401 - the bag tools use them from here


def open_bag(path: str | os.PathLike, field: str = "bag", typestore: Any = None):
    """An opened ``rosbags.highlevel.AnyReader`` of the rosbag2 folder or ``.mcap``/``.db3`` file ``path``.

    Raises:
        OccDataError: naming ``field`` and ``path``: missing, not a bag, or unreadable (truncated,
            corrupt metadata or index).
    """
    from rosbags.highlevel import AnyReader

    p = Path(path)
    if not p.exists():
        raise OccDataError(f"{field}: {p} does not exist (expected a rosbag2 folder or a .mcap/.db3 file)")
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise OccDataError(f"{field}: {p} is a folder without metadata.yaml, not a rosbag2 bag")
    if p.is_file() and p.suffix not in (".mcap", ".db3"):
        raise OccDataError(f"{field}: {p} is not a bag (expected a rosbag2 folder or a .mcap/.db3 file)")
    kwargs = {"default_typestore": typestore} if typestore is not None else {}
    try:
        reader = AnyReader([p], **kwargs)
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises many types (its own, yaml, sqlite3, struct, ...)
        raise OccDataError(f"{field}: {p} cannot be read as a rosbag2 bag (truncated or not a bag?): "
                           f"{type(e).__name__}: {e}") from None
    return reader


def bag_messages(reader: Any, path: str | os.PathLike, connections: Sequence[Any] | None = None,
                 field: str = "bag") -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages(connections)`` (connection, log time ns, raw CDR), with read errors
    (a chunk cut short, bad compression) turned into an :class:`OccDataError` naming ``path``."""
    it = reader.messages(connections=connections) if connections is not None else reader.messages()
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - see open_bag
            raise OccDataError(f"{field}: {path}: cannot read its messages (truncated or corrupt?): "
                               f"{type(e).__name__}: {e}") from None
        yield item


def header_stamp_ns(raw: bytes | memoryview) -> int | None:
    """The header stamp (ns) of a serialized stamped message: CDR encapsulation (4 bytes), then
    ``builtin_interfaces/Time`` (int32 sec, uint32 nanosec) in the stream's byte order; None when
    ``raw`` is too short or not CDR."""
    raw = bytes(raw[:12])
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack("<iI" if raw[1] == 1 else ">iI", raw[4:12])
    return sec * 1_000_000_000 + nanosec


# ------------------------------------------------------------------ temporary folders


__all__ = ["open_bag", "bag_messages", "header_stamp_ns", "temp_dir_for", "remove_stale_temp_dirs"]
