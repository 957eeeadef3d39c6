"""occ-render: 3D voxel view (painter's order, culling), BEV map (orientation, colours, ego marker, range
rings), sources (npz, npy, bag), and the --compare composite (panels, difference map, cameras, GIF)."""

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
from occ_core.viz.compare import (CAMERA_LAYOUT, DIFF_CORRECT, DIFF_FALSE, DIFF_FREE, DIFF_LEGEND, DIFF_MISSED,
                                  DIFF_OUTSIDE, DIFF_WRONG, comparison_layout, diff_columns, render_comparison)
from occ_core.viz.render import bev_pixel

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


def _voxel_cloud_bag(path: Path, grids: list[np.ndarray], spec: GridSpec, stamps_ns: list[int] | None = None) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    PC2, PF = ts.types["sensor_msgs/msg/PointCloud2"], ts.types["sensor_msgs/msg/PointField"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    fields = [PF(name=n, offset=o, datatype=d, count=1) for n, o, d in
              (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("label", 12, 2), ("score", 13, 7))]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/occupancy/voxels", PC2.__msgtype__, typestore=ts)
        stamps_ns = stamps_ns or [(100 + i) * 10**9 for i in range(len(grids))]
        for g, stamp in zip(grids, stamps_ns):
            ijk = np.argwhere(g != OCC3D_FREE)
            c = spec.voxel_centers(ijk)
            packed = np.zeros(len(ijk), dtype=np.dtype({"names": ["x", "y", "z", "label", "score"],
                                                        "formats": ["<f4", "<f4", "<f4", "u1", "<f4"]}))
            packed["x"], packed["y"], packed["z"] = c[:, 0], c[:, 1], c[:, 2]
            packed["label"] = g[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
            msg = PC2(header=Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="base_link"),
                      height=1, width=len(ijk), fields=fields, is_bigendian=False, point_step=17,
                      row_step=17 * len(ijk), data=packed.view(np.uint8).reshape(-1), is_dense=True)
            w.write(conn, stamp, ts.serialize_cdr(msg, PC2.__msgtype__))


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


def test_cli_colors_writes_small_palette_pngs(tmp_path):
    from PIL import Image

    g = np.full(OCC3D.dims, OCC3D_FREE, dtype=np.uint8)
    g[60:140, :, 2] = ROAD
    g[90:100, 90:100, 3] = CAR
    np.save(tmp_path / "g.npy", g)
    assert main([str(tmp_path / "g.npy"), "-o", str(tmp_path / "full"), "--view", "bev"]) == 0
    assert main([str(tmp_path / "g.npy"), "-o", str(tmp_path / "pal"), "--view", "bev", "--colors", "16"]) == 0
    with Image.open(tmp_path / "pal" / "g_bev.png") as im:
        assert im.mode == "P" and len(im.getcolors()) <= 16
        pal = np.asarray(im.convert("RGB"))[:, :, ::-1]
    full = cv2.imread(str(tmp_path / "full" / "g_bev.png"))
    assert pal.shape == full.shape and np.abs(pal.astype(int) - full).mean() < 8


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


# ---------------------------------------------------------------- ego marker, range rings


def _at(img, spec, ppv, x, y):
    u, v = bev_pixel(spec, ppv, x, y)
    return img[int(v), int(u)]


def test_bev_ego_marker_sits_on_the_origin_and_points_forward():
    img = render_bev(empty(), SPEC, pixels_per_voxel=10)  # 25 px per metre
    assert tuple(_at(img, SPEC, 10, 0.0, 0.0)) == (0, 0, 0)              # the base_link dot
    assert tuple(_at(img, SPEC, 10, 2.9, 0.0)) == (0, 0, 0)              # arrow head, near its tip (front)
    assert tuple(_at(img, SPEC, 10, -0.8, 0.5)) == (236, 236, 236)       # inside the box, behind: empty
    assert tuple(_at(img, SPEC, 10, 3.3, 0.5)) == (0, 0, 0)              # the front edge of the outline
    flipped = render_bev(empty(), SPEC, pixels_per_voxel=10, ego=False)
    assert (flipped == 236).all()


def test_bev_range_rings_are_drawn_at_their_radius():
    img = render_bev(empty(), SPEC, pixels_per_voxel=10, ego=False, rings_m=2.0)
    on = [_at(img, SPEC, 10, 2.0 * np.cos(a), 2.0 * np.sin(a)).astype(int) for a in np.radians([-90, -30, 180])]
    assert all((p < 200).all() for p in on)                              # darker than the empty map
    between = [_at(img, SPEC, 10, 3.0 * np.cos(a), 3.0 * np.sin(a)) for a in np.radians([-90, -30, 180])]
    assert all(tuple(p) == (236, 236, 236) for p in between)
    assert (render_bev(empty(), SPEC, pixels_per_voxel=10, ego=False) == 236).all()  # rings off by default


# ---------------------------------------------------------------- comparison


def test_diff_columns_kinds_ties_and_mask():
    gt, pred = empty(), empty()
    gt[1, 1, 0] = pred[1, 1, 0] = CAR                        # correct
    gt[2, 2, 0], pred[2, 2, 0] = CAR, BUS                    # wrong class
    pred[3, 3, 1] = CAR                                      # occupied in the prediction only
    gt[4, 4, 1] = ROAD                                       # missed
    gt[5, 5, :2] = pred[5, 5, :2] = CAR                      # 2 correct ...
    pred[5, 5, 2:] = CAR                                     # ... 2 false occupied: the tie goes to the error
    mask = np.ones(SPEC.dims, bool)
    mask[6, 6] = False                                       # a column outside the mask
    gt[6, 6, 0] = CAR
    code = diff_columns(gt, pred, mask)
    assert code.shape == SPEC.dims[:2] and code.dtype == np.int8
    assert [code[i, i] for i in range(1, 7)] == [DIFF_CORRECT, DIFF_WRONG, DIFF_FALSE, DIFF_MISSED, DIFF_FALSE,
                                                 DIFF_OUTSIDE]
    assert code[0, 0] == DIFF_FREE
    with pytest.raises(OccDataError, match="shape"):
        diff_columns(gt, pred[:, :, :2])


def _solid_cameras(h=90, w=160):
    return {name: np.full((h, w, 3), (10 * i, 200 - 20 * i, 50 + 25 * i), np.uint8)
            for i, name in enumerate(n for row in CAMERA_LAYOUT for n in row)}


def test_comparison_panels_show_gt_prediction_difference_cameras_and_ego():
    gt, pred = empty(), empty()
    gt[15, 5, 3], pred[15, 5, 3] = CAR, BUS     # wrong class, top layer (full brightness)
    gt[4, 15, 3] = pred[4, 15, 3] = ROAD        # correct
    gt[2, 2, 3] = CAR                            # outside the mask: shown nowhere
    mask = np.ones(SPEC.dims, bool)
    mask[2, 2] = False
    cams = _solid_cameras()
    comp = render_comparison(gt, pred, SPEC, mask, cams, ("scene-x  keyframe 0", "model: m"), pred_name="m",
                             rings_m=None)
    P, ppv = comp.panels, comp.pixels_per_voxel
    assert ppv == 20 and comp.image.shape[:2] == comparison_layout(SPEC, title=True, cameras=True).image.shape[:2]

    def cell(panel, i, j):  # centre pixel of voxel column (i, j) inside a BEV panel
        x0, y0, _, _ = P[panel]
        u, v = bev_pixel(SPEC, ppv, SPEC.voxel_centers(np.array([[i, j, 0]]))[0, 0],
                         SPEC.voxel_centers(np.array([[i, j, 0]]))[0, 1])
        return comp.image[y0 + int(v), x0 + int(u)]

    np.testing.assert_array_equal(cell("gt_bev", 15, 5), OCC3D_PALETTE[CAR][::-1])
    np.testing.assert_array_equal(cell("pred_bev", 15, 5), OCC3D_PALETTE[BUS][::-1])
    np.testing.assert_array_equal(cell("diff_bev", 15, 5), DIFF_LEGEND[DIFF_WRONG][1][::-1])
    np.testing.assert_array_equal(cell("diff_bev", 4, 15), DIFF_LEGEND[DIFF_CORRECT][1][::-1])
    np.testing.assert_array_equal(cell("gt_bev", 4, 15), OCC3D_PALETTE[ROAD][::-1])
    assert tuple(cell("gt_bev", 2, 2)) == (236, 236, 236)                       # masked out
    np.testing.assert_array_equal(cell("diff_bev", 2, 2), DIFF_LEGEND[DIFF_OUTSIDE][1][::-1])
    for panel in ("gt_bev", "pred_bev", "diff_bev"):                          # the ego dot at the grid centre
        x0, y0, w, h = P[panel]
        assert tuple(comp.image[y0 + h // 2, x0 + w // 2]) == (0, 0, 0)
    x0, y0, w, h = P["cameras"]                                               # CAM_FRONT: top middle tile
    np.testing.assert_array_equal(comp.image[y0 + h // 4 + 10, x0 + w // 2], cams["CAM_FRONT"][0, 0])
    np.testing.assert_array_equal(comp.image[y0 + 3 * h // 4 + 10, x0 + w // 6], cams["CAM_BACK_LEFT"][0, 0])
    for panel in ("gt_3d", "pred_3d"):                                        # something drawn in both views
        x0, y0, w, h = P[panel]
        assert (comp.image[y0:y0 + h, x0:x0 + w] != 255).any()
    x0, y0, w, h = P["title"]
    assert (comp.image[y0:y0 + h, x0:x0 + w] < 128).any()                     # the title's text
    without = render_comparison(gt, pred, SPEC, None, None, rings_m=None)
    assert "cameras" not in without.panels and "title" not in without.panels
    x0, y0, _, _ = without.panels["gt_bev"]
    u, v = bev_pixel(SPEC, ppv, *SPEC.voxel_centers(np.array([[2, 2, 0]]))[0, :2])
    np.testing.assert_array_equal(without.image[y0 + int(v), x0 + int(u)], OCC3D_PALETTE[CAR][::-1])  # no mask


def _quiet_column(sem, mask):
    """A column whose masked occupied voxels are all one class, away from the ego, rings and ring labels."""
    occ = (sem != OCC3D_FREE) & mask
    n = occ.sum(2)
    top = np.where(occ, sem, 0).max(2)
    low = np.where(occ, sem, 255).min(2)
    c = OCC3D.voxel_centers(np.stack(np.meshgrid(np.arange(200), np.arange(200), [0], indexing="ij"), -1).reshape(-1, 3))
    r = np.hypot(c[:, 0], c[:, 1]).reshape(200, 200)
    x, y = c[:, 0].reshape(200, 200), c[:, 1].reshape(200, 200)
    ok = (n > 0) & (top == low) & (r > 8) & (np.abs((r + 5) % 10 - 5) > 1.5) & ~((x > 0) & (y > 0))
    i, j = np.argwhere(ok)[0]
    return int(i), int(j), int(top[i, j])


def test_cli_compare_renders_each_keyframe_with_gif(synthetic_dataroot, tmp_path):
    from PIL import Image

    from occ_core.formats import occ3d

    entries = [e for e in occ3d.list_gt(synthetic_dataroot / "gts") if e.scene == "scene-0002"]
    preds = tmp_path / "my_model"
    first = occ3d.read_gt(entries[0].path)
    i, j, cls = _quiet_column(first.semantics, first.mask_camera)
    other = CAR if cls != CAR else BUS
    for k, e in enumerate(entries):
        sem = occ3d.read_gt(e.path).semantics.copy()
        if k == 0:
            col = sem[i, j]
            col[(col != OCC3D_FREE) & first.mask_camera[i, j]] = other
        occ3d.write_prediction(preds / f"{e.token}.npz", sem)
    out = tmp_path / "out"
    assert main(["--compare", str(preds), "--dataroot", str(synthetic_dataroot), "-o", str(out),
                 "--gif", str(out / "clip.gif"), "--gif-width", "300"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"scene-0002_{k:02d}_{e.token}_compare.png" for k, e in enumerate(entries))
    img = cv2.imread(str(out / names[0]))
    lay = comparison_layout(OCC3D)
    assert img.shape == lay.image.shape
    ppv = lay.pixels_per_voxel
    c = OCC3D.voxel_centers(np.array([[i, j, 0]]))[0]
    u, v = bev_pixel(OCC3D, ppv, c[0], c[1])

    def px(panel):
        x0, y0, _, _ = lay.panels[panel]
        return img[y0 + int(v), x0 + int(u)].astype(int)

    z = int(np.flatnonzero((first.semantics[i, j] != OCC3D_FREE) & first.mask_camera[i, j]).max())
    bright = 0.55 + 0.45 * z / 15
    np.testing.assert_allclose(px("gt_bev"), OCC3D_PALETTE[cls][::-1] * bright, atol=1)
    np.testing.assert_allclose(px("pred_bev"), OCC3D_PALETTE[other][::-1] * bright, atol=1)
    np.testing.assert_array_equal(px("diff_bev"), DIFF_LEGEND[DIFF_WRONG][1][::-1])
    for panel in ("gt_bev", "pred_bev", "diff_bev"):
        x0, y0, _, _ = lay.panels[panel]
        cu, cv = bev_pixel(OCC3D, ppv, 0.0, 0.0)
        assert tuple(img[y0 + int(cv), x0 + int(cu)]) == (0, 0, 0)             # ego at the grid centre
    x0, y0, w, h = lay.panels["cameras"]
    assert img[y0:y0 + h, x0:x0 + w].std() > 10                                  # real images, not a grey fill
    other_frame = cv2.imread(str(out / names[1]))
    x0, y0, w, h = lay.panels["diff_bev"]
    assert not (other_frame[y0:y0 + h, x0:x0 + w] == DIFF_LEGEND[DIFF_WRONG][1][::-1]).all(axis=2).any()  # perfect
    with Image.open(out / "clip.gif") as gif:
        assert gif.n_frames == len(entries) and gif.size[0] == 300 and gif.info["loop"] == 0


def test_cli_compare_matches_bag_messages_to_keyframes_by_stamp(synthetic_dataroot, tmp_path):
    from nuscenes.nuscenes import NuScenes

    from occ_core.formats import occ3d
    from occ_core.viz.sources import keyframes

    nusc = NuScenes("v1.0-mini", str(synthetic_dataroot), verbose=False)
    frames = keyframes(nusc, ["scene-0002"])
    grids = [occ3d.read_gt(synthetic_dataroot / "gts" / f.scene / f.token / "labels.npz").semantics for f in frames[:2]]
    stamps = [frames[0].lidar_stamp_ns + 3_000_000, frames[1].lidar_stamp_ns, frames[1].lidar_stamp_ns + 400_000_000]
    _voxel_cloud_bag(tmp_path / "node_bag", grids + [grids[1]], OCC3D, stamps)
    out = tmp_path / "out"
    assert main(["--compare", str(tmp_path / "node_bag"), "--dataroot", str(synthetic_dataroot), "-o", str(out),
                 "--scenes", "scene-0002", "--mask", "none"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"scene-0002_{f.index:02d}_{f.token}_compare.png" for f in frames[:2]]
    img = cv2.imread(str(out / names[0]))
    lay = comparison_layout(OCC3D)
    x0, y0, w, h = lay.panels["diff_bev"]
    diff = img[y0:y0 + h, x0:x0 + w]
    for code in (DIFF_WRONG, DIFF_FALSE, DIFF_MISSED):                             # a perfect match
        assert not (diff == DIFF_LEGEND[code][1][::-1]).all(axis=2).any()
    assert (diff == DIFF_LEGEND[DIFF_CORRECT][1][::-1]).all(axis=2).any()


@pytest.mark.parametrize("argv, expect", [
    (["--compare", "p", "--dataroot", "d", "--view", "bev"], "--view"),
    (["--compare", "p"], "--dataroot"),
    (["x.npz", "--gif", "a.gif"], "--gif"),
    (["--compare", "p", "q", "--dataroot", "d"], "one prediction folder"),
])
def test_cli_compare_option_errors(argv, expect, capsys):
    assert main(argv) == 2
    assert expect in capsys.readouterr().err.splitlines()[-1]


def test_cli_compare_without_predictions_names_the_folder(synthetic_dataroot, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--compare", str(tmp_path / "empty"), "--dataroot", str(synthetic_dataroot), "-o",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "no prediction" in err
    assert main(["--compare", str(tmp_path / "empty"), "--dataroot", str(synthetic_dataroot), "-o",
                 str(tmp_path / "o"), "--scenes", "scene-9999"]) == 2
    assert "scene-9999" in capsys.readouterr().err
