"""Point Fast DDS at the profile shipped with occ_ros (``config/fastdds/occ_ros.xml``), never over the user's own.

Why: Fast DDS (rmw_fastrtps_cpp, ROS 2 Jazzy's default middleware) sends data to processes on the
same host through a shared-memory segment owned by the *writer's* participant, 512 KiB by default.
A ~600 kB PointCloud2 goes out as ~10 fragments of 64 KiB that do not fit, and best-effort
subscribers lose almost every cloud (BENCHMARKS.md, "DDS transport"). The shipped profile keeps
Fast DDS's default transports (shared memory + UDPv4) with a 16 MiB segment and 4 MiB UDP socket
buffers.

Which processes need it: every process that PUBLISHES large messages (a LiDAR or camera driver,
``occ-bag-play``, the node's own outputs). A subscriber alone gains nothing, because the segment
that overflows is the writer's. Call :func:`use_shipped_profile` before ``rclpy.init()`` in every
occ_ros process, and in a launcher before it starts its children (they inherit the environment).
For publishers that are not ours, export the variable in the shell:
``export FASTRTPS_DEFAULT_PROFILES_FILE=$(python -m occ_ros.dds_profile)``.

How Fast DDS reads it: Fast DDS 2.x (Jazzy's 2.14) reads ``FASTRTPS_DEFAULT_PROFILES_FILE``;
Fast DDS 3.x (Kilted and later) reads ``FASTDDS_DEFAULT_PROFILES_FILE``. Both are set. It reads
them once per process, when the first DDS participant is created (``rclpy.init()``); a file that
is missing or invalid only prints an ``XMLPARSER Error`` and Fast DDS goes on with its defaults.
It also loads ``DEFAULT_FASTRTPS_PROFILES.xml`` from the working directory unless
``SKIP_DEFAULT_XML_FILE=1``.

The user stays in charge: if either variable is set (even to an empty string), or the working
directory holds ``DEFAULT_FASTRTPS_PROFILES.xml`` / ``DEFAULT_FASTDDS_PROFILES.xml``, or
``RMW_IMPLEMENTATION`` names another middleware, nothing is changed and the result says why.
``OCC_ROS_FASTDDS_PROFILE=0`` turns the shipped profile off.

No rclpy import here: the module is usable before rclpy is loaded, and in launchers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping

from occ_ros.params import package_share

#: The variables Fast DDS reads a profile file from: 2.x (Jazzy) and 3.x (Kilted and later).
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
#: Files Fast DDS loads from the working directory when no variable says otherwise (2.x, 3.x).
CWD_PROFILE_FILES = ("DEFAULT_FASTRTPS_PROFILES.xml", "DEFAULT_FASTDDS_PROFILES.xml")
#: Set to 0 / false / no / off to run with Fast DDS's own defaults.
OPT_OUT_VARIABLE = "OCC_ROS_FASTDDS_PROFILE"


def shipped_profile() -> Path:
    """The Fast DDS XML profile shipped with occ_ros (source checkout or installed share folder)."""
    return package_share() / "config" / "fastdds" / "occ_ros.xml"


@dataclass(frozen=True)
class ProfileChoice:
    """What :func:`use_shipped_profile` did.

    action: ``"set"`` (the variables now name the shipped profile), ``"user"`` (the user's own
    profile is kept), ``"off"`` (opted out or another middleware), ``"missing"`` (the shipped file
    is not there; Fast DDS defaults).
    profile: the profile file in effect, if any. too_late: this process already created a DDS
    participant (``rclpy.ok()``), so only processes started from now on get the profile.
    """

    action: str
    profile: str | None
    reason: str
    too_late: bool = False

    @property
    def applied(self) -> bool:
        return self.action == "set"

    @property
    def message(self) -> str:
        """One log line."""
        line = f"Fast DDS profile: {self.reason}"
        if self.too_late:
            line += " (rclpy was already initialised in this process: it applies to processes started from now on)"
        return line


def _rclpy_initialised() -> bool:
    rclpy = sys.modules.get("rclpy")
    try:
        return bool(rclpy is not None and rclpy.ok())
    except Exception:  # noqa: BLE001 - a half-imported rclpy says nothing either way
        return False


def use_shipped_profile(environ: MutableMapping[str, str] | None = None, profile: Path | None = None,
                        cwd: Path | None = None) -> ProfileChoice:
    """Point Fast DDS at the shipped profile unless the user chose their own; return what was done.

    Call it before ``rclpy.init()`` (Fast DDS reads the profile when the first participant of the
    process is created). ``environ`` defaults to ``os.environ`` (pass a copy to prepare a child
    process's environment); ``profile`` and ``cwd`` default to :func:`shipped_profile` and the
    working directory (parameters for tests).
    """
    env = os.environ if environ is None else environ
    profile = shipped_profile() if profile is None else Path(profile)
    cwd = Path.cwd() if cwd is None else Path(cwd)
    too_late = environ is None and _rclpy_initialised()
    for var in PROFILE_VARIABLES:
        if var in env:
            return ProfileChoice("user", env[var] or None, f"{var}={env[var]!r} set by the user, kept", too_late)
    for name in CWD_PROFILE_FILES:
        if (cwd / name).is_file():
            return ProfileChoice("user", str(cwd / name), f"{cwd / name} in the working directory, kept", too_late)
    if env.get(OPT_OUT_VARIABLE, "").strip().lower() in ("0", "false", "no", "off"):
        return ProfileChoice("off", None, f"{OPT_OUT_VARIABLE}={env[OPT_OUT_VARIABLE]}: Fast DDS defaults", too_late)
    rmw = env.get("RMW_IMPLEMENTATION", "")
    if rmw and rmw != "rmw_fastrtps_cpp" and not rmw.startswith("rmw_fastrtps"):
        return ProfileChoice("off", None, f"RMW_IMPLEMENTATION={rmw}: not Fast DDS, nothing set", too_late)
    if not profile.is_file():
        return ProfileChoice("missing", None, f"{profile} not found: Fast DDS defaults (large best-effort "
                             "messages between processes may be lost)", too_late)
    path = str(profile.resolve())
    for var in PROFILE_VARIABLES:
        env[var] = path
    return ProfileChoice("set", path, f"{' and '.join(PROFILE_VARIABLES)} set to {path}", too_late)


def main(argv: list[str] | None = None) -> int:
    """``python -m occ_ros.dds_profile``: print the shipped profile's path.

    For ``export FASTRTPS_DEFAULT_PROFILES_FILE=$(python -m occ_ros.dds_profile)`` in a shell that starts publishers.
    """
    path = shipped_profile()
    if not path.is_file():
        print(f"occ_ros.dds_profile: {path} not found", file=sys.stderr)
        return 2
    print(path.resolve())
    return 0


__all__ = ["PROFILE_VARIABLES", "CWD_PROFILE_FILES", "OPT_OUT_VARIABLE", "ProfileChoice", "shipped_profile",
           "use_shipped_profile", "main"]

if __name__ == "__main__":
    sys.exit(main())
