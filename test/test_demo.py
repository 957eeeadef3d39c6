"""`make demo` end to end on the session's tiny synthetic world (the pipeline, not the scores)."""

import json

from occ_core import demo


def _scores(out, name):
    doc = json.loads((out / f"metrics_{name}.json").read_text())
    return {k: (doc["reports"][k]["summary"], doc["reports"][k]["rows"]) for k in ("voxel", "ray")}


def test_demo_predicts_evaluates_and_scores_the_node_on_bag_playback(synthetic_dataroot, tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--dataroot", str(synthetic_dataroot), "--out", str(out), "--rate", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "using the synthetic world" in text  # an existing world is not regenerated
    for name in ("fusion", "prior", "fusion_1sweep"):
        doc = json.loads((out / f"metrics_{name}.json").read_text())
        assert doc["frames"] == 3 and doc["mask"] == "camera"          # the 3 keyframes of scene-0002 only
        vox, ray = doc["reports"]["voxel"]["summary"], doc["reports"]["ray"]["summary"]
        assert 0.0 <= vox["mIoU"] <= 1.0 and 0.0 <= vox["IoU (geometric)"] <= 1.0 and 0.0 <= ray["RayIoU"] <= 1.0
        assert len(list((out / f"pred_{name}").glob("*.npz"))) == 3
    assert (out / "prior.npz").is_file()
    for label in ("fusion, offline, 5 sweeps", "per-voxel prior", "fusion, offline, 1 sweep",
                  "fusion, ROS node on bag, 1 sweep"):
        assert f"\n{label} " in text                                    # a row of the summary table
    # the ROS loop: the val scene's bag, the node's predictions recorded and rendered
    bag = json.loads((out / "metrics_bag.json").read_text())
    assert bag["summary"]["frames"] == 3 and bag["summary"]["predicted"] + bag["summary"]["dropped"] == 3
    assert (out / "val_bag" / "metadata.yaml").is_file() and list((out / "predictions_bag").glob("*.mcap"))
    assert len(list((out / "renders").glob("*_3d.png"))) == bag["summary"]["predicted"] > 0
    # prediction beside ground truth, per keyframe of the val scene, and its GIF
    assert len(list((out / "renders").glob("scene-0002_*_compare.png"))) == 3
    from PIL import Image
    with Image.open(out / "renders" / "scene-0002.gif") as gif:
        assert gif.n_frames == 3
    if bag["summary"]["dropped"] == 0:  # the node kept up: same inputs as the 1-sweep offline run, same scores
        one = json.loads((out / "metrics_fusion_1sweep.json").read_text())["reports"]
        assert bag["reports"]["voxel"]["summary"] == one["voxel"]["summary"]
        assert bag["reports"]["ray"]["summary"] == one["ray"]["summary"]
    # a second run prints the same numbers (issue 16: the figures in README must reproduce exactly)
    out2 = tmp_path / "demo2"
    assert demo.main(["--dataroot", str(synthetic_dataroot), "--out", str(out2), "--rate", "0.25"]) == 0
    for name in ("fusion", "prior", "fusion_1sweep"):
        assert _scores(out2, name) == _scores(out, name), name
    bag2 = json.loads((out2 / "metrics_bag.json").read_text())
    if bag["summary"]["dropped"] == bag2["summary"]["dropped"] == 0:
        assert bag2["reports"] == bag["reports"]
