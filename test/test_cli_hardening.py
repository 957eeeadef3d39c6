"""occ_core console scripts under bad input (issue 12, items 2 and 5 for occ-synth, occ-eval,
occ-train, occ-predict and occ-render).

- No name from data escapes its folder: a dataroot whose tables carry a sample token
  ``../PWNED``, a scene name ``../x`` or a sample_data file name ``../../x.jpg`` makes the tools
  exit 2 with one line naming the field, and nothing is written outside ``--out``.
- Bad paths, unwritable outputs and bad numbers: exit 2, one line naming the file/field, no
  traceback, and output paths are checked before the long work starts.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from occ_core.data.synthetic import SynthConfig, generate
from occ_core.data.synthetic import cli as synth_cli
from occ_core.eval import cli as eval_cli
from occ_core.training import predict as predict_cli
from occ_core.training import train as train_cli
from occ_core.viz import cli as render_cli

REPO = Path(__file__).resolve().parent.parent
LIDAR_CFG = REPO / "config" / "models" / "lidar.yaml"
UNWRITABLE = Path("/sys/occ-test-unwritable")  # /sys refuses new entries, even to root


# ------------------------------------------------------------------ a dataroot with hostile names
def _val_tokens(root: Path) -> list[str]:
    tables = root / "v1.0-mini"
    val_scene = json.loads((root / "splits.json").read_text())["val"][0]
    scene = next(s for s in json.loads((tables / "scene.json").read_text()) if s["name"] == val_scene)
    by_token = {s["token"]: s for s in json.loads((tables / "sample.json").read_text())}
    out, tok = [], scene["first_sample_token"]
    while tok:
        out.append(tok)
        tok = by_token[tok]["next"]
    return out


def hostile_copy(src: Path, dst: Path, kind: str) -> Path:
    """A copy of the synthetic dataroot ``src`` at ``dst`` (tables and GT copied, sensor folders
    linked) with one hostile name in a validation sample:

    - ``token``: the first val sample's token is ``../PWNED`` in every table;
    - ``scene``: the val scene is named ``../x`` (scene table and splits.json);
    - ``filename``: the first val sample's CAM_FRONT file name is ``../../x.jpg``, and a valid
      JPEG lies there (outside the dataroot), so a loader that follows the name succeeds.
    """
    dst.mkdir(parents=True)
    for name in ("samples", "sweeps", "lidarseg", "panoptic", "maps", "depth", "openocc_v2"):
        (dst / name).symlink_to(src / name)
    shutil.copytree(src / "gts", dst / "gts")
    shutil.copytree(src / "v1.0-mini", dst / "v1.0-mini")
    shutil.copy(src / "splits.json", dst / "splits.json")
    tables = dst / "v1.0-mini"
    first = _val_tokens(src)[0]
    if kind == "token":
        for f in tables.glob("*.json"):
            f.write_text(f.read_text().replace(f'"{first}"', '"../PWNED"'))
    elif kind == "scene":
        splits = json.loads((dst / "splits.json").read_text())
        old = splits["val"][0]
        splits["val"] = ["../x"]
        (dst / "splits.json").write_text(json.dumps(splits))
        scenes = json.loads((tables / "scene.json").read_text())
        for s in scenes:
            if s["name"] == old:
                s["name"] = "../x"
        (tables / "scene.json").write_text(json.dumps(scenes))
    elif kind == "filename":
        rows = json.loads((tables / "sample_data.json").read_text())
        for r in rows:
            if r["sample_token"] == first and "/CAM_FRONT/" in r["filename"] and r["is_key_frame"]:
                shutil.copy(src / r["filename"], (dst / "../../x.jpg").resolve())
                r["filename"] = "../../x.jpg"
                break
        else:
            raise AssertionError("no CAM_FRONT keyframe in the val scene")
        (tables / "sample_data.json").write_text(json.dumps(rows))
    else:
        raise ValueError(kind)
    return dst


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root`` (links not followed), relative."""
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


@pytest.mark.parametrize("kind,field", [("token", "sample.token"), ("scene", "scene.name"),
                                        ("filename", "sample_data.filename")])
def test_predict_refuses_hostile_names_and_writes_nothing_outside_out(synthetic_dataroot, tmp_path, capsys, kind,
                                                                      field):
    root = hostile_copy(synthetic_dataroot, tmp_path / "world" / "nuscenes", kind)
    out = tmp_path / "work" / "pred"
    before = tree(tmp_path)
    rc = predict_cli.main(["--config", str(LIDAR_CFG), "--dataroot", str(root), "--split", "val", "--out", str(out),
                           "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("occ-predict: ") and field in err and "Traceback" not in err
    new = {p for p in tree(tmp_path) - before if not p.startswith(os.path.relpath(out, tmp_path))}
    assert new <= {"work"}, new  # only --out (and its parent) appeared
    assert not list(tmp_path.rglob("PWNED*"))


def test_train_refuses_a_hostile_scene_name(synthetic_dataroot, tmp_path, capsys):
    root = hostile_copy(synthetic_dataroot, tmp_path / "world" / "nuscenes", "scene")
    rc = train_cli.main(["--config", str(LIDAR_CFG), "--dataroot", str(root), "--work-dir", str(tmp_path / "run"),
                         "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "scene.name" in err and "'../x'" in err


def test_loader_reads_through_symlinked_data_folders(synthetic_dataroot, tmp_path):
    """Lexical checks only: a dataroot whose samples/ or gts/ is a link to another disk still loads."""
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset, scene_splits
    from occ_core.grid import OCC3D

    root = tmp_path / "nuscenes"
    root.mkdir()
    for p in synthetic_dataroot.iterdir():
        (root / p.name).symlink_to(p)
    ds = NuScenesOccDataset(root, scene_splits(root)["val"], OCC3D, max_sweeps=2)
    s = ds[0]
    assert len(s.frame.images) == 6 and s.frame.points.shape[0] > 0 and s.targets.semantics.shape == OCC3D.dims


def _occ3d_gt(root: Path, scene: str, token: str) -> None:
    from occ_core.formats import occ3d

    d = root / scene / token
    d.mkdir(parents=True)
    occ3d.write_gt(d / "labels.npz", occ3d.Occ3DSample(np.full((200, 200, 16), 17, np.uint8),
                                                       np.ones((200, 200, 16), bool), np.ones((200, 200, 16), bool)))


def test_eval_refuses_hostile_scene_names(tmp_path, capsys):
    gt, pred = tmp_path / "gts", tmp_path / "pred"
    _occ3d_gt(gt, "scene-1", "t0")
    pred.mkdir()
    np.savez(pred / "t0.npz", semantics=np.full((200, 200, 16), 17, np.uint8))
    assert eval_cli.main(["--gt", str(gt), "--pred", str(pred), "--scenes", "../x", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scenes" in err and "'../x'" in err
    _occ3d_gt(gt, "scene\x1b[2J", "t1")  # a folder name with a control character (terminal escape)
    assert eval_cli.main(["--gt", str(gt), "--pred", str(pred), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "control characters" in err


# ------------------------------------------------------------------ bad input: exit 2, one line, checked early
@pytest.fixture(scope="module")
def env(synthetic_dataroot, tmp_path_factory):
    """Paths the bad cases refer to."""
    base = tmp_path_factory.mktemp("bad")
    afile = base / "afile"
    afile.write_text("not a folder, not a checkpoint, not yaml: [")
    novals = base / "novals"  # one scene: the val split is empty
    generate(SynthConfig(scenes=1, samples_per_scene=2, seed=0, image_size=(64, 36), sweeps=False), novals,
             progress=False, workers=1)
    gt, pred = base / "gts", base / "pred"
    _occ3d_gt(gt, "scene-1", "t0")
    pred.mkdir()
    np.savez(pred / "t0.npz", semantics=np.full((200, 200, 16), 17, np.uint8))
    return SimpleNamespace(root=str(synthetic_dataroot), afile=str(afile), under_file=str(afile / "x"),
                           missing=str(base / "missing"), novals=str(novals), dir=str(base), gt=str(gt), pred=str(pred),
                           cfg=str(LIDAR_CFG), unwritable=str(UNWRITABLE), base=base)


def _train(e, *extra):
    return ["--config", e.cfg, "--dataroot", e.root, "--work-dir", str(e.base / "run"), "--no-progress", *extra]


def _predict(e, *extra):
    return ["--config", e.cfg, "--dataroot", e.root, "--out", str(e.base / "p"), "--no-progress", *extra]


def _eval(e, *extra):
    return ["--gt", e.gt, "--pred", e.pred, "--no-progress", *extra]


# (script main, argv from env, text the one error line must hold)
BAD_CASES = {
    # occ-synth
    "synth out unwritable": (synth_cli.main, lambda e: ["--out", e.unwritable, "--quiet"], "--out"),
    "synth out under a file": (synth_cli.main, lambda e: ["--out", e.under_file, "--quiet"], "--out"),
    "synth out is a file": (synth_cli.main, lambda e: ["--out", e.afile, "--quiet"], "not a folder"),
    # occ-eval
    "eval json unwritable": (eval_cli.main, lambda e: _eval(e, "--json", e.unwritable + "/m.json"), "--json"),
    "eval json is a folder": (eval_cli.main, lambda e: _eval(e, "--json", e.dir), "--json"),
    "eval json under a file": (eval_cli.main, lambda e: _eval(e, "--json", e.under_file), "--json"),
    "eval gt missing": (eval_cli.main, lambda e: ["--gt", e.missing, "--pred", e.pred], "--gt"),
    "eval gt is a file": (eval_cli.main, lambda e: ["--gt", e.afile, "--pred", e.pred], "--gt"),
    "eval pred missing": (eval_cli.main, lambda e: ["--gt", e.gt, "--pred", e.missing], "--pred"),
    "eval dataroot missing": (eval_cli.main, lambda e: _eval(e, "--metrics", "rayiou", "--dataroot", e.missing,
                                                             "--version", "v1.0-mini"), "--dataroot"),
    "eval device bogus": (eval_cli.main, lambda e: _eval(e, "--device", "gpu0"), "--device"),
    # occ-train
    "train work-dir unwritable": (train_cli.main, lambda e: _train(e, "--work-dir", e.unwritable), "--work-dir"),
    "train work-dir is a file": (train_cli.main, lambda e: _train(e, "--work-dir", e.afile), "--work-dir"),
    "train config missing": (train_cli.main, lambda e: _train(e, "--config", e.missing), "--config"),
    "train config is a folder": (train_cli.main, lambda e: _train(e, "--config", e.dir), "--config"),
    "train dataroot missing": (train_cli.main, lambda e: _train(e, "--dataroot", e.missing), "--dataroot"),
    "train dataroot not nuscenes": (train_cli.main, lambda e: _train(e, "--dataroot", e.dir), "--dataroot"),
    "train device bogus": (train_cli.main, lambda e: _train(e, "--device", "gpu0"), "--device"),
    # occ-predict
    "predict out unwritable": (predict_cli.main, lambda e: _predict(e, "--out", e.unwritable), "--out"),
    "predict out is a file": (predict_cli.main, lambda e: _predict(e, "--out", e.afile), "--out"),
    "predict config missing": (predict_cli.main, lambda e: _predict(e, "--config", e.missing), "--config"),
    "predict checkpoint missing": (predict_cli.main, lambda e: _predict(e, "--checkpoint", e.missing), "--checkpoint"),
    "predict checkpoint is a folder": (predict_cli.main, lambda e: _predict(e, "--checkpoint", e.dir), "--checkpoint"),
    "predict checkpoint garbage": (predict_cli.main, lambda e: _predict(e, "--checkpoint", e.afile), "afile"),
    "predict dataroot missing": (predict_cli.main, lambda e: _predict(e, "--dataroot", e.missing), "--dataroot"),
    "predict split unknown": (predict_cli.main, lambda e: _predict(e, "--split", "test"), "--split"),
    "predict split empty": (predict_cli.main, lambda e: _predict(e, "--dataroot", e.novals, "--split", "val"),
                            "--split"),
    "predict device bogus": (predict_cli.main, lambda e: _predict(e, "--device", "gpu0"), "--device"),
    # occ-render
    "render out unwritable": (render_cli.main, lambda e: [e.pred + "/t0.npz", "-o", e.unwritable], "--out"),
    "render out is a file": (render_cli.main, lambda e: [e.pred + "/t0.npz", "-o", e.afile], "--out"),
    "render input missing": (render_cli.main, lambda e: [e.missing + ".npz", "-o", str(e.base / "r")], "missing"),
    "render compare dataroot missing": (render_cli.main, lambda e: ["--compare", e.pred, "--dataroot", e.missing, "-o",
                                                                    str(e.base / "r")], "--dataroot"),
    "render compare dataroot no tables": (render_cli.main, lambda e: ["--compare", e.pred, "--dataroot", e.dir, "-o",
                                                                      str(e.base / "r")], "--dataroot"),
    "render compare input is a file": (render_cli.main, lambda e: ["--compare", e.pred + "/t0.npz", "--dataroot", e.root,
                                                                   "-o", str(e.base / "r")], "t0.npz"),
    "render compare gif unwritable": (render_cli.main, lambda e: ["--compare", e.pred, "--dataroot", e.root, "-o",
                                                                  str(e.base / "r"), "--gif", e.unwritable + "/a.gif"],
                                      "--gif"),
}


@pytest.fixture
def no_long_work(monkeypatch):
    """Fail the test if a script starts its long work (data loading, generation, evaluation, rendering)."""
    def boom(*a, **k):
        raise AssertionError("the long work started before the bad input was found")

    from occ_core.data import nuscenes_dataset
    from occ_core.data.synthetic import dataset as synth_dataset

    monkeypatch.setattr(nuscenes_dataset.NuScenesOccDataset, "__init__", boom)
    monkeypatch.setattr(synth_dataset, "_scene_job", boom)
    monkeypatch.setattr(eval_cli, "check_all", boom)
    monkeypatch.setattr(render_cli, "render_3d", boom)
    monkeypatch.setattr(render_cli, "render_bev", boom)
    monkeypatch.setattr(render_cli, "_run_compare", boom)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_2_with_one_line(env, case, capsys, no_long_work):
    fn, argv, expect = BAD_CASES[case]
    rc = fn(argv(env))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err


ARG_CASES = {  # argparse's own errors: usage line + "<prog>: error: argument ...", exit 2
    "train steps -1": (train_cli.main, lambda e: _train(e, "--steps", "-1"), "--steps"),
    "train steps 0": (train_cli.main, lambda e: _train(e, "--steps", "0"), "--steps"),
    "train val-every -1": (train_cli.main, lambda e: _train(e, "--val-every", "-1"), "--val-every"),
    "train ckpt-every x": (train_cli.main, lambda e: _train(e, "--ckpt-every", "x"), "--ckpt-every"),
    "train max-val-samples -1": (train_cli.main, lambda e: _train(e, "--max-val-samples", "-1"), "--max-val-samples"),
    "train threads -1": (train_cli.main, lambda e: _train(e, "--threads", "-1"), "--threads"),
    "train keep-checkpoints 0": (train_cli.main, lambda e: _train(e, "--keep-checkpoints", "0"), "--keep-checkpoints"),
    "eval threads 0": (eval_cli.main, lambda e: _eval(e, "--threads", "0"), "--threads"),
    "eval metrics bogus": (eval_cli.main, lambda e: _eval(e, "--metrics", "miou,bogus"), "--metrics"),
    "render every 0": (render_cli.main, lambda e: [e.pred + "/t0.npz", "--every", "0"], "--every"),
    "render size 0": (render_cli.main, lambda e: [e.pred + "/t0.npz", "--size", "0", "10"], "--size"),
    "render colors 300": (render_cli.main, lambda e: [e.pred + "/t0.npz", "--colors", "300"], "--colors"),
    "render gif-width 0": (render_cli.main, lambda e: ["--compare", e.pred, "--dataroot", e.root, "--gif-width", "0"],
                           "--gif-width"),
    "synth workers 0": (synth_cli.main, lambda e: ["--out", e.missing, "--workers", "0"], "--workers"),
}


@pytest.mark.parametrize("case", sorted(ARG_CASES))
def test_bad_numbers_exit_2(env, case, capsys, no_long_work):
    fn, argv, expect = ARG_CASES[case]
    rc = fn(argv(env))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and expect in err.splitlines()[-1], err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/sys")
def test_no_traceback_reaches_the_terminal(env, tmp_path):
    """The real console path (``python -m``): one line on stderr and exit 2, also after the work."""
    py = [sys.executable, "-m"]
    envv = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [
        py + ["occ_core.eval.cli", "--gt", env.gt, "--pred", env.pred, "--json", env.unwritable + "/m.json"],
        py + ["occ_core.training.predict", "--config", env.cfg, "--dataroot", env.root, "--out", env.unwritable],
    ]
    for cmd in runs:
        p = subprocess.run(cmd, capture_output=True, text=True, env=envv, timeout=120)
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr


def test_train_with_an_empty_val_split_writes_no_nan(env, tmp_path, capsys):
    """One scene, so no val scenes: validation is skipped with a note; no NaN reaches any JSON."""
    work = tmp_path / "run"
    rc = train_cli.main(["--config", env.cfg, "--dataroot", env.novals, "--work-dir", str(work), "--steps", "1",
                         "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "validation split" in captured.err and "skipped" in captured.err
    assert not (work / "val.json").exists()
    assert (work / "model.pt").exists()
