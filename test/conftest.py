"""Shared test setup.

Each pytest session gets its own ROS_DOMAIN_ID (unless one is set) so that concurrent runs
on one machine do not hear each other over DDS. It is set before any test imports rclpy.
"""

import os
import sys
from pathlib import Path

if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # colcon test runs from the build folder
    sys.path.insert(0, str(REPO_ROOT))


import pytest  # noqa: E402


def _missing_real(real) -> None:
    """Skip a real-data test when ``../shared`` lacks the data, except under CI (``CI`` set), where
    ``../shared`` is part of the checkout contract and a missing folder is a failure, not a skip."""
    msg = f"{real} (shared real nuScenes data) not present"
    if os.environ.get("CI"):
        pytest.fail(msg + "; CI must have ../shared beside the repository", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def synthetic_dataroot(tmp_path_factory) -> Path:
    """A tiny synthetic nuScenes v1.0-mini dataroot, generated once per test session.

    2 scenes (train: scene-0001, val: scene-0002) x 3 keyframes, 20 Hz LiDAR sweeps, 320x180
    camera images, seed 0; with lidarseg, panoptic, Occ3D ``gts/``, OpenOcc ``openocc_v2/`` and
    ``depth/`` (see ``occ_core.data.synthetic.dataset``). Treat it as read-only.
    """
    from occ_core.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("synthetic") / "nuscenes"
    generate(SynthConfig(scenes=2, samples_per_scene=3, seed=0, image_size=(320, 180), sweeps=True), out,
             progress=False)
    return out


@pytest.fixture(scope="session")
def real_camera_dataroot(tmp_path_factory) -> Path:
    """Real nuScenes keyframes A (scene-0061, moving) and B (scene-0003, nearly still) as one
    nuScenes-format dataroot with six 1600x900 cameras each (``test/real_nuscenes.py``), built
    from ``../shared/data/nuscenes_real``; skips when that data is not there. Read-only."""
    from real_nuscenes import REAL, needs_real, write_camera_dataroot

    if needs_real.args[0]:
        _missing_real(REAL)
    return write_camera_dataroot(tmp_path_factory.mktemp("real_cam") / "nuscenes")


@pytest.fixture(scope="session")
def real_sequence_dataroot(tmp_path_factory) -> Path:
    """The 11 labelled real LiDAR keyframes H as a nuScenes-format dataroot (lidarseg, boxes;
    scene ``real-h``), through the SurroundOcc own-data adapter. Read-only."""
    from real_nuscenes import REAL, needs_real, write_sequence_dataroot

    if needs_real.args[0]:
        _missing_real(REAL)
    return write_sequence_dataroot(tmp_path_factory.mktemp("real_seq") / "nuscenes")
