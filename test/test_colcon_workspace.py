"""A standard ROS 2 workspace (issue 17, item 5): the repository cloned as ws/src/occ_ros and the
one build command the README gives, run in ws/, builds occ_ros, occ_ros_msgs and tf2_msgs, and the
sourced install serves them.

The repository root is the occ_ros package, and colcon does not look inside a package's folder,
so the README's command names the interface folder as a second base path. This test runs that
command (another checks that the README gives it verbatim) once per session (about 40 s on 2 cores, most of it the two
rosidl packages). The package.xml test beside it is instant.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE_XML = REPO / "package.xml"
README = REPO / "README.md"
# The workspace build as the README gives it (checked below to be there, in a bash block).
WS_BUILD = "colcon build --base-paths src src/occ_ros/interfaces"
EXPECTED = {"occ_ros": "src/occ_ros", "occ_ros_msgs": "src/occ_ros/interfaces/occ_ros_msgs",
            "tf2_msgs": "src/occ_ros/interfaces/tf2_msgs"}


def _venv_env() -> dict[str, str]:
    """The environment of an activated venv (`. .venv/bin/activate`), without this run's PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLCON_DEFAULTS_FILE", "COLCON_HOME")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = sys.prefix
    return env


def _colcon_list(ws: Path, *args: str) -> dict[str, str]:
    """`colcon list ARGS` in ``ws`` as {package name: path relative to ws}."""
    res = subprocess.run(["colcon", "list", *args], cwd=ws, env=_venv_env(), capture_output=True, text=True,
                         timeout=120, check=True)
    return {line.split()[0]: line.split()[1] for line in res.stdout.splitlines() if line.strip()}


def test_readme_gives_the_workspace_build_command():
    """The command this test runs is the README's, in a bash block of "The ROS way: colcon"."""
    text = README.read_text()
    section = text[text.index("### The ROS way: colcon"):]
    section = section[:section.index("\n### ", 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert WS_BUILD in lines, f"README's colcon section has no line {WS_BUILD!r}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """ws/src/occ_ros -> this checkout; the README's build command run once in ws/."""
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.is_file() or shutil.which("cmake") is None:
        pytest.fail(f"needs colcon in {colcon.parent} and cmake on PATH (make venv installs colcon; cmake is a "
                    "system package)")
    ws = tmp_path_factory.mktemp("ws")
    (ws / "src").mkdir()
    (ws / "src" / "occ_ros").symlink_to(REPO, target_is_directory=True)
    res = subprocess.run(shlex.split(WS_BUILD), cwd=ws, env=_venv_env(), capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return ws


def test_the_build_command_names_the_three_packages_plain_colcon_only_one(workspace):
    """With the command's base paths colcon finds all three packages, and all three were built
    into install/; without them it stops at the root package, occ_ros (why the README's command
    names interfaces/)."""
    words = shlex.split(WS_BUILD)
    base_paths = words[words.index("--base-paths") + 1:]
    assert _colcon_list(workspace, "--base-paths", *base_paths) == EXPECTED
    for package in EXPECTED:
        assert (workspace / "install" / package / "share" / package / "package.xml").is_file(), package
    assert _colcon_list(workspace) == {"occ_ros": "src/occ_ros"}


def test_sourced_install_serves_the_built_packages(workspace):
    """After `. install/setup.bash`: the interfaces, occ_ros and its share folder come from the
    workspace's install/, the message's C type support loads, and the node's executable is where
    `ros2 run occ_ros occupancy_node` looks."""
    check = (
        "import rclpy.serialization as s, occ_ros_msgs, tf2_msgs, occ_ros, occ_core\n"
        "from ament_index_python.packages import get_package_share_directory as share, get_package_prefix as prefix\n"
        "from occ_ros_msgs.msg import SemanticOccupancyGrid\n"
        "from tf2_msgs.msg import TFMessage\n"
        "grid = SemanticOccupancyGrid(size_x=2, size_y=2, size_z=1, labels=[1, 2, 3, 17], class_names=['a'])\n"
        "back = s.deserialize_message(s.serialize_message(grid), SemanticOccupancyGrid)\n"
        "assert list(back.labels) == [1, 2, 3, 17], back\n"
        "s.serialize_message(TFMessage())\n"
        "for m in (occ_ros_msgs, tf2_msgs, occ_ros, occ_core): print('module', m.__name__, m.__file__)\n"
        "for p in ('occ_ros', 'occ_ros_msgs', 'tf2_msgs'): print('share', p, share(p))\n"
        "print('prefix occ_ros', prefix('occ_ros'))\n"
    )
    res = subprocess.run(["bash", "-c", f'. install/setup.bash && python -c "$CHECK"'], cwd=workspace,
                         env={**_venv_env(), "CHECK": check}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-4000:]
    install = (workspace / "install").resolve()
    rows = [line.split(" ", 2) for line in res.stdout.splitlines()]
    modules = {name: Path(path) for kind, name, path in rows if kind == "module"}
    shares = {name: Path(path) for kind, name, path in rows if kind == "share"}
    assert modules["occ_ros_msgs"].is_relative_to(install / "occ_ros_msgs")
    assert modules["tf2_msgs"].is_relative_to(install / "tf2_msgs")
    assert modules["occ_ros"].is_relative_to(install / "occ_ros") and modules["occ_core"].is_relative_to(install / "occ_ros")
    assert shares == {p: install / p / "share" / p for p in EXPECTED}
    for rel in ("config/occupancy.yaml", "config/rigs/nuscenes.yaml", "launch/occupancy.launch.py", "package.xml",
                "msg/SemanticOccupancyGrid.msg"):
        assert (shares["occ_ros"] / rel).is_file(), rel
    node = install / "occ_ros" / "lib" / "occ_ros" / "occupancy_node"
    assert node.is_file() and os.access(node, os.X_OK)


def test_package_xml_declares_every_ros_package_the_code_imports():
    """Every top-level import of occ_core/, occ_ros/ and launch/ that is a ROS package (it has an
    ament index entry in this environment, or is built from interfaces/) is a dependency in
    package.xml; torch is left to pip."""
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(PACKAGE_XML))
    pkg.validate()
    declared = {d.name for d in pkg.exec_depends + pkg.build_depends + pkg.test_depends}
    imported = set()
    for folder in ("occ_core", "occ_ros", "launch"):
        for path in (REPO / folder).rglob("*.py"):
            imported |= set(re.findall(r"^\s*(?:from|import) ([A-Za-z_][A-Za-z0-9_]*)", path.read_text(), re.M))
    indexed = set()
    for prefix in [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]:
        index = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages"
        if prefix and index.is_dir():
            indexed |= {p.name for p in index.iterdir()}
    ros_packages = indexed | {p.name for p in (REPO / "interfaces").iterdir() if (p / "package.xml").is_file()}
    ros_imports = (imported & ros_packages) - {"occ_ros"}
    assert ros_imports, "no ROS import found: the scan is broken"
    assert ros_imports <= declared, f"imported but not in package.xml: {sorted(ros_imports - declared)}"
    # tf2_ros, launch, launch_ros, rviz2 have no wheel: not in this environment's index
    assert {"ament_index_python", "rclpy", "occ_ros_msgs", "tf2_msgs"} <= ros_imports
    assert {"python3-pytest", "python3-numpy", "python3-yaml"} <= declared
    assert "python3-torch" not in declared  # pip, pinned: rosdep's python3-torch is another build
