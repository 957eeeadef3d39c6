"""occ-predict --format openocc: OpenOcc v2 semantics + flow that occ-eval scores (mIoU, mAVE)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_core.classes import OPENOCC_FREE
from occ_core.data.nuscenes_dataset import NuScenesOccDataset, scene_splits
from occ_core.eval.cli import main as eval_main
from occ_core.formats import openocc
from occ_core.formats.convert import occ3d_to_openocc
from occ_core.grid import OCC3D
from occ_core.models.predictor import load_predictor
from occ_core.training.predict import main as predict_main

REPO = Path(__file__).resolve().parent.parent
LIDAR_CFG = REPO / "config" / "models" / "lidar.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """occ-eval sets torch to 1 thread; predicting with 1 thread throughout keeps float sums in one order
    (with 2 threads some flows differ from 1-thread ones by an ulp)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def flow_cfg(tmp_path_factory) -> Path:
    """The small LiDAR model with a flow head (seeded random init: no checkpoint needed)."""
    path = tmp_path_factory.mktemp("cfg") / "lidar_flow.yaml"
    path.write_text(LIDAR_CFG.read_text() + "flow: true\n")
    return path


@pytest.fixture(scope="module")
def openocc_pred(flow_cfg, synthetic_dataroot, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pred") / "openocc"
    assert predict_main(["--config", str(flow_cfg), "--dataroot", str(synthetic_dataroot), "--out", str(out),
                         "--format", "openocc", "--no-progress"]) == 0
    return out


def test_openocc_predictions_are_scored_by_occ_eval_with_mave(openocc_pred, flow_cfg, synthetic_dataroot, tmp_path,
                                                              capsys):
    files = sorted(openocc_pred.glob("*.npz"))
    assert len(files) == 3  # the 3 keyframes of the val scene
    s = openocc.read(files[0], require_flow=True)
    assert s.semantics.shape == OCC3D.dims and s.flow.shape == (*OCC3D.dims, 2) and s.flow.dtype == np.float32
    val = scene_splits(synthetic_dataroot)["val"]
    report = tmp_path / "eval.json"
    assert eval_main(["--format", "openocc", "--gt", str(synthetic_dataroot / "openocc_v2"), "--pred", str(openocc_pred),
                      "--metrics", "miou,mave", "--dataroot", str(synthetic_dataroot), "--version", "v1.0-mini",
                      "--scenes", ",".join(val), "--json", str(report), "--no-progress"]) == 0
    doc = json.loads(report.read_text())
    assert doc["frames"] == 3 and "mIoU" in doc["reports"]["voxel"]["summary"]
    assert {"mAVE", "OccScore"} <= set(doc["reports"]["ray"]["summary"])
    # existing files are kept unless --overwrite
    capsys.readouterr()
    before = [f.stat().st_mtime_ns for f in files]
    assert predict_main(["--config", str(flow_cfg), "--dataroot", str(synthetic_dataroot), "--out", str(openocc_pred),
                         "--format", "openocc", "--no-progress"]) == 0
    assert "0 openocc predictions written, 3 kept" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == before


def test_written_flow_and_semantics_are_the_predictors(openocc_pred, flow_cfg, synthetic_dataroot):
    pred = load_predictor(flow_cfg)
    ds = NuScenesOccDataset(synthetic_dataroot, scene_splits(synthetic_dataroot)["val"], OCC3D, pred.cfg.lidar.max_sweeps)
    scene, token = ds.samples[0]
    p = pred.predict(ds.load_frame(token))
    s = openocc.read(openocc_pred / f"{token}.npz")
    np.testing.assert_array_equal(s.flow, p.flow)
    np.testing.assert_array_equal(s.semantics, occ3d_to_openocc(p.labels, others_to=OPENOCC_FREE))


def test_openocc_without_flow_head_exits_2_naming_the_config(synthetic_dataroot, tmp_path, capsys):
    out = tmp_path / "pred"
    assert predict_main(["--config", str(LIDAR_CFG), "--dataroot", str(synthetic_dataroot), "--out", str(out),
                         "--format", "openocc", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(LIDAR_CFG) in err and "flow head" in err
    assert not out.exists()
