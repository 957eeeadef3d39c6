"""Grid specs, class tables, geometry, rig files and atomic writes."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from occ_core import classes, geometry, grid
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_path, atomic_save_npz
from occ_core.rig import NUSCENES_RIG_PATH, load_rig


def test_grid_presets_match_design_contract():
    assert grid.OCC3D.dims == (200, 200, 16)
    assert grid.OCC3D.point_range == pytest.approx((-40, -40, -1, 40, 40, 5.4))
    assert grid.OPENOCCUPANCY.dims == (512, 512, 40)
    assert grid.OPENOCCUPANCY.voxel_size == (0.2, 0.2, 0.2)
    assert grid.SURROUNDOCC.dims == (200, 200, 16)
    assert grid.SURROUNDOCC.point_range == pytest.approx((-50, -50, -5, 50, 50, 3))
    with pytest.raises(ValueError, match="multiple"):
        grid.GridSpec.from_range("bad", (0, 0, 0, 1, 1, 1), 0.3)


def test_voxel_center_formula_and_bounds():
    g = grid.OCC3D
    c = g.voxel_centers(np.array([[0, 0, 0], [199, 199, 15]]))
    np.testing.assert_allclose(c[0], [-39.8, -39.8, -0.8])
    np.testing.assert_allclose(c[1], [39.8, 39.8, 5.2])
    idx, inside = g.points_to_voxels(np.array([[-40.0, -40.0, -1.0], [40.0, 0, 0], [0, 0, 5.39], [0, 0, -1.01]]))
    assert inside.tolist() == [True, False, True, False]
    assert idx[0].tolist() == [0, 0, 0] and idx[2].tolist() == [100, 100, 15]
    assert g.all_voxel_centers().shape == (200, 200, 16, 3)
    np.testing.assert_allclose(g.all_voxel_centers()[3, 5, 7], g.voxel_centers(np.array([3, 5, 7])))


@pytest.mark.parametrize("spec", [grid.OCC3D, grid.OPENOCCUPANCY], ids=["table", "unravel"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flat_centers_equal_voxel_centers_of_the_unravelled_index(spec, dtype):
    # occ3d gathers from the cached table, openoccupancy (10.5 M voxels) computes from the axes
    flat = np.random.default_rng(0).integers(0, spec.num_voxels, 500)
    flat[:2] = (0, spec.num_voxels - 1)
    got = spec.flat_centers(flat, dtype)
    assert got.dtype == dtype and got.shape == (500, 3)
    np.testing.assert_array_equal(got, spec.voxel_centers(np.stack(np.unravel_index(flat, spec.dims), 1)).astype(dtype))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 199), st.integers(0, 199), st.integers(0, 15)), min_size=1, max_size=20))
def test_voxel_point_round_trip(idx):
    idx = np.array(idx)
    back, inside = grid.OCC3D.points_to_voxels(grid.OCC3D.voxel_centers(idx))
    assert inside.all()
    np.testing.assert_array_equal(back, idx)


def test_class_tables_are_consistent():
    assert len(classes.OCC3D_CLASSES) == 18 and classes.OCC3D_CLASSES[classes.OCC3D_FREE] == "free"
    assert classes.OPENOCC_CLASSES[classes.OPENOCC_FREE] == "free"
    # OpenOcc -> Occ3D -> OpenOcc is the identity; Occ3D others has no OpenOcc class.
    np.testing.assert_array_equal(classes.OCC3D_TO_OPENOCC[classes.OPENOCC_TO_OCC3D], np.arange(17))
    assert classes.OCC3D_TO_OPENOCC[0] == classes.IGNORE_LABEL
    assert len(classes.LIDARSEG_TO_OCC3D) == 32
    assert classes.category_to_occ3d("vehicle.bus.bendy") == classes.OCC3D_INDEX["bus"]
    assert classes.category_to_occ3d("human.pedestrian.child") == classes.OCC3D_INDEX["pedestrian"]
    assert classes.category_to_occ3d("noise") == classes.IGNORE_LABEL
    with pytest.raises(KeyError, match="vehicle.spaceship"):
        classes.category_to_occ3d("vehicle.spaceship")
    assert classes.OCC3D_PALETTE.shape == (18, 3)
    assert len({tuple(c) for c in classes.OCC3D_PALETTE}) == 18


def test_detection_names_agree_with_devkit():
    from nuscenes.eval.detection.utils import category_to_detection_name

    for i, name in enumerate(classes.NUSCENES_LIDARSEG_CLASSES):
        det = category_to_detection_name(name)
        if det is not None:
            assert classes.DETECTION_TO_OCC3D[det] == classes.LIDARSEG_TO_OCC3D[i], name


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1),
       st.lists(st.floats(-100, 100), min_size=3, max_size=3))
def test_transforms_round_trip(q, t):
    T = geometry.make_transform(t, q)
    np.testing.assert_allclose(geometry.invert_transform(T) @ T, np.eye(4), atol=1e-9)
    qn = np.asarray(q) / np.linalg.norm(q)
    back_q = geometry.matrix_to_quat_wxyz(T[:3, :3])
    assert back_q[0] >= 0
    assert abs(float(back_q @ qn)) == pytest.approx(1.0, abs=1e-9)  # q and -q are one rotation
    pts = np.random.default_rng(0).normal(size=(5, 4))
    back = geometry.transform_points(geometry.invert_transform(T), geometry.transform_points(T, pts))
    np.testing.assert_allclose(back, pts, atol=1e-7)


def test_quaternion_conventions():
    # 90 degrees about z: [w, x, y, z] = [cos45, 0, 0, sin45]
    q = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]
    np.testing.assert_allclose(geometry.quat_wxyz_to_matrix(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    assert geometry.yaw_of(q) == pytest.approx(np.pi / 2)
    np.testing.assert_allclose(geometry.quat_xyzw_to_wxyz(geometry.quat_wxyz_to_xyzw(q)), q)
    with pytest.raises(ValueError, match="quaternion"):
        geometry.quat_wxyz_to_matrix([0, 0, 0, 0])


def test_nuscenes_rig_matches_shared_calibration():
    import json
    from pathlib import Path

    rig = load_rig(NUSCENES_RIG_PATH)
    assert rig.camera_names == ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuscenes_rig.json"
    if not shared.exists():
        pytest.skip(f"{shared} not present beside the checkout")
    ref = json.loads(shared.read_text())
    np.testing.assert_allclose(rig.lidar.T_base_from_lidar, ref["lidar"]["lidar2ego"], atol=1e-6)
    for cam in ref["cameras"]:
        np.testing.assert_allclose(rig.camera(cam["name"]).T_base_from_cam, cam["cam2ego"], atol=1e-6)
        np.testing.assert_allclose(rig.camera(cam["name"]).K, cam["K"], atol=1e-5)
    # LIDAR_TOP is yawed 90 degrees against base_link.
    assert geometry.yaw_of(rig.lidar.T_base_from_lidar[:3, :3]) == pytest.approx(-np.pi / 2, abs=0.01)
    small = rig.scaled(704, 396)
    assert small.cameras[0].K[0, 0] == pytest.approx(rig.cameras[0].K[0, 0] * 704 / 1600)


def test_bad_rig_names_file_and_field(tmp_path):
    p = tmp_path / "rig.yaml"
    p.write_text("lidar: {name: L, translation: [0, 0], quaternion_xyzw: [0, 0, 0, 1]}\ncameras: []\n")
    with pytest.raises(OccDataError, match=r"rig.yaml: lidar: field 'translation'"):
        load_rig(p)
    with pytest.raises(OccDataError, match="cannot read"):
        load_rig(tmp_path / "missing.yaml")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npz"
    atomic_save_npz(target, a=np.arange(3))
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_occ_core_imports_no_ros():
    code = (
        "import sys, importlib, pkgutil, occ_core\n"
        "for m in pkgutil.walk_packages(occ_core.__path__, 'occ_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'rclpy_message_converter')"
        " or m.split('.')[0].endswith('_msgs'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"occ_core pulled in ROS modules: {out.stdout.strip()}"


def test_yaml_reads_name_the_file_and_what_it_should_be(tmp_path):
    from occ_core.errors import OccDataError
    from occ_core.models.config import load_config
    from occ_core.rig import load_rig

    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(OccDataError, match=r"bad\.yaml: the rig file is not valid YAML"):
        load_rig(bad)
    with pytest.raises(OccDataError, match=r"missing\.yaml: cannot read the model config"):
        load_config(tmp_path / "missing.yaml")
