"""occ-label on the tiny synthetic world: accuracy against the analytic ground truth, resume,
the process pool, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from occ_core.eval.occupancy import occ3d_miou
from occ_core.formats import occ3d
from occ_core.labels.cli import main

# Measured on the fixture (2 scenes x 3 keyframes, seed 0, default settings) on 2026-11-30:
# IoU 83.66 %, mIoU 63.35 % inside the analytic mask_camera (windows of 3 keyframes only; the
# camera mask holds raised ground since the synthetic GT counts the voxels of camera hits).
IOU_FLOOR = 0.80
MIOU_FLOOR = 0.58


@pytest.fixture(scope="module")
def labelled(synthetic_dataroot, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "out"
    assert main(["--dataroot", str(synthetic_dataroot), "--out", str(out), "--quiet"]) == 0
    return out


def _score(root, out):
    met = occ3d_miou("camera")
    entries = occ3d.list_gt(root / "gts")
    for e in entries:
        gt = occ3d.read_gt(e.path)
        lab = occ3d.read_gt(out / e.scene / e.token / "labels.npz")
        met.update(gt.semantics, lab.semantics, gt.mask_camera)
    return met, len(entries)


def test_occ_label_beats_a_floor_against_the_analytic_ground_truth(synthetic_dataroot, labelled):
    met, n = _score(synthetic_dataroot, labelled)
    assert met.frames == n == 6
    print(f"IoU {met.geometric_iou():.4f} mIoU {met.miou():.4f}")
    assert met.geometric_iou() >= IOU_FLOOR
    assert met.miou() >= MIOU_FLOOR


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _summary(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_output_layout_and_dtypes(synthetic_dataroot, labelled):
    files = sorted(labelled.glob("*/*/labels.npz"))
    assert len(files) == 6
    a = _arrays(files[0])
    assert set(a) == {"semantics", "mask_lidar", "mask_camera"}
    assert a["semantics"].dtype == np.uint8 and a["semantics"].shape == (200, 200, 16)
    assert a["semantics"].max() <= 17 and a["mask_camera"].any() and a["mask_lidar"].any()


def test_resume_skips_finished_keyframes_and_redoes_a_missing_one(synthetic_dataroot, labelled, capsys, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(labelled, out)
    capsys.readouterr()
    assert main(["--dataroot", str(synthetic_dataroot), "--out", str(out), "--quiet"]) == 0
    assert "wrote 0 keyframes" in _summary(capsys)
    victim = sorted(out.glob("*/*/labels.npz"))[2]
    before = _arrays(victim)
    victim.unlink()  # a run killed before this keyframe was written (writes are atomic)
    (victim.parent / ".labels.npz.123.tmp").write_bytes(b"partial")  # what a kill mid-write leaves
    assert main(["--dataroot", str(synthetic_dataroot), "--out", str(out), "--quiet"]) == 0
    assert "wrote 1 keyframes" in _summary(capsys)
    after = _arrays(victim)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_pool_and_shards_write_the_same_files(synthetic_dataroot, labelled, tmp_path, capsys):
    out = tmp_path / "pool"
    for shard in ("0/2", "1/2"):
        assert main(["--dataroot", str(synthetic_dataroot), "--out", str(out), "--quiet", "--workers", "2",
                     "--shard", shard]) == 0
        assert "wrote 3 keyframes of 1 scenes" in _summary(capsys)
    ref = sorted(p.relative_to(labelled) for p in labelled.glob("*/*/labels.npz"))
    assert sorted(p.relative_to(out) for p in out.glob("*/*/labels.npz")) == ref
    for rel in ref:
        a, b = _arrays(labelled / rel), _arrays(out / rel)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("extra, message", [
    (["--scenes", "scene-9999"], "--scenes: ['scene-9999'] not in the scene table"),
])
def test_bad_input_is_one_line_and_exit_2(synthetic_dataroot, tmp_path, capsys, extra, message):
    rc = main(["--dataroot", str(synthetic_dataroot), "--out", str(tmp_path / "o"), "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("occ-label: ") and message in err[0]


def test_missing_dataroot_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--dataroot", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"occ-label: --dataroot: {tmp_path / 'nope'} does not exist"
