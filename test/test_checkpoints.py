"""occ-train keeps the last N good checkpoints and --resume falls back past a damaged latest one
(issue 12, item 6)."""

import warnings
from pathlib import Path

import pytest
import torch

from occ_core.training.train import checkpoint_files, main as train_main

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parent.parent
LIDAR_CFG = REPO / "config" / "models" / "lidar.yaml"


def _common(root, work):
    return ["--config", str(LIDAR_CFG), "--dataroot", str(root), "--work-dir", str(work), "--val-every", "0",
            "--max-val-samples", "1", "--ckpt-every", "1", "--no-progress"]


def _steps(work):
    return [s for s, _ in checkpoint_files(work / "checkpoints")]


@pytest.fixture(scope="module")
def trained(synthetic_dataroot, tmp_path_factory):
    """A work dir trained 3 steps, a checkpoint each step, the default --keep-checkpoints 2."""
    work = tmp_path_factory.mktemp("ckpt") / "run"
    assert train_main(_common(synthetic_dataroot, work) + ["--steps", "3"]) == 0
    return work


def test_keeps_the_newest_n_named_by_step(trained):
    ckpts = trained / "checkpoints"
    assert _steps(trained) == [3, 2]
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest.pt", "step_00000002.pt", "step_00000003.pt"]
    assert (ckpts / "latest.pt").resolve() == (ckpts / "step_00000003.pt").resolve()
    assert torch.load(ckpts / "latest.pt", weights_only=True)["step"] == 3


def test_resume_falls_back_past_a_corrupt_latest(synthetic_dataroot, trained, tmp_path, capsys):
    import shutil

    work = tmp_path / "run"
    shutil.copytree(trained, work, symlinks=True)
    latest = work / "checkpoints" / "step_00000003.pt"
    latest.write_bytes(latest.read_bytes()[:4000])  # truncated, as by a full disk or a copy cut short
    capsys.readouterr()
    assert train_main(_common(synthetic_dataroot, work) + ["--steps", "4", "--resume", "--keep-checkpoints", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "step_00000003.pt" in err and "falling back" in err, err
    assert "resuming from" in err and "step_00000002.pt (step 2)" in err, err
    # it went on from step 2: step 3 rewritten (readable now), step 4 the new latest; nothing unreadable kept
    assert _steps(work) == [4, 3, 2]
    assert torch.load(work / "checkpoints" / "step_00000003.pt", weights_only=True)["step"] == 3
    assert torch.load(work / "checkpoints" / "latest.pt", weights_only=True)["step"] == 4


def test_resume_without_a_readable_checkpoint_exits_2(synthetic_dataroot, trained, tmp_path, capsys):
    import shutil

    work = tmp_path / "run"
    shutil.copytree(trained, work, symlinks=True)
    damaged = {}
    for _, p in checkpoint_files(work / "checkpoints"):
        p.write_bytes(b"PK\x03\x04 not a checkpoint")
        damaged[p] = p.read_bytes()
    capsys.readouterr()
    assert train_main(_common(synthetic_dataroot, work) + ["--steps", "4", "--resume"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("occ-train: ") and "no readable checkpoint" in last and "step_00000003.pt" in last
    assert all(p.read_bytes() == b for p, b in damaged.items())  # left as they were


def test_resume_reads_a_plain_latest_of_earlier_versions(synthetic_dataroot, trained, tmp_path):
    work = tmp_path / "old"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "latest.pt").write_bytes((trained / "checkpoints" / "step_00000003.pt").read_bytes())
    assert train_main(_common(synthetic_dataroot, work) + ["--steps", "4", "--resume"]) == 0
    assert _steps(work) == [4]
    assert torch.load(work / "checkpoints" / "latest.pt", weights_only=True)["step"] == 4
