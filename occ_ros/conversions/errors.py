"""The one error type of the message <-> numpy conversions."""

from __future__ import annotations


class ConversionError(ValueError):
    """A malformed ROS message or an array that cannot become one.

    The message names the offending field (``PointCloud2.row_step``, ``Image.encoding``, ...)
    and what was expected.
    """
