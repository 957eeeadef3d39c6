"""The one way a name that comes from data becomes part of a file path.

Tokens, scene names, sample_data file names, camera channels and bag topic names are read from
files a user did not write (a dataroot's JSON, a bag's metadata). Before any of them becomes a
path component it goes through :func:`safe_component` (one name: ``<out>/<token>.npz``) or
:func:`safe_relative` (a relative path such as nuScenes' ``samples/CAM_FRONT/x.jpg``), which
refuse separators (in a component), ``..``, absolute paths, empty names, NUL and other control
characters, with an :class:`~occ_core.errors.OccDataError` that names the field and the value.
:func:`checked_join` joins such a name under a folder and checks the result stays inside it.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from occ_core.errors import OccDataError

#: Longest component accepted (most file systems allow 255 bytes).
MAX_COMPONENT_BYTES = 255


def _check_chars(value: str, field: str) -> None:
    bad = [c for c in value if ord(c) < 0x20 or ord(c) == 0x7F]
    if bad:
        raise OccDataError(f"{field}: expected a name without control characters, got {value!r}")


def safe_component(value: object, field: str) -> str:
    """``value`` as one path component, checked.

    Args:
        value: the name from data (a token, a scene name, a topic with its slashes replaced, ...).
        field: names the value in errors (``"sample.token"``, ``"scene.name"``, ...).

    Returns:
        ``value`` unchanged (a ``str``).

    Raises:
        OccDataError: not a string, empty, ``.`` or ``..``, containing ``/`` or ``\\``, a
            control character, or longer than 255 bytes.
    """
    if not isinstance(value, str):
        raise OccDataError(f"{field}: expected a string name, got {type(value).__name__} {value!r}")
    if value in ("", ".", ".."):
        raise OccDataError(f"{field}: expected a file name, got {value!r}")
    if "/" in value or "\\" in value:
        raise OccDataError(f"{field}: expected a name without path separators, got {value!r}")
    _check_chars(value, field)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
        raise OccDataError(f"{field}: expected a name of at most {MAX_COMPONENT_BYTES} bytes, got {len(value)} characters")
    return value


def safe_relative(value: object, field: str) -> str:
    """``value`` as a relative POSIX path (``samples/CAM_FRONT/x.jpg``), every part checked.

    Raises:
        OccDataError: not a string, absolute (``/...``, ``\\...``, a drive ``C:``), empty, or
            with a ``..``/``.``/empty part, a backslash or a control character.
    """
    if not isinstance(value, str):
        raise OccDataError(f"{field}: expected a relative path string, got {type(value).__name__} {value!r}")
    if not value or value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        raise OccDataError(f"{field}: expected a relative path inside the data folder, got {value!r}")
    for part in value.split("/"):
        safe_component(part, field)
    return str(PurePosixPath(value))


def checked_join(root: str | os.PathLike, *names: str, field: str) -> Path:
    """``root / names...`` with each name a :func:`safe_relative` path; the resolved result must
    lie inside the resolved ``root`` (symbolic links included).

    Raises:
        OccDataError: a bad name, or a result outside ``root``.
    """
    root = Path(root)
    path = root
    for name in names:
        path = path / safe_relative(name, field)
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise OccDataError(f"{field}: {'/'.join(names)!r} leads outside {root}")
    return path


__all__ = ["MAX_COMPONENT_BYTES", "safe_component", "safe_relative", "checked_join"]
