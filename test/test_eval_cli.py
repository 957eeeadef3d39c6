"""occ-eval end to end on small synthetic folders."""

import json

import numpy as np
import pytest

from occ_core.eval import cli
from occ_core.formats import occ3d, openocc

RNG = np.random.default_rng(2)
DIMS = (200, 200, 16)


def _scene_sem(free):
    sem = np.full(DIMS, free, np.uint8)
    sem[:, :, 0] = 10 if free == 16 else 11          # driveable surface
    sem[110:114, 95:99, 1:4] = 0 if free == 16 else 4  # a car ahead
    sem[80:82, 120:122, 1:5] = 7                      # a pedestrian (7 in both orders)
    return sem


def _make_occ3d(tmp_path, tokens=("t0", "t1", "t2")):
    gt_dir, pred_dir = tmp_path / "gts", tmp_path / "pred"
    for i, tok in enumerate(tokens):
        sem = _scene_sem(17)
        cam = np.zeros(DIMS, bool)
        cam[:, :100] = True
        occ3d.write_gt(gt_dir / f"scene-{i // 2}" / tok / "labels.npz", occ3d.Occ3DSample(sem, np.ones(DIMS, bool), cam))
        pred = sem.copy()
        pred[:, 100:][pred[:, 100:] != 17] = 3         # wrong (bus) only outside the camera mask
        occ3d.write_prediction(pred_dir / f"{tok}.npz", pred)
    return gt_dir, pred_dir


def test_occ3d_miou_camera_mask_json(tmp_path, capsys):
    gt_dir, pred_dir = _make_occ3d(tmp_path)
    out = tmp_path / "res" / "m.json"
    rc = cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--metrics", "miou,iou", "--json", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mIoU: 100.00 %" in text and "mask: camera" in text
    doc = json.loads(out.read_text())
    assert doc["frames"] == 3 and doc["reports"]["voxel"]["summary"]["mIoU"] == 1.0
    assert doc["reports"]["voxel"]["summary"]["IoU (geometric)"] == 1.0
    rc = cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--mask", "none", "--json", str(out), "--no-progress"])
    assert rc == 0
    s = json.loads(out.read_text())["reports"]["voxel"]["summary"]
    assert s["mIoU"] < 1.0 and s["IoU (geometric)"] == 1.0    # classes wrong outside the mask, occupancy right


def test_the_callers_torch_thread_count_is_restored(tmp_path):
    import torch

    gt_dir, pred_dir = _make_occ3d(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--threads", "1", "--no-progress"]) == 0
        assert torch.get_num_threads() == 3
        assert cli.main(["--gt", str(gt_dir), "--pred", str(tmp_path / "none"), "--threads", "1", "--no-progress"]) == 2
        assert torch.get_num_threads() == 3  # on the error path too
    finally:
        torch.set_num_threads(before)


def test_missing_and_malformed_predictions_are_all_named(tmp_path, capsys):
    gt_dir, pred_dir = _make_occ3d(tmp_path, ("t0", "t1", "t2", "t3"))
    (pred_dir / "t0.npz").unlink()
    (pred_dir / "t2.npz").unlink()
    np.savez(pred_dir / "t3.npz", semantics=np.zeros((200, 200, 8), np.uint8))
    out = tmp_path / "m.json"
    rc = cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "3 of 4 frames cannot be evaluated" in err
    for tok in ("t0", "t2", "t3"):
        assert f"{tok} (scene" in err
    assert "t1 (scene" not in err and "expected (200, 200, 16)" in err
    assert not out.exists()


def test_argument_errors_exit_2(tmp_path):
    gt_dir, pred_dir = _make_occ3d(tmp_path, ("t0",))
    assert cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--metrics", "rayiou"]) == 2
    assert cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--metrics", "mave", "--dataroot", "x",
                     "--version", "v"]) == 2
    assert cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--metrics", "miou,bogus"]) == 2


class _FakeNuScenes:
    """The nuScenes tables of one scene with two keyframes 5 m apart (identity rotations)."""

    def __init__(self, version, dataroot, verbose=False):
        q = [1.0, 0.0, 0.0, 0.0]
        self.t = {"scene": {"sc": {"first_sample_token": "t0"}},
                  "calibrated_sensor": {"cs": {"translation": [0.94, 0.0, 1.84], "rotation": q}},
                  "sample": {}, "sample_data": {}, "ego_pose": {}}
        for i in range(2):
            self.t["sample"][f"t{i}"] = {"scene_token": "sc", "next": "t1" if i == 0 else "", "data": {"LIDAR_TOP": f"sd{i}"}}
            self.t["sample_data"][f"sd{i}"] = {"calibrated_sensor_token": "cs", "ego_pose_token": f"ep{i}"}
            self.t["ego_pose"][f"ep{i}"] = {"translation": [5.0 * i, 0.0, 0.0], "rotation": q}

    def get(self, table, token):
        return self.t[table][token]


def test_openocc_rayiou_mave_occscore(tmp_path, capsys, monkeypatch):
    import nuscenes.nuscenes

    monkeypatch.setattr(nuscenes.nuscenes, "NuScenes", _FakeNuScenes)
    gt_dir, pred_dir = tmp_path / "openocc_v2", tmp_path / "pred"
    sem = _scene_sem(16)
    flow = np.zeros((*DIMS, 2), np.float32)
    flow[sem == 0] = [2.0, 0.0]
    pflow = flow.copy()
    pflow[sem == 0] += [0.3, 0.4]                     # 0.5 m/s error on every car voxel
    sem[:70], sem[130:], sem[:, :70], sem[:, 130:] = 14, 14, 14, 14  # manmade walls keep the rays short
    for tok in ("t0",):  # t1 is only a keyframe of the scene: its LiDAR is a second ray origin
        openocc.write(gt_dir / "scene-0" / tok / "labels.npz", openocc.OpenOccSample(sem, flow))
        openocc.write(pred_dir / f"{tok}.npz", openocc.OpenOccSample(sem, pflow))
    out = tmp_path / "r.json"
    rc = cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--format", "openocc", "--metrics", "miou,rayiou,mave",
                   "--dataroot", str(tmp_path), "--version", "v1.0-mini", "--json", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads(out.read_text())["reports"]["ray"]["summary"]
    assert s["RayIoU"] == 1.0
    assert s["mAVE"] == pytest.approx(0.25, abs=1e-6)  # car 0.5, pedestrian 0.0 -> mean 0.25
    assert s["OccScore"] == pytest.approx(0.9 + 0.1 * 0.75, abs=1e-6)
    assert json.loads(out.read_text())["mask"] == "none"


def test_scenes_filter_evaluates_only_those_scenes(tmp_path, capsys):
    gt_dir, pred_dir = _make_occ3d(tmp_path, ("t0", "t1", "t2"))  # scene-0: t0, t1; scene-1: t2
    (pred_dir / "t0.npz").unlink()
    (pred_dir / "t1.npz").unlink()
    out = tmp_path / "m.json"
    rc = cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--scenes", "scene-1", "--json", str(out), "--no-progress"])
    assert rc == 0 and json.loads(out.read_text())["frames"] == 1
    rc = cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--scenes", "scene-0", "--no-progress"])
    assert rc == 1 and "t0 (scene scene-0)" in capsys.readouterr().err
    rc = cli.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--scenes", "scene-1,scene-9", "--no-progress"])
    assert rc == 1 and "scene-9" in capsys.readouterr().err
