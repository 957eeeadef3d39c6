"""occ-nusc2bag: bags read back by an independent reader (mcap-ros2-support), the ground truth as a
cloud and as a SemanticOccupancyGrid, sqlite3 == MCAP, errors."""

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from occ_core.errors import OccDataError
from occ_core.formats import occ3d
from occ_core.grid import OCC3D
from occ_ros.bag import nusc2bag
from occ_ros.bag.nusc2bag import CAMERAS, ConvertConfig, convert, gt_cloud_array, gt_cloud_to_grid

SCENE = "scene-0002"


@pytest.fixture(scope="module")
def nusc(synthetic_dataroot):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-mini", str(synthetic_dataroot), verbose=False)


@pytest.fixture(scope="module")
def mcap_bag(synthetic_dataroot, tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "full"
    res = convert(ConvertConfig(synthetic_dataroot, out, scenes=[SCENE], progress=False))
    return out, res


def _scene_sample_data(nusc, keyframes_only):
    scene = next(s for s in nusc.scene if s["name"] == SCENE)
    samples = set()
    tok = scene["first_sample_token"]
    while tok:
        samples.add(tok)
        tok = nusc.get("sample", tok)["next"]
    return [sd for sd in nusc.sample_data if sd["sample_token"] in samples and (sd["is_key_frame"] or not keyframes_only)]


def _read_mcap(bag: Path):
    from mcap_ros2.reader import read_ros2_messages

    (path,) = bag.glob("*.mcap")
    return list(read_ros2_messages(str(path)))


def test_mcap_bag_reads_back_with_expected_topics_types_counts_and_stamps(mcap_bag, nusc, synthetic_dataroot):
    bag, res = mcap_bag
    assert not list(bag.parent.glob(".full.tmp-*"))  # the temporary folder is gone, the bag is complete
    msgs = _read_mcap(bag)
    types = {m.channel.topic: m.schema.name for m in msgs}
    sds = _scene_sample_data(nusc, keyframes_only=False)
    keyframes = [sd for sd in sds if sd["is_key_frame"] and sd["channel"] == "LIDAR_TOP"]
    expected = {"/LIDAR_TOP": ("sensor_msgs/msg/PointCloud2", sum(sd["channel"] == "LIDAR_TOP" for sd in sds)),
                "/tf": ("tf2_msgs/msg/TFMessage", len(sds)), "/odom": ("nav_msgs/msg/Odometry", len(sds)),
                "/tf_static": ("tf2_msgs/msg/TFMessage", 1),
                "/occupancy/gt": ("sensor_msgs/msg/PointCloud2", len(keyframes)),
                "/occupancy/gt_grid": ("occ_ros_msgs/msg/SemanticOccupancyGrid", len(keyframes)),
                "/markers/annotations": ("visualization_msgs/msg/MarkerArray", len(keyframes))}
    for cam in CAMERAS:
        n = sum(sd["channel"] == cam for sd in sds)
        expected[f"/{cam}/image_rect/compressed"] = ("sensor_msgs/msg/CompressedImage", n)  # image_transport naming
        expected[f"/{cam}/camera_info"] = ("sensor_msgs/msg/CameraInfo", n)
    counts = Counter(m.channel.topic for m in msgs)
    assert {t: (types[t], counts[t]) for t in counts} == expected
    assert res.counts == dict(counts)

    by_file = {sd["filename"]: sd for sd in sds}
    stamps_sd = {int(sd["timestamp"]) * 1000 for sd in sds}
    for m in msgs:
        if m.channel.topic == "/tf_static":
            assert "durability: transient_local" in m.channel.metadata["offered_qos_profiles"]
            tfs = m.ros_msg.transforms
            assert {(t.header.frame_id, t.child_frame_id) for t in tfs} == {
                ("map", "odom"), *(("base_link", c) for c in (*CAMERAS, "LIDAR_TOP"))}
            map_odom = next(t.transform for t in tfs if t.child_frame_id == "odom")  # identity: no drift
            assert (map_odom.translation.x, map_odom.translation.y, map_odom.translation.z, map_odom.rotation.w) == (0, 0, 0, 1)
            continue
        stamp = m.ros_msg.header.stamp.sec * 1_000_000_000 + m.ros_msg.header.stamp.nanosec \
            if hasattr(m.ros_msg, "header") else None
        if m.channel.topic == "/tf":
            tf = m.ros_msg.transforms[0]
            assert (tf.header.frame_id, tf.child_frame_id) == ("odom", "base_link")  # REP 105
            stamp = tf.header.stamp.sec * 1_000_000_000 + tf.header.stamp.nanosec
        if m.channel.topic == "/odom":
            assert (m.ros_msg.header.frame_id, m.ros_msg.child_frame_id) == ("odom", "base_link")
        if m.channel.topic == "/markers/annotations":
            stamp = m.log_time_ns
        assert stamp == m.log_time_ns and stamp in stamps_sd  # stamps = sample_data timestamps
    # camera payloads are the JPEG files, byte for byte; LiDAR clouds carry the .pcd.bin records
    cam0 = next(m for m in msgs if m.channel.topic == "/CAM_FRONT/image_rect/compressed")
    sd = next(s for s in sds if s["channel"] == "CAM_FRONT" and int(s["timestamp"]) * 1000 == cam0.log_time_ns)
    assert cam0.ros_msg.format == "jpeg" and bytes(cam0.ros_msg.data) == (synthetic_dataroot / sd["filename"]).read_bytes()
    info = next(m.ros_msg for m in msgs if m.channel.topic == "/CAM_FRONT/camera_info")
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    assert (info.width, info.height) == (sd["width"], sd["height"])
    np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), cs["camera_intrinsic"])
    lidar = next(m for m in msgs if m.channel.topic == "/LIDAR_TOP")
    assert [f.name for f in lidar.ros_msg.fields] == ["x", "y", "z", "intensity", "ring"]
    assert all(f.datatype == 7 for f in lidar.ros_msg.fields) and lidar.ros_msg.header.frame_id == "LIDAR_TOP"
    sd = next(s for s in sds if s["channel"] == "LIDAR_TOP" and int(s["timestamp"]) * 1000 == lidar.log_time_ns)
    assert bytes(lidar.ros_msg.data) == (synthetic_dataroot / sd["filename"]).read_bytes()
    assert len(by_file) == len(sds)


def test_ground_truth_cloud_restores_the_dense_labels_and_masks(mcap_bag, synthetic_dataroot):
    from rosbags.highlevel import AnyReader

    bag, _ = mcap_bag
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == "/occupancy/gt"]
        clouds = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    entries = {e.token: e for e in occ3d.list_gt(synthetic_dataroot / "gts") if e.scene == SCENE}
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes("v1.0-mini", str(synthetic_dataroot), verbose=False)
    by_stamp = {nusc.get("sample", t)["timestamp"] * 1000: t for t in entries}
    assert len(clouds) == len(entries)
    for msg in clouds:
        g = occ3d.read_gt(entries[by_stamp[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec]].path)
        sem, ml, mc = gt_cloud_to_grid(msg)
        np.testing.assert_array_equal(sem, g.semantics)
        np.testing.assert_array_equal(ml, g.mask_lidar)
        np.testing.assert_array_equal(mc, g.mask_camera)
        assert msg.width == int(((g.semantics != 17) | g.mask_lidar | g.mask_camera).sum())


def test_ground_truth_grid_equals_the_occ3d_files_and_the_cloud(mcap_bag, nusc, synthetic_dataroot):
    """/occupancy/gt_grid decodes from the MCAP schema alone (no occ_ros_msgs) into each keyframe's
    Occ3D semantics, equal to the semantics of /occupancy/gt at the same stamp."""
    from occ_ros.conversions.grid_msg import msg_to_grid

    bag, _ = mcap_bag
    msgs = _read_mcap(bag)
    grids = [m for m in msgs if m.channel.topic == "/occupancy/gt_grid"]
    clouds = {m.log_time_ns: m.ros_msg for m in msgs if m.channel.topic == "/occupancy/gt"}
    entries = {e.token: e for e in occ3d.list_gt(synthetic_dataroot / "gts") if e.scene == SCENE}
    by_stamp = {nusc.get("sample", t)["timestamp"] * 1000: t for t in entries}
    assert len(entries) == 3 and len(grids) == len(entries)
    assert {m.schema.name for m in grids} == {"occ_ros_msgs/msg/SemanticOccupancyGrid"}
    for m in grids:
        g = msg_to_grid(m.ros_msg)
        assert g.stamp_ns == m.log_time_ns and g.stamp_ns in by_stamp
        ref = occ3d.read_gt(entries[by_stamp[g.stamp_ns]].path)
        np.testing.assert_array_equal(g.labels, ref.semantics)
        np.testing.assert_array_equal(g.labels, gt_cloud_to_grid(clouds[g.stamp_ns])[0])
        assert (g.frame_id, g.class_set, g.free_label, g.class_names[g.free_label]) == ("base_link", "occ3d", 17, "free")
        assert (g.spec.range_min, g.spec.voxel_size, g.spec.dims) == (OCC3D.range_min, OCC3D.voxel_size, OCC3D.dims)
        np.testing.assert_array_equal(g.T_frame_from_grid[:3, :3], np.eye(3))
        assert g.scores is None and g.flow is None


def test_gt_cloud_array_keeps_nonfree_and_masked_voxels_only():
    sem = np.full((200, 200, 16), 17, np.uint8)
    ml, mc = np.zeros_like(sem, bool), np.zeros_like(sem, bool)
    sem[0, 0, 0], ml[1, 2, 3], mc[199, 199, 15] = 4, True, True
    arr = gt_cloud_array(sem, ml, mc)
    assert len(arr) == 3
    assert arr[0]["label"] == 4 and np.allclose([arr[0]["x"], arr[0]["y"], arr[0]["z"]], [-39.8, -39.8, -0.8])
    assert arr[-1]["label"] == 17 and arr[-1]["mask_camera"] == 1 and arr[-1]["mask_lidar"] == 0


def test_sqlite3_and_mcap_bags_hold_identical_messages(synthetic_dataroot, tmp_path):
    from rosbags.highlevel import AnyReader

    got = {}
    for storage in ("mcap", "sqlite3"):
        out = tmp_path / storage
        assert nusc2bag.main(["--dataroot", str(synthetic_dataroot), "--out", str(out), "--scenes", SCENE,
                              "--storage", storage, "--keyframes-only", "--no-progress"]) == 0
        assert next(out.glob("*.mcap" if storage == "mcap" else "*.db3")).is_file()
        with AnyReader([out]) as reader:
            got[storage] = [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]
    assert len(got["mcap"]) > 50
    assert sorted(got["mcap"], key=lambda x: (x[2], x[0])) == sorted(got["sqlite3"], key=lambda x: (x[2], x[0]))


def test_missing_file_is_named_and_skip_missing_counts_it(synthetic_dataroot, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synthetic_dataroot, root, copy_function=os.symlink)
    victim = sorted((root / "samples" / "CAM_BACK").glob("*.jpg"))[0]
    victim.unlink()
    with pytest.raises(OccDataError, match=victim.name):
        convert(ConvertConfig(root, tmp_path / "bag1", scenes=["scene-0001", SCENE], keyframes_only=True, progress=False))
    assert not (tmp_path / "bag1").exists() and not list(tmp_path.glob(".bag1.tmp-*"))
    res = convert(ConvertConfig(root, tmp_path / "bag2", scenes=["scene-0001", SCENE], keyframes_only=True,
                                skip_missing=True, progress=False))
    assert res.skipped == [str(victim)]
    assert res.counts["/CAM_BACK/image_rect/compressed"] == res.counts["/CAM_FRONT/image_rect/compressed"] - 1
    with pytest.raises(OccDataError, match="already exists"):
        convert(ConvertConfig(root, tmp_path / "bag2", progress=False))
    with pytest.raises(OccDataError, match="scene-9999"):
        convert(ConvertConfig(root, tmp_path / "bag3", scenes=["scene-9999"], progress=False))


# ---------------------------------------------------------------------------------------------
# names from data, bad paths, temporary folders of killed runs


def _root_copy(src: Path, dst: Path) -> Path:
    """A dataroot copy: data files as symbolic links, tables as real files (to be edited)."""
    shutil.copytree(src, dst, copy_function=os.symlink)
    for table in (dst / "v1.0-mini").glob("*.json"):
        text = table.read_text()
        table.unlink()
        table.write_text(text)
    return dst


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("what, field", [("scene name", "scene.name"), ("sample token", "sample.token"),
                                         ("file name", "sample_data.filename"),
                                         ("absolute file name", "sample_data.filename")])
def test_names_from_the_tables_that_leave_their_folder_exit_2_and_write_nothing(what, field, synthetic_dataroot,
                                                                                tmp_path, capsys):
    import json

    root = _root_copy(synthetic_dataroot, tmp_path / "root")
    tables = root / "v1.0-mini"
    if what == "scene name":
        scenes = json.loads((tables / "scene.json").read_text())
        scenes[0]["name"] = "../x"
        (tables / "scene.json").write_text(json.dumps(scenes))
    elif what == "sample token":
        token = json.loads((tables / "sample.json").read_text())[0]["token"]
        for table in tables.glob("*.json"):
            table.write_text(table.read_text().replace(f'"{token}"', '"../x"'))
    else:
        sds = json.loads((tables / "sample_data.json").read_text())
        sds[0]["filename"] = "../../outside.jpg" if what == "file name" else "/etc/hostname"
        (tables / "sample_data.json").write_text(json.dumps(sds))
    before = _tree(tmp_path)
    out = tmp_path / "out" / "bag"
    assert nusc2bag.main(["--dataroot", str(root), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"occ-nusc2bag: {field}: expected"), err
    assert _tree(tmp_path) - before <= {"out"}  # nothing written but the (empty) parent of --out
    assert not out.exists()


@pytest.mark.parametrize("case, field", [("exists", "--out"), ("under a file", "--out"), ("unwritable", "--out"),
                                         ("dot", "--out"), ("no dataroot", "--dataroot"),
                                         ("dataroot is a file", "--dataroot"), ("no gt", "--gt")])
def test_bad_paths_exit_2_with_one_line_naming_the_argument(case, field, synthetic_dataroot, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "existing").mkdir()
    out = {"exists": tmp_path / "existing", "under a file": tmp_path / "file" / "bag", "unwritable": Path("/proc/x/bag"),
           "dot": Path(".")}.get(case, tmp_path / "bag")
    root = {"no dataroot": tmp_path / "nothing", "dataroot is a file": tmp_path / "file"}.get(case, synthetic_dataroot)
    extra = ["--gt", str(tmp_path / "no_gts")] if case == "no gt" else []
    assert nusc2bag.main(["--dataroot", str(root), "--out", str(out), "--scenes", SCENE, "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"occ-nusc2bag: {field}: "), err


def test_a_rerun_removes_the_temporary_folders_of_killed_runs(synthetic_dataroot, tmp_path, capsys):
    """A run killed with kill -9 cannot remove its ``.<out>.tmp-<pid>`` folder; the next run for the
    same --out removes it (its pid is gone) and keeps the folder of a run still alive."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "bag"
    holder = ("import sys, time; from pathlib import Path; from occ_ros.bag.bagio import temp_dir_for\n"
              "d = temp_dir_for(Path(sys.argv[1])); d.mkdir(); (d / 'bag.mcap').write_bytes(b'partial')\n"
              "print(d, flush=True); time.sleep(120)\n")
    procs = [subprocess.Popen([sys.executable, "-c", holder, str(out)], cwd=Path(__file__).resolve().parent.parent,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        killed, alive = (Path(p.stdout.readline().strip()) for p in procs)
        assert killed.is_dir() and alive.is_dir() and killed.name == f".bag.tmp-{procs[0].pid}"
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert killed.is_dir()  # what kill -9 leaves behind
        assert nusc2bag.main(["--dataroot", str(synthetic_dataroot), "--out", str(out), "--scenes", SCENE,
                              "--keyframes-only", "--no-progress"]) == 0
        assert not killed.exists() and alive.is_dir() and (out / "metadata.yaml").is_file()
        assert f"removed {killed}" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, alive.name])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
