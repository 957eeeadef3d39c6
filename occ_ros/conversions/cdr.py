"""Occupancy grid -> serialized (CDR) visualization_msgs/MarkerArray, for ``Publisher.publish(bytes)``.

With real rclpy messages, publishing a 40,000-voxel MarkerArray costs far more in rclpy's
Python -> C conversion (one attribute read per coordinate; ``serialize_message`` times it)
than in building the message. rclpy (Jazzy) publishes ready-made serialized bytes as they
are, so this module writes the CDR stream directly: the per-point payload is one numpy
``tobytes`` of the (N, 3) float64 centres. The stream decodes (rclpy ``deserialize_message``,
rosbags ``deserialize_cdr``) to exactly the message ``occupancy_to_marker_array`` builds; the
tests check that.

Layout: XCDR1 little endian (encapsulation ``00 01 00 00``), each primitive aligned to its
size relative to the end of the 4-byte encapsulation header, as Fast DDS writes ROS 2 messages.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OCC3D_PALETTE
from occ_core.grid import OCC3D, GridSpec

from .errors import ConversionError
from .markers import plan_markers

_ENCAPSULATION_LE = b"\x00\x01\x00\x00"
_CUBE_LIST, _ADD, _DELETEALL = 6, 0, 3


class _CdrWriter:
    """Append-only little-endian CDR writer; ``pos`` counts bytes after the encapsulation header."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def align(self, n: int) -> None:
        pad = -self.pos % n
        if pad:
            self.chunks.append(b"\x00" * pad)
            self.pos += pad

    def raw(self, data: bytes, alignment: int = 1) -> None:
        self.align(alignment)
        self.chunks.append(data)
        self.pos += len(data)

    def pack(self, fmt: str, alignment: int, *values) -> None:
        self.raw(struct.pack("<" + fmt, *values), alignment)

    def string(self, text: str, field: str = "string") -> None:
        if "\x00" in text:
            raise ConversionError(f"{field}: ROS strings cannot hold NUL characters, got {text!r}")
        data = text.encode("utf-8") + b"\x00"
        self.pack("I", 4, len(data))
        self.raw(data)

    def header(self, sec: int, nanosec: int, frame_id: str) -> None:
        self.pack("iI", 4, sec, nanosec)
        self.string(frame_id, "header.frame_id")

    def getvalue(self) -> bytes:
        return _ENCAPSULATION_LE + b"".join(self.chunks)


def _marker(w: _CdrWriter, hdr: tuple[int, int, str], ns: str, mid: int, mtype: int, action: int,
            scale: tuple[float, float, float], rgba: Sequence[float], points: np.ndarray | None,
            colors: np.ndarray | None) -> None:
    """One visualization_msgs/Marker (Jazzy field order)."""
    w.header(*hdr)
    w.string(ns, "class_names")
    w.pack("iii", 4, mid, mtype, action)
    w.pack("7d", 8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # pose: position, orientation (x, y, z, w)
    w.pack("3d", 8, *scale)
    w.pack("4f", 4, *rgba)
    w.pack("iI", 4, 0, 0)  # lifetime
    w.pack("?", 1, False)  # frame_locked
    n = 0 if points is None else int(points.shape[0])
    w.pack("I", 4, n)
    if n:
        w.raw(np.ascontiguousarray(points, dtype="<f8").tobytes(), 8)
    nc = 0 if colors is None else int(colors.shape[0])
    w.pack("I", 4, nc)
    if nc:
        w.raw(np.ascontiguousarray(colors, dtype="<f4").tobytes(), 4)
    w.string("")  # texture_resource
    w.header(0, 0, "")  # texture: sensor_msgs/CompressedImage header
    w.string("")  # texture.format
    w.pack("I", 4, 0)  # texture.data
    w.pack("I", 4, 0)  # uv_coordinates
    w.string("")  # text
    w.string("")  # mesh_resource
    w.string("")  # mesh_file.filename
    w.pack("I", 4, 0)  # mesh_file.data
    w.pack("?", 1, False)  # mesh_use_embedded_materials


def _header_fields(header: Any, frame_id: str, stamp: Any) -> tuple[int, int, str]:
    if header is not None:
        return int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id)
    if stamp is None:
        return 0, 0, frame_id
    return int(stamp.sec), int(stamp.nanosec), frame_id


def occupancy_to_marker_array_cdr(grid: np.ndarray, spec: GridSpec = OCC3D, header: Any = None,
                                  frame_id: str = "base_link", stamp: Any = None,
                                  class_names: Sequence[str] = OCC3D_CLASSES, palette: np.ndarray = OCC3D_PALETTE,
                                  free_label: int = OCC3D_FREE, alpha: float | np.ndarray = 1.0,
                                  hidden: Sequence[int] = ()) -> bytes:
    """The serialized MarkerArray of ``occupancy_to_marker_array`` (same arguments).

    Returns:
        CDR bytes of a ``visualization_msgs/MarkerArray`` for ``Publisher.publish(raw)`` (rclpy
        publishers of MarkerArray accept bytes) or a rosbag2 writer.
    """
    plan = plan_markers(grid, spec, class_names, palette, free_label, alpha, hidden)
    hdr = _header_fields(header, frame_id, stamp)
    if hdr[0] < -2**31 or hdr[0] >= 2**31 or not 0 <= hdr[1] < 2**32:
        raise ConversionError(f"header.stamp: sec must fit int32 and nanosec uint32, got {hdr[:2]}")
    centers = spec.flat_centers(plan.index)
    w = _CdrWriter()
    w.pack("I", 4, 1 + plan.classes.size)
    _marker(w, hdr, "", 0, 0, _DELETEALL, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), None, None)
    bounds = plan.bounds.tolist()
    for k, cls in enumerate(plan.classes.tolist()):
        lo, hi = bounds[k], bounds[k + 1]
        colors = plan.voxel_rgba[lo:hi] if plan.voxel_rgba is not None else None
        _marker(w, hdr, plan.names[k], int(cls), _CUBE_LIST, _ADD, plan.scale, plan.class_rgba[k].tolist(),
                centers[lo:hi], colors)
    return w.getvalue()
