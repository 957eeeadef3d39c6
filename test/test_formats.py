"""Occupancy formats: round trips, error messages, sparse <-> dense and label/grid conversions."""

import numpy as np
import pytest

from occ_core import classes, grid
from occ_core.errors import OccDataError
from occ_core.formats import convert, occ3d, openocc, sparse

RNG = np.random.default_rng(0)


def _occ3d_sample():
    sem = RNG.integers(0, 18, grid.OCC3D.dims).astype(np.uint8)
    return occ3d.Occ3DSample(sem, RNG.random(grid.OCC3D.dims) < 0.5, RNG.random(grid.OCC3D.dims) < 0.3)


def test_occ3d_gt_round_trip_and_published_mask_dtype(tmp_path):
    s = _occ3d_sample()
    p = tmp_path / "scene-0001" / "tok1" / "labels.npz"
    occ3d.write_gt(p, s)
    with np.load(p) as z:
        assert z["mask_camera"].dtype == np.uint8  # as published
    r = occ3d.read_gt(p)
    assert r.semantics.dtype == np.uint8 and r.mask_camera.dtype == bool
    np.testing.assert_array_equal(r.semantics, s.semantics)
    np.testing.assert_array_equal(r.mask_lidar, s.mask_lidar)
    np.testing.assert_array_equal(r.mask_camera, s.mask_camera)
    assert [(e.scene, e.token) for e in occ3d.list_gt(tmp_path)] == [("scene-0001", "tok1")]


@pytest.mark.parametrize("arrays, match", [
    ({"semantics": np.zeros((200, 200, 15), np.uint8)}, r"shape \(200, 200, 15\), expected \(200, 200, 16\)"),
    ({"semantics": np.zeros((200, 200, 16), np.int64)}, r"dtype int64, expected uint8"),
    ({"labels": np.zeros((200, 200, 16), np.uint8)}, r"missing key 'semantics'"),
    ({"semantics": np.full((200, 200, 16), 18, np.uint8)}, r"labels \[18\] outside 0..17"),
])
def test_bad_prediction_errors_name_file_and_expectation(tmp_path, arrays, match):
    p = tmp_path / "tokX.npz"
    np.savez(p, **arrays)
    with pytest.raises(OccDataError, match=match) as ei:
        occ3d.read_prediction(p)
    assert str(p) in str(ei.value)


def test_prediction_key_pred_is_accepted_and_missing_file_is_named(tmp_path):
    sem = RNG.integers(0, 18, (200, 200, 16)).astype(np.uint8)
    np.savez_compressed(tmp_path / "a.npz", pred=sem)
    np.testing.assert_array_equal(occ3d.read_prediction(tmp_path / "a.npz"), sem)
    with pytest.raises(OccDataError, match="b.npz: file not found"):
        occ3d.read_prediction(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(OccDataError, match="c.npz: not a readable"):
        occ3d.read_prediction(tmp_path / "c.npz")


def test_gt_missing_mask_is_an_error(tmp_path):
    p = tmp_path / "labels.npz"
    np.savez(p, semantics=np.zeros((200, 200, 16), np.uint8), mask_lidar=np.zeros((200, 200, 16), bool))
    with pytest.raises(OccDataError, match="missing key 'mask_camera'"):
        occ3d.read_gt(p)


def test_openocc_round_trip_with_flow_and_flow_requirement(tmp_path):
    sem = RNG.integers(0, 17, (200, 200, 16)).astype(np.uint8)
    flow = RNG.normal(size=(200, 200, 16, 2)).astype(np.float32)
    p = tmp_path / "labels.npz"
    openocc.write(p, openocc.OpenOccSample(sem, flow))
    r = openocc.read(p)
    np.testing.assert_array_equal(r.semantics, sem)
    np.testing.assert_array_equal(r.flow, flow)
    assert r.mask_camera is None
    openocc.write(p, openocc.OpenOccSample(sem))
    assert openocc.read(p, require_flow=False).flow is None
    with pytest.raises(OccDataError, match="missing key 'flow'"):
        openocc.read(p)
    np.savez(p, semantics=sem, flow=np.zeros((200, 200, 16, 3), np.float32))
    with pytest.raises(OccDataError, match=r"'flow' has shape \(200, 200, 16, 3\), expected \(200, 200, 16, 2\)"):
        openocc.read(p)


def test_openoccupancy_sparse_axis_order_noise_and_majority():
    # [z, y, x, cls]: voxel x=1, y=2, z=3 gets class 5; class 0 is noise -> 255
    s = np.array([[3, 2, 1, 5], [0, 0, 0, 0],
                  [4, 4, 4, 7], [4, 4, 4, 9], [4, 4, 4, 9],   # majority 9
                  [5, 5, 5, 8], [5, 5, 5, 6]])                 # tie -> lowest label 6
    d = sparse.openoccupancy_to_dense(s)
    assert d.shape == (512, 512, 40) and d.dtype == np.uint8
    assert d[1, 2, 3] == 5 and d[0, 0, 0] == 255 and d[4, 4, 4] == 9 and d[5, 5, 5] == 6
    assert (d != 0).sum() == 4
    back = sparse.openoccupancy_from_dense(d)
    assert sorted(map(tuple, back.tolist())) == sorted([(3, 2, 1, 5), (0, 0, 0, 0), (4, 4, 4, 9), (5, 5, 5, 6)])
    with pytest.raises(OccDataError, match="leave the"):
        sparse.openoccupancy_to_dense(np.array([[40, 0, 0, 1]]))
    with pytest.raises(OccDataError, match=r"expected \(N, 4 or 7\)"):
        sparse.openoccupancy_to_dense(np.zeros((3, 5)))


def test_surroundocc_sparse_is_xyz_and_file_round_trip(tmp_path):
    s = np.array([[1, 2, 3, 4], [10, 0, 15, 0], [1, 2, 3, 11]])  # last entry wins
    d = sparse.surroundocc_to_dense(s)
    assert d.shape == (200, 200, 16) and d[1, 2, 3] == 11 and d[10, 0, 15] == 255
    sparse.write_sparse(tmp_path / "x.npy", d, "surroundocc")
    np.testing.assert_array_equal(sparse.read_sparse(tmp_path / "x.npy", "surroundocc"), d)


def test_label_space_conversions():
    oo = np.arange(17, dtype=np.uint8)
    o3 = convert.openocc_to_occ3d(oo)
    assert [classes.OCC3D_CLASSES[i] for i in o3] == list(classes.OPENOCC_CLASSES)
    np.testing.assert_array_equal(convert.occ3d_to_openocc(o3), oo)
    with pytest.raises(OccDataError, match="pass others_to"):
        convert.occ3d_to_openocc(np.array([0, 4], np.uint8))
    assert convert.occ3d_to_openocc(np.array([0, 4], np.uint8), others_to=255).tolist() == [255, 0]
    assert convert.ssc_to_occ3d(np.array([0, 1, 16, 255], np.uint8)).tolist() == [17, 1, 16, 255]
    assert convert.occ3d_to_ssc(np.array([17, 1, 16], np.uint8)).tolist() == [0, 1, 16]
    with pytest.raises(OccDataError):
        convert.ssc_to_occ3d(np.array([17], np.uint8))


def test_resample_crop_upsample_and_majority_downsample():
    src = grid.GridSpec.from_range("s", (0, 0, 0, 0.8, 0.8, 0.4), 0.2)  # 4x4x2
    lab = np.arange(32, dtype=np.uint8).reshape(4, 4, 2) % 17
    # crop by one voxel along x, pad one along y
    dst = grid.GridSpec.from_range("d", (0.2, 0.2, 0, 0.8, 1.0, 0.4), 0.2)
    out = convert.resample(lab, src, dst, free=0, fill=255)
    np.testing.assert_array_equal(out[:, :3], lab[1:, 1:])
    assert (out[:, 3] == 255).all()
    with pytest.raises(ValueError, match="fill"):
        convert.resample(lab, src, dst, free=0)
    # upsampling by 2: every child keeps its parent label
    fine = grid.GridSpec.from_range("f", (0, 0, 0, 0.8, 0.8, 0.4), 0.1)
    up = convert.resample(lab, src, fine, free=0)
    np.testing.assert_array_equal(up, lab.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    # downsampling by 2: majority of non-free children, free only if no occupied child
    coarse = grid.GridSpec.from_range("c", (0, 0, 0, 0.8, 0.8, 0.4), 0.4)  # 2x2x1
    l2 = np.zeros((4, 4, 2), np.uint8)
    l2[0, 0, 0] = 3; l2[0, 1, 0] = 5; l2[1, 0, 1] = 5           # block (0,0): 5 wins over 3
    l2[2, 2, 0] = 4; l2[3, 3, 1] = 2                            # block (1,1): tie -> 2
    l2[0, 2, 0] = 255                                           # block (0,1): ignore only -> free
    with pytest.raises(ValueError, match="reduce='majority'"):
        convert.resample(l2, src, coarse, free=0)
    dn = convert.resample(l2, src, coarse, free=0, reduce="majority")
    assert dn[:, :, 0].tolist() == [[5, 0], [0, 2]]
    # SurroundOcc (0.5 m) -> Occ3D (0.4 m) is not an integer factor
    with pytest.raises(ValueError, match="no well-defined"):
        convert.resample(np.zeros(grid.SURROUNDOCC.dims, np.uint8), grid.SURROUNDOCC, grid.OCC3D, free=0, fill=255)


def test_list_gt_rejects_empty_folders_and_duplicate_tokens(tmp_path):
    with pytest.raises(OccDataError, match="not found"):
        occ3d.list_gt(tmp_path / "nope")
    (tmp_path / "gts").mkdir()
    with pytest.raises(OccDataError, match="no <scene>/<token>/labels.npz"):
        occ3d.list_gt(tmp_path / "gts")
    s = _occ3d_sample()
    occ3d.write_gt(tmp_path / "gts" / "scene-a" / "tok" / "labels.npz", s)
    occ3d.write_gt(tmp_path / "gts" / "scene-b" / "tok" / "labels.npz", s)
    with pytest.raises(OccDataError, match="token tok appears in scenes scene-a and scene-b"):
        occ3d.list_gt(tmp_path / "gts")


def test_writers_reject_labels_outside_the_label_space(tmp_path):
    with pytest.raises(OccDataError, match="0..17"):
        occ3d.write_prediction(tmp_path / "p.npz", np.full((2, 2, 2), 18, np.uint8))
    with pytest.raises(OccDataError, match="0..16"):
        openocc.write(tmp_path / "o.npz", openocc.OpenOccSample(np.full((2, 2, 2), 17, np.uint8)))
    assert not (tmp_path / "p.npz").exists() and not (tmp_path / "o.npz").exists()
