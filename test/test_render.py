"""occ-render: 3D voxel view (painter's order, culling), BEV map (orientation, colours), sources (npz, npy, bag)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from occ_core.classes import OCC3D_FREE, OCC3D_PALETTE
from occ_core.errors import OccDataError
from occ_core.grid import OCC3D, GridSpec
from occ_core.viz import Camera3D, add_legend, exposed_faces, render_3d, render_bev, voxel_cloud_to_grid
from occ_core.viz.cli import main

SPEC = GridSpec.from_range("small", (-4.0, -4.0, -1.0, 4.0, 4.0, 0.6), 0.4)  # 20 x 20 x 4
CAR, BUS, ROAD = 4, 3, 11


def empty():
    return np.full(SPEC.dims, OCC3D_FREE, dtype=np.uint8)


def test_exposed_faces_of_a_two_voxel_block():
    occ = np.zeros((3, 3, 3), dtype=bool)
    occ[1, 1, 1] = occ[2, 1, 1] = True
    ijk, face = exposed_faces(occ)
    assert len(face) == 10  # 12 faces minus the shared pair
    assert not ((ijk == [1, 1, 1]).all(1) & (face == 0)).any()  # +x face of the first is hidden
    assert ((ijk == [2, 1, 1]).all(1) & (face == 0)).any()  # +x face at the grid border is drawn


def test_bev_orientation_and_colours():
    g = empty()
    g[19, 10, 0] = CAR   # far forward (+x), on the grid's y centre line: top of the image
    g[10, 0, 3] = BUS    # far right (-y), at the top z layer: right edge of the image
    g[10, 0, 0] = ROAD   # under the bus: hidden
    img = render_bev(g, SPEC, pixels_per_voxel=4)
    assert img.shape == (80, 80, 3)
    bus = OCC3D_PALETTE[BUS][::-1]
    np.testing.assert_array_equal(img[(19 - 10) * 4 + 1, (19 - 0) * 4 + 1], bus)  # top z: full brightness
    car = img[(19 - 19) * 4 + 1, (19 - 10) * 4 + 1]
    np.testing.assert_allclose(car, OCC3D_PALETTE[CAR][::-1] * 0.55, atol=1)  # z = 0: darkest
    assert tuple(img[40, 2]) == (236, 236, 236)  # empty column
    assert (img == 0).all(axis=2).any()  # ego outline


def test_3d_view_draws_nearer_voxels_over_farther_ones():
    cam = Camera3D(azimuth_deg=180.0, elevation_deg=0.0, distance=30.0, target=(0.0, 0.0, -0.8), width=320,
                   height=240, fov_deg=30.0)
    g = empty()
    g[10, 10, 0] = BUS   # at x = 0.2
    g[2, 10, 0] = CAR    # at x = -3, between the camera (behind, -x) and the bus, same line of sight
    img = render_3d(g, SPEC, cam, draw_edges=False)

    def shades(cls):
        return {tuple(np.clip(OCC3D_PALETTE[cls][::-1] * s, 0, 255).astype(int)) for s in np.linspace(0.55, 1, 451)}

    def nearly_in(px, cols):
        return any(np.abs(np.array(c) - px).max() <= 1 for c in cols)

    centre = img[120, 160].astype(int)
    assert nearly_in(centre, shades(CAR)) and not nearly_in(centre, shades(BUS))
    g[2, 10, 0] = OCC3D_FREE
    img2 = render_3d(g, SPEC, cam, draw_edges=False)
    ys, xs = np.nonzero((img2 != 255).any(axis=2))
    assert len(ys) > 0 and abs(xs.mean() - 160) < 20  # the bus alone, centred
    assert nearly_in(img2[120, 160].astype(int), shades(BUS))
    assert (render_3d(empty(), SPEC, cam) == 255).all()


def test_bad_labels_are_rejected():
    with pytest.raises(OccDataError, match="shape"):
        render_bev(np.zeros((3, 3, 3), np.uint8), SPEC)
    with pytest.raises(OccDataError, match="uint8"):
        render_3d(empty().astype(np.int32), SPEC)


def test_legend_lists_present_classes():
    g = empty()
    g[0, 0, 0] = CAR
    img = add_legend(np.zeros((200, 100, 3), np.uint8), g)
    assert img.shape == (200, 400, 3)
    swatch = img[30 - 5, 100 + 22]  # first row of the panel
    np.testing.assert_array_equal(swatch, OCC3D_PALETTE[CAR][::-1])


def _voxel_cloud_bag(path: Path, grids: list[np.ndarray], spec: GridSpec) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    PC2, PF = ts.types["sensor_msgs/msg/PointCloud2"], ts.types["sensor_msgs/msg/PointField"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    fields = [PF(name=n, offset=o, datatype=d, count=1) for n, o, d in
              (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("label", 12, 2), ("score", 13, 7))]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/occupancy/voxels", PC2.__msgtype__, typestore=ts)
        for i, g in enumerate(grids):
            ijk = np.argwhere(g != OCC3D_FREE)
            c = spec.voxel_centers(ijk)
            packed = np.zeros(len(ijk), dtype=np.dtype({"names": ["x", "y", "z", "label", "score"],
                                                        "formats": ["<f4", "<f4", "<f4", "u1", "<f4"]}))
            packed["x"], packed["y"], packed["z"] = c[:, 0], c[:, 1], c[:, 2]
            packed["label"] = g[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
            msg = PC2(header=Header(stamp=Time(sec=100 + i, nanosec=0), frame_id="base_link"), height=1,
                      width=len(ijk), fields=fields, is_bigendian=False, point_step=17, row_step=17 * len(ijk),
                      data=packed.view(np.uint8).reshape(-1), is_dense=True)
            w.write(conn, (100 + i) * 10**9, ts.serialize_cdr(msg, PC2.__msgtype__))


def test_cli_renders_files_and_bags(tmp_path):
    rng = np.random.default_rng(0)
    grids = []
    for _ in range(2):
        g = np.full(OCC3D.dims, OCC3D_FREE, dtype=np.uint8)
        g[rng.random(OCC3D.dims) < 0.002] = CAR
        g[60:140, :, 2] = ROAD
        grids.append(g)
    np.save(tmp_path / "grid.npy", grids[0])
    np.savez(tmp_path / "pred.npz", semantics=grids[1])
    _voxel_cloud_bag(tmp_path / "bag", grids, OCC3D)

    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    with AnyReader([tmp_path / "bag"], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as r:
        msgs = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages()]
    assert len(msgs) == 2
    for g, m in zip(grids, msgs):
        np.testing.assert_array_equal(voxel_cloud_to_grid(m, OCC3D), g)

    out = tmp_path / "out"
    assert main([str(tmp_path / "grid.npy"), str(tmp_path / "pred.npz"), str(tmp_path / "bag"),
                 "-o", str(out), "--size", "320", "240"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"{n}_{v}.png" for n in ("grid", "pred", f"bag_{100 * 10**9}", f"bag_{101 * 10**9}")
                           for v in ("3d", "bev"))
    bev = cv2.imread(str(out / "pred_bev.png"))
    np.testing.assert_array_equal(bev[:, :800], render_bev(grids[1], OCC3D))
    bag_bev = cv2.imread(str(out / f"bag_{101 * 10**9}_bev.png"))
    np.testing.assert_array_equal(bag_bev[:, :800], bev[:, :800])
    assert cv2.imread(str(out / "grid_3d.png")).shape == (240, 320 + 300, 3)
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries


def test_cli_errors_name_the_file(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", other=np.zeros(3))
    assert main([str(tmp_path / "x.npz"), "-o", str(tmp_path)]) == 2
    assert "x.npz" in capsys.readouterr().err


def test_cli_never_overwrites_a_render_of_the_same_run(tmp_path):
    """A GT labels.npz and the prediction <token>.npz of the same sample both get their PNGs."""
    gt = np.full(OCC3D.dims, OCC3D_FREE, dtype=np.uint8)
    gt[60:140, :, 2] = ROAD
    pred = gt.copy()
    pred[90:100, 90:100, 3] = CAR
    (tmp_path / "gts" / "tok").mkdir(parents=True)
    np.savez(tmp_path / "gts" / "tok" / "labels.npz", semantics=gt, mask_lidar=np.ones(OCC3D.dims, bool),
             mask_camera=np.ones(OCC3D.dims, bool))
    np.savez(tmp_path / "tok.npz", semantics=pred)
    out = tmp_path / "out"
    args = [str(tmp_path / "gts" / "tok" / "labels.npz"), str(tmp_path / "tok.npz"), str(tmp_path / "tok.npz")]
    assert main([*args, "-o", str(out), "--view", "bev"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["tok_2_bev.png", "tok_bev.png", "tok_gt_bev.png"]
    np.testing.assert_array_equal(cv2.imread(str(out / "tok_gt_bev.png"))[:, :800], render_bev(gt, OCC3D))
    np.testing.assert_array_equal(cv2.imread(str(out / "tok_bev.png"))[:, :800], render_bev(pred, OCC3D))
