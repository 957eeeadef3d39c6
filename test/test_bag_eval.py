"""occ-bag-eval: playback metrics equal occ-eval on offline occ-predict predictions of the same model and data.

Apples to apples: the node uses the current LiDAR sweep only (``lidar_sweeps: 1``, its default),
while ``config/models/fusion.yaml`` aggregates 5 sweeps offline; the offline side therefore runs the
same config with ``lidar.max_sweeps: 1`` (same weights: sweeps only change the input points). The
node's SensorFrame built from the bag is then the dataset's frame (checked too), and the bag is
played at 0.2x so that the node keeps up (no dropped frame). The metrics are computed from the
node's ``/occupancy/grid`` messages; the recorded bag holds them, decodable without occ_ros_msgs.
A bag converted before ``/occupancy/gt_grid`` existed still evaluates; a grid of another geometry
is refused.
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from occ_core.data.nuscenes_dataset import NuScenesOccDataset
from occ_core.eval import cli as eval_cli
from occ_core.formats import occ3d
from occ_core.grid import OCC3D
from occ_core.models.predictor import load_predictor
from occ_core.training import predict as predict_cli
from occ_ros.bag.evaluate import EvalConfig, evaluate, grid_prediction, read_ground_truth
from occ_ros.bag.nusc2bag import ConvertConfig, convert
from occ_ros.conversions.grid_msg import GRID_MSG_TYPE, grid_to_rosbags_msg, grid_typestore, msg_to_grid

ROOT = Path(__file__).resolve().parent.parent
SCENE = "scene-0002"
SMALL_INPUT_HW = (48, 80)


class RecordingPredictor:
    """Wraps a predictor and keeps every SensorFrame it is given."""

    def __init__(self, inner):
        self.inner, self.spec, self.frames = inner, getattr(inner, "spec", OCC3D), []
        self.image_hw = inner.image_hw  # the node decodes the images for the model's input

    def predict(self, frame):
        self.frames.append(frame)
        return self.inner.predict(frame)


@pytest.fixture(scope="module")
def one_sweep_config(tmp_path_factory):
    cfg = yaml.safe_load((ROOT / "config/models/fusion.yaml").read_text())
    cfg["lidar"]["max_sweeps"] = 1
    # a smaller camera input (same weights) so that both paths decode the 320x180 test JPEGs at
    # half size (occ_core.data.transforms.decode_image): the node and occ-predict must agree there too
    cfg["image"]["size"] = list(SMALL_INPUT_HW)
    path = tmp_path_factory.mktemp("cfg") / "fusion_1sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_playback_metrics_equal_offline_metrics(synthetic_dataroot, tmp_path, one_sweep_config):
    ckpt = ROOT / "config/models/fusion_demo.pt"
    bag = tmp_path / "val_bag"
    convert(ConvertConfig(synthetic_dataroot, bag, scenes=[SCENE], keyframes_only=True, progress=False))

    # offline: occ-predict + occ-eval
    off = tmp_path / "offline"
    assert predict_cli.main(["--config", str(one_sweep_config), "--checkpoint", str(ckpt), "--dataroot",
                             str(synthetic_dataroot), "--split", "val", "--out", str(off), "--no-progress"]) == 0
    assert eval_cli.main(["--gt", str(synthetic_dataroot / "gts"), "--pred", str(off), "--scenes", SCENE,
                          "--dataroot", str(synthetic_dataroot), "--version", "v1.0-mini", "--metrics", "miou,iou,rayiou",
                          "--mask", "camera", "--json", str(tmp_path / "off.json"), "--no-progress"]) == 0
    offline = json.loads((tmp_path / "off.json").read_text())["reports"]

    # playback through the node
    rec = RecordingPredictor(load_predictor(str(one_sweep_config), str(ckpt), device="cpu"))
    res = evaluate(EvalConfig(bag, rate=0.2, record=tmp_path / "pred_bag", json_out=tmp_path / "bag.json"),
                   predictor=rec, progress=False)
    assert (res.frames, res.predicted, res.dropped) == (3, 3, 0)
    assert res.voxel.to_dict()["summary"] == offline["voxel"]["summary"]
    assert res.ray.to_dict()["summary"] == offline["ray"]["summary"]
    assert res.voxel.to_dict()["rows"] == offline["voxel"]["rows"]
    assert np.isfinite(res.latency_ms_p50) and res.latency_ms_p95 >= res.latency_ms_p50 > 0
    assert res.effective_rate_hz > 0

    # the node's frames are the dataset's frames, and each prediction equals the offline file
    ds = NuScenesOccDataset(synthetic_dataroot, [SCENE], OCC3D, max_sweeps=1, image_hw=SMALL_INPUT_HW)
    by_stamp = {ds.nusc.get("sample", tok)["timestamp"] * 1000: tok for _, tok in ds.samples}
    assert sorted(f.stamp_ns for f in rec.frames) == sorted(by_stamp)
    for f in rec.frames:
        ref = ds.load_frame(by_stamp[f.stamp_ns])
        assert f.camera_names == ref.camera_names
        assert {im.shape for im in f.images} == {(90, 160, 3)}  # decoded at 1/2 for the 48x80 input
        for a, b in zip(f.images, ref.images):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(f.intrinsics, ref.intrinsics, atol=1e-9)
        np.testing.assert_allclose(f.T_base_from_cam, ref.T_base_from_cam, atol=1e-9)
        np.testing.assert_allclose(f.T_base_from_lidar, ref.T_base_from_lidar, atol=1e-9)
        assert f.points.shape == ref.points.shape
        np.testing.assert_allclose(f.points, ref.points, atol=1e-5)
    for stamp, pred in res.predictions.items():
        np.testing.assert_array_equal(pred, occ3d.read_prediction(off / f"{by_stamp[stamp]}.npz"))

    # the recording: 3 predictions as grids and voxel clouds (+ the ground truth, both forms), read by
    # an independent reader; the grids' labels are the scored predictions, i.e. the offline files
    from mcap_ros2.reader import read_ros2_messages

    (mcap,) = (tmp_path / "pred_bag").glob("*.mcap")
    msgs = list(read_ros2_messages(str(mcap)))
    counts = Counter(m.channel.topic for m in msgs)
    assert [counts[t] for t in ("/occupancy/grid", "/occupancy/voxels", "/occupancy/gt", "/occupancy/gt_grid")] == [3] * 4
    grids = [m for m in msgs if m.channel.topic == "/occupancy/grid"]
    assert {m.schema.name for m in grids} == {GRID_MSG_TYPE}
    for m in grids:
        g = msg_to_grid(m.ros_msg)
        assert g.stamp_ns == m.log_time_ns and g.frame_id == "base_link" and g.scores is not None
        np.testing.assert_array_equal(g.labels, res.predictions[g.stamp_ns])
        np.testing.assert_array_equal(g.labels, occ3d.read_prediction(off / f"{by_stamp[g.stamp_ns]}.npz"))
    assert sorted(m.log_time_ns for m in grids) == sorted(res.predictions) == sorted(by_stamp)
    assert json.loads((tmp_path / "bag.json").read_text())["summary"]["predicted"] == 3


def test_ray_origins_from_the_bag_equal_the_tables(synthetic_dataroot, tmp_path):
    from nuscenes.nuscenes import NuScenes

    from occ_core.eval.origins import nuscenes_ray_origins

    bag = tmp_path / "two_scenes"
    convert(ConvertConfig(synthetic_dataroot, bag, keyframes_only=True, progress=False))
    gt = read_ground_truth(bag)
    nusc = NuScenes("v1.0-mini", str(synthetic_dataroot), verbose=False)
    tokens = {s["timestamp"] * 1000: s["token"] for s in nusc.sample}
    ref = nuscenes_ray_origins(nusc, tokens.values(), progress=False)
    assert len(gt.frames) == 6 and {f.scene for f in gt.frames} == {0, 1}
    for f in gt.frames:
        np.testing.assert_array_equal(f.origins, ref[tokens[f.stamp_ns]])


def _copy_without(src: Path, dst: Path, topic: str) -> None:
    """``src`` rewritten to ``dst`` (MCAP) without ``topic``: a bag as occ-nusc2bag wrote it before
    that topic existed."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = grid_typestore()
    with AnyReader([src]) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=store,
                                        offered_qos_profiles=list(c.ext.offered_qos_profiles))
                 for c in reader.connections if c.topic != topic}
        for c, t_ns, raw in reader.messages(connections=[c for c in reader.connections if c.id in conns]):
            w.write(conns[c.id], t_ns, raw)


def test_a_bag_without_gt_grid_still_evaluates_and_records(synthetic_dataroot, tmp_path):
    from mcap_ros2.reader import read_ros2_messages
    from test_node_support import PointHeightTestPredictor

    full, old = tmp_path / "full", tmp_path / "old"
    convert(ConvertConfig(synthetic_dataroot, full, scenes=[SCENE], keyframes_only=True, progress=False))
    _copy_without(full, old, "/occupancy/gt_grid")
    res = evaluate(EvalConfig(old, rate=0.5, record=tmp_path / "rec"), predictor=PointHeightTestPredictor(),
                   progress=False)
    assert (res.frames, res.predicted, res.dropped) == (3, 3, 0)
    assert np.isfinite(res.voxel.summary["IoU (geometric)"])
    (mcap,) = (tmp_path / "rec").glob("*.mcap")
    topics = [m.channel.topic for m in read_ros2_messages(str(mcap))]
    assert sorted(set(topics)) == ["/occupancy/grid", "/occupancy/gt", "/occupancy/voxels", "/tf", "/tf_static"]
    assert topics.count("/occupancy/grid") == 3


def test_a_grid_of_another_geometry_is_refused():
    from occ_core.errors import OccDataError
    from occ_core.grid import GridSpec

    store = grid_typestore()
    labels = np.random.default_rng(0).integers(0, 18, OCC3D.dims, dtype=np.uint8)

    def cdr(spec, frame_id="base_link"):
        return store.serialize_cdr(grid_to_rosbags_msg(labels, spec, 5, frame_id, typestore=store), GRID_MSG_TYPE)

    np.testing.assert_array_equal(grid_prediction(cdr(OCC3D), store, "here"), labels)
    shifted = GridSpec("occ3d", (-40.0, -40.0, -2.0), OCC3D.voxel_size, OCC3D.dims)
    coarse = GridSpec("occ3d", OCC3D.range_min, (0.5, 0.5, 0.4), OCC3D.dims)
    for raw in (cdr(shifted), cdr(coarse), cdr(OCC3D, "map")):
        with pytest.raises(OccDataError, match=r"/occupancy/grid@5: expected the occ3d grid"):
            grid_prediction(raw, store, "/occupancy/grid@5")


# ---------------------------------------------------------------------------------------------
# long gaps between scenes, bad input


def test_two_scenes_an_hour_apart_are_evaluated_without_sleeping_through_the_gap(synthetic_dataroot, tmp_path,
                                                                                  capsys):
    import threading

    from test_node_support import PointHeightTestPredictor

    bag = tmp_path / "two_scenes"
    convert(ConvertConfig(synthetic_dataroot, bag, keyframes_only=True, progress=False))
    result = {}
    thread = threading.Thread(target=lambda: result.update(res=evaluate(EvalConfig(bag, rate=1.0),
                                                                        predictor=PointHeightTestPredictor(),
                                                                        progress=False)), daemon=True)
    thread.start()
    thread.join(120)  # the old player slept through the hour between the scenes
    assert not thread.is_alive(), "occ-bag-eval slept through the gap between the scenes"
    res = result["res"]
    assert (res.frames, res.predicted, res.dropped) == (6, 6, 0)
    assert "occ-bag-eval: skipped a " in capsys.readouterr().out


@pytest.fixture(scope="module")
def small_bag(synthetic_dataroot, tmp_path_factory):
    bag = tmp_path_factory.mktemp("eval_cli") / "bag"
    convert(ConvertConfig(synthetic_dataroot, bag, scenes=[SCENE], keyframes_only=True, progress=False))
    return bag


@pytest.mark.parametrize("case, field", [
    ("missing bag", "bag"), ("text file", "bag"), ("truncated bag", "bag"),
    ("record under a file", "--record"), ("record unwritable", "--record"), ("record is a folder", "--record"),
    ("json under a file", "--json"), ("missing config", "--config"), ("missing checkpoint", "--checkpoint")])
def test_bad_input_exits_2_with_one_line_before_the_evaluation(case, field, small_bag, tmp_path, capsys,
                                                              monkeypatch):
    import shutil

    from occ_ros.bag import evaluate as ev

    monkeypatch.setattr(ev, "read_ground_truth", lambda *a, **k: pytest.fail("the evaluation started"))
    (tmp_path / "file").write_text("x")
    keep = tmp_path / "my_results"
    keep.mkdir()
    (keep / "precious.txt").write_text("keep me")
    bag, extra = small_bag, []
    if case == "text file":
        bag = tmp_path / "file"
    elif case == "missing bag":
        bag = tmp_path / "nothing"
    elif case == "truncated bag":
        bag = tmp_path / "cut"
        shutil.copytree(small_bag, bag)
        (mcap,) = bag.glob("*.mcap")
        mcap.write_bytes(mcap.read_bytes()[:1000])
    else:
        extra = {"record under a file": ["--record", str(tmp_path / "file" / "rec")],
                 "record unwritable": ["--record", "/proc/x/rec"],
                 "record is a folder": ["--record", str(keep)],
                 "json under a file": ["--json", str(tmp_path / "file" / "m.json")],
                 "missing config": ["--config", str(tmp_path / "none.yaml")],
                 "missing checkpoint": ["--checkpoint", str(tmp_path / "none.pt")]}[case]
    assert ev.main([str(bag), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"occ-bag-eval: {field}: "), err
    assert (keep / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("args", [["--rate", "0"], ["--max-gap", "-1"], ["--lidar-sweeps", "0"],
                                  ["--temporal-pose-wait", "31"], ["--temporal-pose-wait", "-0.5"]])
def test_bad_numbers_exit_2(args, small_bag, capsys):
    from occ_ros.bag import evaluate as ev

    with pytest.raises(SystemExit) as e:
        ev.main([str(small_bag), *args])
    assert e.value.code == 2 and args[0] in capsys.readouterr().err


def test_temporal_pose_wait_reaches_the_node_parameter(small_bag):
    """occ-bag-eval --temporal-pose-wait sets the node parameter temporal_pose_wait (EvalConfig)."""
    from occ_ros.bag import evaluate as ev

    assert ev.parse_args([str(small_bag)]).temporal_pose_wait == 1.0
    assert ev.parse_args([str(small_bag), "--temporal-pose-wait", "7.5"]).temporal_pose_wait == 7.5
