"""sensor_msgs/PointCloud2 <-> numpy, with the semantics of ``sensor_msgs_py.point_cloud2``.

Reading builds one numpy view of the message buffer with a structured dtype
(``names``/``formats``/``offsets``/``itemsize`` taken from the ``PointField`` list and
``point_step``), so any field layout, padding and byte order is handled without per-point
Python code. The reader accepts rclpy messages and rosbags dataclass messages alike (duck
typing on field names; rosbags stores ``data`` as a numpy uint8 array).

Writing produces dense, packed, little-endian clouds of height 1, like ``create_cloud``.
"""

from __future__ import annotations

import array
import sys
from typing import Any, Sequence

import numpy as np

from .errors import ConversionError

#: PointField datatype constant -> numpy scalar type (sensor_msgs/PointField.msg).
POINTFIELD_DATATYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),     # INT8
    2: np.dtype(np.uint8),    # UINT8
    3: np.dtype(np.int16),    # INT16
    4: np.dtype(np.uint16),   # UINT16
    5: np.dtype(np.int32),    # INT32
    6: np.dtype(np.uint32),   # UINT32
    7: np.dtype(np.float32),  # FLOAT32
    8: np.dtype(np.float64),  # FLOAT64
}
_NUMPY_TO_DATATYPE: dict[np.dtype, int] = {v: k for k, v in POINTFIELD_DATATYPES.items()}


def _buffer(msg: Any, name: str) -> np.ndarray:
    """The message's ``data`` as a flat uint8 array without copying (array.array, bytes, numpy)."""
    try:
        return np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        data = np.asarray(msg.data)
        if data.dtype != np.uint8:
            raise ConversionError(f"{name}.data: expected a uint8 byte buffer, got {type(msg.data).__name__}") from exc
        return np.ascontiguousarray(data).reshape(-1)


def cloud_dtype(fields: Sequence[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """The structured dtype of one point, padded to ``point_step`` bytes.

    Args:
        fields: PointField-like objects (``name``, ``offset``, ``datatype``, ``count``).
        point_step: bytes per point.
        is_bigendian: byte order of the multi-byte fields.

    Raises:
        ConversionError: unknown datatype, ``count`` < 1, a field outside ``point_step``,
            duplicate or overlapping fields. A field with ``count`` > 1 becomes fields
            ``<name>_0`` .. ``<name>_<count-1>`` (sensor_msgs_py's naming).
    """
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        dt = POINTFIELD_DATATYPES.get(int(f.datatype))
        if dt is None:
            raise ConversionError(
                f"PointCloud2.fields[{f.name!r}].datatype: expected one of 1..8 (INT8..FLOAT64), got {f.datatype}")
        count = int(f.count)
        if count < 1:
            raise ConversionError(f"PointCloud2.fields[{f.name!r}].count: expected >= 1, got {f.count}")
        if int(f.offset) < 0 or int(f.offset) + count * dt.itemsize > point_step:
            raise ConversionError(
                f"PointCloud2.fields[{f.name!r}].offset: {count} x {dt.itemsize} bytes at offset {f.offset} "
                f"must lie inside point_step = {point_step}")
        # count > 1 becomes fields name_0 .. name_{count-1}, as sensor_msgs_py names them
        subnames = [f.name] if count == 1 else [f"{f.name}_{a}" for a in range(count)]
        for a, name in enumerate(subnames):
            if name in names:
                raise ConversionError(f"PointCloud2.fields: duplicate field name {name!r}")
            names.append(name)
            formats.append(dt.newbyteorder(order))
            offsets.append(int(f.offset) + a * dt.itemsize)
    spans = sorted(zip(offsets, (np.dtype(fm).itemsize for fm in formats), names))
    for (o1, s1, n1), (o2, _s2, n2) in zip(spans, spans[1:]):
        if o1 + s1 > o2:
            raise ConversionError(f"PointCloud2.fields: fields {n1!r} and {n2!r} overlap (offsets {o1}, {o2})")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def pointcloud2_to_array(msg: Any, field_names: Sequence[str] | None = None, skip_nans: bool = False,
                         reshape_organized: bool = False) -> np.ndarray:
    """Points of a PointCloud2 as a structured array (like ``sensor_msgs_py.read_points``).

    Args:
        msg: a ``sensor_msgs/PointCloud2`` (rclpy or rosbags message).
        field_names: fields to return (default: all, in message order).
        skip_nans: drop points with NaN in any of the returned fields.
        reshape_organized: return (height, width) for an organized cloud (height > 1) instead
            of (height * width,); ignored with ``skip_nans``.

    Returns:
        (N,) structured array (native byte order, fields at their message offsets; the itemsize
        keeps the padding of ``point_step``), N = height * width (fewer with skip_nans). Points
        are in ``msg.header.frame_id``. For a little-endian, unpadded cloud this is a view of
        the message buffer.

    Raises:
        ConversionError: malformed message (lengths, steps, fields) or unknown field names.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if point_step <= 0 and height * width > 0:
        raise ConversionError(f"PointCloud2.point_step: expected > 0, got {point_step}")
    if row_step < width * point_step:
        raise ConversionError(
            f"PointCloud2.row_step: expected >= width * point_step = {width * point_step}, got {row_step}")
    buf = _buffer(msg, "PointCloud2")
    if buf.size != height * row_step:
        raise ConversionError(
            f"PointCloud2.data: expected height * row_step = {height} * {row_step} = {height * row_step} bytes, "
            f"got {buf.size}")
    dtype = cloud_dtype(msg.fields, max(point_step, 1), bool(msg.is_bigendian))
    if field_names is not None:
        missing = [n for n in field_names if n not in dtype.names]
        if missing:
            raise ConversionError(
                f"PointCloud2.fields: no field(s) {missing}; the cloud has {list(dtype.names)}")
    if height * width == 0:
        pts = np.zeros((height, width), dtype=dtype)
    else:
        # One strided view: rows row_step apart, points point_step apart.
        pts = np.ndarray(shape=(height, width), dtype=dtype, buffer=buf, offset=0,
                         strides=(row_step, point_step))
    if field_names is not None:
        pts = pts[list(field_names)]
    if bool(msg.is_bigendian) != (sys.byteorder == "big"):
        native = np.dtype({"names": list(pts.dtype.names),
                           "formats": [pts.dtype.fields[n][0].newbyteorder("=") for n in pts.dtype.names],
                           "offsets": [pts.dtype.fields[n][1] for n in pts.dtype.names],
                           "itemsize": pts.dtype.itemsize})
        pts = pts.astype(native)
    if skip_nans:
        pts = pts.reshape(-1)
        keep = np.ones(pts.shape[0], dtype=bool)
        for n in pts.dtype.names:
            if pts.dtype.fields[n][0].kind == "f":
                keep &= ~np.isnan(pts[n])
        return pts[keep]
    if reshape_organized and height > 1:
        return pts
    return pts.reshape(-1)


def pointcloud2_to_xyz(msg: Any, field_names: Sequence[str] = ("x", "y", "z"), skip_nans: bool = False) -> np.ndarray:
    """Requested fields of a PointCloud2 as one (N, k) float32 array.

    Like ``sensor_msgs_py.read_points_numpy`` but every field is cast to float32, so mixed
    field types (e.g. float32 x,y,z with uint16 ring) work. Default fields: x, y, z.

    Args:
        msg: a ``sensor_msgs/PointCloud2`` (rclpy or rosbags message).
        field_names: the k fields, in column order.
        skip_nans: drop points with NaN in any of the requested fields.

    Returns:
        (N, k) float32 array, points in ``msg.header.frame_id``.
    """
    names = list(field_names)
    pts = pointcloud2_to_array(msg, names, skip_nans=skip_nans).reshape(-1)
    out = np.empty((pts.shape[0], len(names)), dtype=np.float32)
    for j, n in enumerate(names):
        out[:, j] = pts[n]
    return out


def _pointfield(name: str, offset: int, datatype: int):
    from sensor_msgs.msg import PointField

    return PointField(name=name, offset=offset, datatype=datatype, count=1)


def array_to_pointcloud2(points: np.ndarray, header: Any = None, frame_id: str = "base_link"):
    """A dense, packed, little-endian PointCloud2 (height 1) from a structured array.

    Args:
        points: (N,) structured array whose fields are int8..float64 scalars; fields are
            packed in dtype order (padding dropped).
        header: a ``std_msgs/Header`` to use; default a Header with ``frame_id`` and zero stamp.
        frame_id: frame of the points when no header is given.

    Returns:
        ``sensor_msgs.msg.PointCloud2`` (rclpy).
    """
    points = np.asarray(points)
    if points.dtype.names is None:
        raise ConversionError(f"points: expected a structured array, got dtype {points.dtype}")
    points = points.reshape(-1)
    names = list(points.dtype.names)
    fields, formats, offset = [], [], 0
    for n in names:
        dt = points.dtype.fields[n][0]
        datatype = _NUMPY_TO_DATATYPE.get(np.dtype(dt.type)) if dt.shape == () else None
        if datatype is None:
            raise ConversionError(f"points[{n!r}]: dtype {dt} has no PointField datatype (int8..float64 scalars)")
        fields.append(_pointfield(n, offset, datatype))
        formats.append(np.dtype(dt.type).newbyteorder("<"))
        offset += dt.itemsize
    packed_dtype = np.dtype({"names": names, "formats": formats})
    if points.dtype == packed_dtype and points.flags.c_contiguous:
        packed = points  # already the wire layout: no copy
    else:
        packed = np.empty(points.shape[0], dtype=packed_dtype)
        for n in names:
            packed[n] = points[n]
    return _make_cloud(packed, fields, header, frame_id)


def _make_cloud(packed: np.ndarray, fields: list, header: Any, frame_id: str):
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    msg = PointCloud2()
    msg.header = header if header is not None else Header(frame_id=frame_id)
    msg.height = 1
    msg.width = int(packed.shape[0])
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = int(packed.dtype.itemsize)
    msg.row_step = msg.point_step * msg.width
    isnan = np.zeros(packed.shape[0], dtype=bool)
    for n in packed.dtype.names:
        if packed.dtype.fields[n][0].kind == "f":
            isnan |= np.isnan(packed[n])
    msg.is_dense = not bool(isnan.any())
    data = array.array("B")
    data.frombytes(packed.view(np.uint8))  # one copy, into the message's buffer
    msg.data = data
    return msg


def columns_to_pointcloud2(columns: np.ndarray, field_names: Sequence[str], dtypes: Sequence[Any] | None = None,
                           header: Any = None, frame_id: str = "base_link"):
    """A dense, packed, little-endian PointCloud2 (height 1) from an (N, k) array.

    Args:
        columns: (N, k) array; column j becomes field ``field_names[j]``.
        field_names: k names, e.g. ``("x", "y", "z", "intensity", "ring")``.
        dtypes: k numpy dtypes (default float32 for every field), e.g.
            ``(float32, float32, float32, uint8, float32)`` for x, y, z, label, score.
        header: a ``std_msgs/Header``; default a Header with ``frame_id`` and zero stamp.
        frame_id: frame of the points when no header is given.
    """
    columns = np.asarray(columns)
    names = list(field_names)
    if columns.ndim != 2 or columns.shape[1] != len(names):
        raise ConversionError(f"columns: expected shape (N, {len(names)}) for fields {names}, got {columns.shape}")
    dts = [np.dtype(np.float32)] * len(names) if dtypes is None else [np.dtype(d) for d in dtypes]
    if len(dts) != len(names):
        raise ConversionError(f"dtypes: expected {len(names)} dtypes, got {len(dts)}")
    packed = np.empty(columns.shape[0], dtype=np.dtype({"names": names, "formats": [d.newbyteorder("<") for d in dts]}))
    for j, n in enumerate(names):
        packed[n] = columns[:, j]
    return array_to_pointcloud2(packed, header=header, frame_id=frame_id)
