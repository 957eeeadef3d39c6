"""`make demo` end to end on the session's tiny synthetic world (the pipeline, not the scores)."""

import json

from occ_core import demo


def test_demo_predicts_and_evaluates_the_validation_scene(synthetic_dataroot, tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--dataroot", str(synthetic_dataroot), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "using the synthetic world" in text  # an existing world is not regenerated
    for name in ("fusion", "prior"):
        doc = json.loads((out / f"metrics_{name}.json").read_text())
        assert doc["frames"] == 3 and doc["mask"] == "camera"          # the 3 keyframes of scene-0002 only
        vox, ray = doc["reports"]["voxel"]["summary"], doc["reports"]["ray"]["summary"]
        assert 0.0 <= vox["mIoU"] <= 1.0 and 0.0 <= vox["IoU (geometric)"] <= 1.0 and 0.0 <= ray["RayIoU"] <= 1.0
        assert len(list((out / f"pred_{name}").glob("*.npz"))) == 3
        assert f"\n{name} " in text                                     # a row of the summary table
    assert (out / "prior.npz").is_file()
