"""``occ-train``: train an occupancy model on a nuScenes-format dataroot.

    occ-train --config config/models/fusion.yaml --dataroot data/synthetic --work-dir runs/fusion
    occ-train ... --resume                      # continue exactly from the newest readable checkpoint
    torchrun --nproc_per_node 2 -m occ_core.training.train ...   # DDP (gloo on CPU, nccl on CUDA)

Step-based: the batch of step ``s`` is a pure function of ``(seed, s, rank, world)`` (a seeded
permutation per epoch, ranks take interleaved slices; augmentation seeded by item and epoch),
so a resumed run sees exactly the batches the uninterrupted run would have seen; the
checkpoint carries model, optimizer, scheduler, AMP scaler, the step and all RNG states.

Work dir layout: ``config.yaml`` (the resolved config), ``checkpoints/step_<8 digits>.pt``
(each written atomically; the newest ``--keep-checkpoints`` N, default 2, are kept and older
ones pruned after each save) with ``checkpoints/latest.pt`` a link to the newest, ``model.pt``
(final weights only, for :func:`occ_core.models.predictor.load_predictor`), ``val.json`` (last
validation), ``tb/`` (TensorBoard). A fresh run never overwrites checkpoints: pass ``--resume``
or use a new work dir. ``--resume`` continues from the newest checkpoint that reads back
completely; one that is truncated or corrupt is skipped with a warning naming it, and the run
falls back to the previous one (it is pruned once newer checkpoints exist).

Temporal configs (a ``temporal`` section, :mod:`occ_core.models.temporal`): each training item is
a keyframe plus its ``temporal.train_frames`` previous keyframes of the same scene, all under one
BEV augmentation; the previous ones run without gradient to build the state (reset by the same
rule as at inference), the loss is on the current one. Validation runs the items the same way.

A fresh run whose config names ``backbone.pretrained`` starts from those ImageNet ResNet weights
(:mod:`occ_core.models.pretrained`; one line on stderr says how many tensors were loaded); a
resumed run takes every weight from its checkpoint and does not need the file.

Validation (Occ3D mIoU, camera mask) needs a non-empty val split: with none (e.g. a one-scene
synthetic world) it is skipped with a note on stderr and no ``val.json`` is written; metrics
that are undefined (a class never seen) are written as JSON ``null``, never ``NaN``.

Exit status 2, with one line naming the argument or file: bad numbers (``--steps -1``), a
missing or wrong-kind ``--config``/``--dataroot``, a ``--work-dir`` that cannot be written
(checked before the data is read), an unknown ``--device`` or CUDA on a CPU torch, no readable
checkpoint for ``--resume``, a ``backbone.pretrained`` file that is missing (checked early) or
does not fit the configured backbone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from occ_core.cli import (check_device, check_input_file, check_output_dir, nonnegative_int, positive_int,
                          run_cli)
from occ_core.data.nuscenes_dataset import label_path
from occ_core.errors import OccDataError
from occ_core.eval.distributed import all_reduce_metric
from occ_core.eval.occupancy import ConfusionMetric, occ3d_miou
from occ_core.fileio import atomic_path, atomic_write_text
from occ_core.formats import occ3d
from occ_core.models.config import ModelConfig, config_from_dict, config_to_dict, load_config
from occ_core.models.occnet import build_model
from occ_core.models.predictor import load_checkpoint_state
from occ_core.models.pretrained import PretrainedReport, load_pretrained_backbone
from occ_core.procs import DieWithParent
from occ_core.training.losses import LossTerms, class_weights_from_counts, lss_depth_loss, occupancy_loss, supervised_mask


# --------------------------------------------------------------------------- data order
class StepBatchSampler(torch.utils.data.Sampler):
    """Batches ``[(index, epoch), ...]`` for steps ``start .. end - 1`` of one rank.

    Step ``s`` is batch ``k = s % E`` of epoch ``s // E`` (``E = n // (batch * world)`` steps
    per epoch); the epoch's order is ``default_rng((seed, epoch)).permutation(n)`` and rank
    ``r`` takes positions ``(k * world + r) * batch ...`` of it.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, end: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start, self.end, self.rank, self.world = n, batch_size, seed, start, end, rank, world
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch == 0:
            raise OccDataError(f"training set has {n} samples, fewer than batch_size x processes = {batch_size * world}")

    def batch_for_step(self, step: int) -> list[tuple[int, int]]:
        epoch, k = divmod(step, self.per_epoch)
        perm = np.random.default_rng((self.seed, epoch)).permutation(self.n)
        base = (k * self.world + self.rank) * self.batch
        return [(int(i), epoch) for i in perm[base:base + self.batch]]

    def __iter__(self):
        for s in range(self.start, self.end):
            yield self.batch_for_step(s)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


# --------------------------------------------------------------------------- trainer
def _rng_state() -> dict:
    """All RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
          "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


@dataclass
class StepResult:
    """One optimiser step: the loss terms (floats) and the gradient norm before clipping."""

    losses: dict[str, float]
    grad_norm: float
    lr: float


class Trainer:
    """Model + AdamW + warmup/cosine schedule + AMP scaler, one :meth:`train_step` per batch.

    Args:
        cfg: the model/training config.
        device: torch device.
        class_weights: (K,) CE weights (see :func:`class_weights_from_counts`).
        ddp: wrap the model in DistributedDataParallel (process group already initialised).
        pretrained: load ``cfg.backbone.pretrained`` (ImageNet weights) into the image backbone
            before anything else sees the model (a fresh run; a resumed one loads its checkpoint).
    """

    def __init__(self, cfg: ModelConfig, device: str | torch.device, class_weights: torch.Tensor, ddp: bool = False,
                 pretrained: bool = False):
        self.cfg = cfg
        self.device = torch.device(device)
        model = build_model(cfg)
        self.pretrained_report: PretrainedReport | None = None
        if pretrained and cfg.backbone.pretrained is not None and model.image_encoder is not None:
            self.pretrained_report = load_pretrained_backbone(model.image_encoder.backbone, cfg.backbone.pretrained)
        self.model = model.to(self.device)
        self.net = self.model
        if ddp:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.cascade is not None)
        self.class_weights = class_weights.to(self.device)
        t = cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        warm = schedule_warmup(t)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, t.steps, warm))
        self.amp = bool(t.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        # EMA of the parameters; the first update copies them. The buffers (BatchNorm running
        # statistics) are copied from the live model after every update (mmengine's
        # ``update_buffers=False``), never averaged: an average of running variances keeps the
        # huge variances of the first steps for hundreds of steps (a fusion run of 400 steps at
        # decay 0.99 held 100x the live camera-branch variance and scored 20.7 % IoU held out,
        # against 81.3 % for the live weights).
        self.ema = None
        if t.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=False)

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step of the parameters; the buffers become the live model's."""
        self.ema.update_parameters(self.model)
        for ema_buf, buf in zip(self.ema.module.buffers(), self.model.buffers()):
            ema_buf.copy_(buf)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation and ``model.pt`` use: the EMA when ``train.ema_decay`` > 0."""
        return self.model if self.ema is None else self.ema.module

    def forward(self, batch, net=None):
        """The model's output for the batch's current frames (:func:`forward_batch`)."""
        net = self.net if net is None else net
        return forward_batch(self.model if net is self.net else net, batch, self.device, self.amp, net)

    def compute_loss(self, batch) -> LossTerms:
        if self.cfg.render is not None:
            return self.compute_render_loss(batch)
        inputs = batch.inputs.to(self.device)
        out = self.forward(batch)
        mask = supervised_mask(self.cfg.loss.mask, batch.mask_camera.to(self.device), batch.mask_lidar.to(self.device))
        flow = None if batch.flow is None else batch.flow.to(self.device)
        return occupancy_loss(out, inputs, batch.semantics.to(self.device), mask, flow, self.cfg, self.class_weights)

    def compute_render_loss(self, batch):
        """Rendering losses (:mod:`occ_core.training.render_losses`) of a RenderBatch, plus the
        3D label losses weighted by ``render.occ3d`` when that is > 0."""
        from occ_core.training.render_eval import model_field
        from occ_core.training.render_losses import render_loss

        rc = self.cfg.render
        inputs = batch.inputs.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out, field = model_field(self.net, inputs, self.cfg, with_logits=rc.occ3d > 0)
        dev = self.device
        terms = render_loss(field, inputs.intrinsics, inputs.T_base_from_cam, batch.rgb.to(dev), batch.src_rgb.to(dev),
                            batch.T_src_from_tgt.to(dev), None if batch.labels is None else batch.labels.to(dev), rc,
                            inputs.points, None if batch.aux is None else batch.aux.to(dev))
        if rc.occ3d <= 0:  # the LSS depth head's LiDAR loss is a 2D label: kept without 3D labels
            terms.lss_depth = lss_depth_loss(out, inputs, self.cfg)
            terms.total = terms.total + terms.lss_depth
        if rc.occ3d > 0:
            mask = supervised_mask(self.cfg.loss.mask, batch.mask_camera.to(dev), batch.mask_lidar.to(dev))
            occ = occupancy_loss(out, inputs, batch.semantics.to(dev), mask, None, self.cfg, self.class_weights)
            terms.occ3d = rc.occ3d * occ.total
            terms.total = terms.total + terms.occ3d
        return terms

    def train_step(self, batch) -> StepResult:
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.compute_loss(batch)
        self.scaler.scale(terms.total).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.update_ema()
        self.step += 1
        return StepResult(terms.as_floats(), float(norm), lr)

    @torch.no_grad()
    def evaluate(self, loader, progress: bool = False) -> ConfusionMetric:
        """Occ3D mIoU (camera mask) of this rank's batches, merged over ranks."""
        model = self.eval_model.eval()
        metric = occ3d_miou("camera")
        for batch in tqdm(loader, desc="val", disable=not progress, leave=False):
            logits = self.forward(batch, model).logits
            pred = logits.argmax(1).cpu().numpy()
            for b in range(pred.shape[0]):
                metric.update(batch.semantics[b].numpy(), pred[b], batch.mask_camera[b].numpy())
        return all_reduce_metric(metric)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        st = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
              "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
              "rng": _rng_state(), "class_weights": self.class_weights.cpu(), "config": config_to_dict(self.cfg)}
        if self.ema is not None:
            st["ema"] = self.ema.state_dict()
        return st

    def save(self, path: str | Path) -> None:
        """Write a checkpoint atomically (an interrupted write leaves the previous file intact)."""
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    def load(self, path: str | Path) -> None:
        """Restore everything :meth:`save` wrote; a damaged file raises OccDataError naming it."""
        self.load_state(read_training_checkpoint(path, self.device), path)

    def load_state(self, st: dict, path: str | Path = "checkpoint") -> None:
        """Restore a state read by :func:`read_training_checkpoint` (``path`` names it in errors)."""
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:
            raise OccDataError(f"{path}: weights do not fit the model: {e}") from None
        if self.ema is not None:
            if "ema" not in st:
                raise OccDataError(f"{path}: the config asks for train.ema_decay but the checkpoint holds no EMA weights")
            self.ema.load_state_dict(st["ema"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])
        self.class_weights = st["class_weights"].to(self.device)
        rng = st["rng"]
        rng["torch"] = rng["torch"].cpu()
        _set_rng_state(rng)


def forward_batch(model: torch.nn.Module, batch, device: torch.device, amp: bool = False, net=None):
    """The model's output for an :class:`~occ_core.data.nuscenes_dataset.OccBatch`'s current
    frames; a temporal batch (``batch.history``) first builds the state from the previous frames
    without gradient (:func:`occ_core.models.temporal.forward_with_history`). ``net`` runs the
    current frame (e.g. the DDP wrapper of ``model``; default ``model``); ``amp``: float16
    autocast on CUDA."""
    inputs = batch.inputs.to(device)
    net = model if net is None else net
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        if not batch.history:
            return net(inputs)
        from occ_core.models.temporal import forward_with_history

        return forward_with_history(model, inputs, [h.to(device) for h in batch.history],
                                    batch.T_cur_from_prev.to(device), batch.link_valid.to(device), net)


def schedule_warmup(t) -> int:
    """Linear warm-up steps of the LR schedule (``train.warmup_steps``; -1: ``min(100, steps // 20)``, >= 1)."""
    return max(1, t.warmup_steps if t.warmup_steps >= 0 else min(100, t.steps // 20))


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """LR multiplier at ``step``: linear warm-up over ``warmup`` steps times a cosine from 1 to
    0.02 over ``steps`` (flat at 0.02 after them)."""
    return min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))))


# --------------------------------------------------------------------------- checkpoint files
LATEST = "latest.pt"


def read_training_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint written by :meth:`Trainer.save`, checked for every part a resume needs.

    Raises:
        OccDataError: naming the file: missing, truncated/corrupt, or not a training checkpoint.
    """
    st = load_checkpoint_state(path, map_location=map_location)
    missing = [k for k in ("optimizer", "scheduler", "scaler", "step", "rng", "config") if k not in st]
    if missing:
        raise OccDataError(f"{path}: not a training checkpoint (missing {missing})")
    return st


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def checkpoint_files(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``ckpt_dir``, newest first: ``step_<N>.pt`` files,
    and a ``latest.pt`` that is a plain file (work dirs of earlier versions) counted as newest."""
    found = []
    for p in ckpt_dir.glob("step_*.pt"):
        digits = p.name[len("step_"):-len(".pt")]
        if digits.isdigit() and p.is_file():
            found.append((int(digits), p))
    found.sort(reverse=True)
    legacy = ckpt_dir / LATEST
    if legacy.is_file() and not legacy.is_symlink():
        found.insert(0, (-1, legacy))
    return found


def find_resume_checkpoint(ckpt_dir: Path, map_location="cpu", warn=None) -> tuple[Path, dict, list[Path]]:
    """The newest checkpoint of ``ckpt_dir`` that reads back completely.

    Each unreadable one (truncated, corrupt, not a training checkpoint) is reported through
    ``warn`` (default: a line on stderr) and the previous one is tried.

    Returns:
        (path, state, unreadable paths).

    Raises:
        OccDataError: no checkpoint at all, or none readable (the first error is quoted).
    """
    warn = warn or (lambda msg: print(f"occ-train: warning: {msg}", file=sys.stderr, flush=True))
    files = checkpoint_files(ckpt_dir)
    if not files:
        raise OccDataError(f"{ckpt_dir}: --resume given but there is no checkpoint")
    bad: list[Path] = []
    errors: list[str] = []
    for _, path in files:
        try:
            return path, read_training_checkpoint(path, map_location), bad
        except OccDataError as e:
            first = str(e).splitlines()[0]
            bad.append(path)
            errors.append(first)
            if len(bad) < len(files):
                warn(f"{first}; falling back to the previous checkpoint")
    raise OccDataError(f"{ckpt_dir}: no readable checkpoint to resume from ({len(bad)} tried; newest: {errors[0]})")


def save_checkpoint(trainer: "Trainer", ckpt_dir: Path, keep: int, unreadable: set[Path] | None = None) -> Path:
    """Write ``step_<step>.pt`` atomically, point ``latest.pt`` at it, and prune: the newest
    ``keep`` checkpoints stay; older ones and the ``unreadable`` ones (found at resume) go. A
    path written again here leaves ``unreadable``."""
    unreadable = set() if unreadable is None else unreadable
    path = ckpt_dir / checkpoint_name(trainer.step)
    trainer.save(path)
    unreadable.discard(path)
    link = ckpt_dir / LATEST
    tmp = ckpt_dir / f".{LATEST}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.name)
        os.replace(tmp, link)
    except OSError:  # a file system without symbolic links: the step files are the checkpoints
        tmp.unlink(missing_ok=True)
    kept = 1  # the one just written
    for _, p in checkpoint_files(ckpt_dir):
        if p == path:
            continue
        if p in unreadable or kept >= keep:
            p.unlink(missing_ok=True)
        else:
            kept += 1
    return path


# --------------------------------------------------------------------------- CLI
def label_counts(dataroot: Path, scenes_samples: list[tuple[str, str]], num_classes: int, grid_dims) -> np.ndarray:
    """(K,) int64 Occ3D label counts over the training GT (camera-visible and all voxels alike)."""
    counts = np.zeros(num_classes, np.int64)
    for scene, token in scenes_samples:
        sem = occ3d.read_gt(label_path(dataroot, scene, token), tuple(grid_dims)).semantics
        counts += np.bincount(sem.reshape(-1), minlength=num_classes)[:num_classes]
    return counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occ-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model config, config/models/*.yaml")
    p.add_argument("--dataroot", required=True, help="nuScenes-format dataroot with gts/ (synthetic or real)")
    p.add_argument("--val-dataroot", default=None,
                   help="validate on the val split of this dataroot instead of --dataroot's (e.g. a held-out world)")
    p.add_argument("--work-dir", required=True, help="checkpoints, logs and the final model.pt go here")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest readable checkpoint in <work-dir>/checkpoints")
    p.add_argument("--steps", type=positive_int, help="override train.steps (the length of the LR schedule too)")
    p.add_argument("--val-every", type=nonnegative_int, help="override train.val_every (0: only at the end)")
    p.add_argument("--ckpt-every", type=nonnegative_int, help="override train.ckpt_every (0: only at the end)")
    p.add_argument("--keep-checkpoints", type=positive_int, default=2,
                   help="keep the newest N checkpoints (default 2), so a damaged latest one has a fallback")
    p.add_argument("--max-val-samples", type=nonnegative_int, default=0,
                   help="validate on the first N val samples (0 = all)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch intra-op threads on CPU (0: torch default)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p


#: every k-th training keyframe chooses a rendering-only model's occupancy threshold
LABEL_FREE_EVERY = 10


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``occ-train``; returns the exit status (0 ok, 2 bad input: one line)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse printed usage and the error (or --help)
        return int(e.code or 0)
    try:
        return run_cli("occ-train", lambda: _run(args))
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _finite(v) -> float | None:
    """A metric for JSON: None where it is undefined (NaN/inf)."""
    return float(v) if v is not None and math.isfinite(v) else None


def _run(args) -> int:
    from occ_core.data.nuscenes_dataset import Collate, NuScenesOccDataset, check_dataroot, scene_splits

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # inputs and outputs first: nothing is read or built before they are known to be usable
    check_input_file(args.config, "--config")
    check_dataroot(args.dataroot)
    if args.val_dataroot is not None:
        check_dataroot(args.val_dataroot, "--val-dataroot")
    work = Path(args.work_dir)
    ckpt_dir = work / "checkpoints"
    if rank == 0:
        check_output_dir(ckpt_dir, "--work-dir")
    use_cuda = check_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu")).type == "cuda"
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    cfg = load_config(args.config)
    resume_state, unreadable = None, set()
    if args.resume:
        resume_path, resume_state, bad = find_resume_checkpoint(ckpt_dir, warn=None if rank == 0 else (lambda m: None))
        unreadable = set(bad)
        # the run continues with the config it started with
        cfg = config_from_dict(resume_state["config"], f"{resume_path}:config")
    elif checkpoint_files(ckpt_dir):
        raise OccDataError(f"{ckpt_dir}: the work dir already holds a checkpoint; pass --resume or use a new "
                           f"--work-dir")
    elif cfg.backbone.pretrained is not None:
        check_input_file(cfg.backbone.pretrained, f"{args.config}: backbone.pretrained")
    if args.steps is not None:  # the schedule spans the new length (and the checkpoint keeps it)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps))
    t = cfg.train
    steps = t.steps
    val_every = args.val_every if args.val_every is not None else t.val_every
    ckpt_every = args.ckpt_every if args.ckpt_every is not None else t.ckpt_every
    main_rank = rank == 0
    progress = main_rank and not args.no_progress

    root = Path(args.dataroot)
    splits = scene_splits(root)
    grid = cfg.grid_spec
    sweeps = cfg.lidar.max_sweeps if cfg.lidar is not None else 1
    history = cfg.temporal.train_frames if cfg.temporal is not None else 0
    render = cfg.render is not None
    if render:  # rendering supervision: gts/ is read only when render.occ3d > 0
        from occ_core.data.render_dataset import CollateRender, RenderDataset

        train_ds = RenderDataset(root, splits["train"], cfg)
    else:
        train_ds = NuScenesOccDataset(root, splits["train"], grid, sweeps, cfg.flow, augment=t.flip,
                                      rotate_deg=t.rotate_deg, seed=t.seed, image_hw=cfg.image_hw,
                                      image_scale=t.image_scale, lidar_dropout=t.lidar_dropout,
                                      history=history)
    if args.val_dataroot is None:
        val_root = root
        val_ds = NuScenesOccDataset(root, splits["val"], grid, sweeps, False, nusc=train_ds.nusc, image_hw=cfg.image_hw,
                                    history=history)
    else:  # e.g. a held-out world of another seed (bench/learning.py)
        val_root = Path(args.val_dataroot)
        val_ds = NuScenesOccDataset(val_root, scene_splits(val_root)["val"], grid, sweeps, False, image_hw=cfg.image_hw,
                                    history=history)

    if render and cfg.render.occ3d <= 0:
        weights = torch.ones(cfg.num_classes)  # no 3D labels, no label statistics
    else:
        weights = class_weights_from_counts(label_counts(root, train_ds.samples, cfg.num_classes, grid.dims),
                                            cfg.loss.class_weight_power)
    trainer = Trainer(cfg, device, weights, ddp=world > 1, pretrained=resume_state is None)
    if trainer.pretrained_report is not None and main_rank:
        print(f"occ-train: pretrained backbone: {trainer.pretrained_report.summary()}", file=sys.stderr, flush=True)
    if resume_state is not None:
        trainer.load_state(resume_state, resume_path)
        if main_rank:
            print(f"occ-train: resuming from {resume_path} (step {trainer.step})", file=sys.stderr, flush=True)
        del resume_state
    if trainer.step == 0:
        torch.manual_seed(t.seed + rank)
    if main_rank:
        atomic_write_text(work / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    writer = None
    if main_rank:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(work / "tb"), purge_step=trainer.step)
    collate = CollateRender(cfg) if render else Collate(cfg)
    val_collate = Collate(cfg)
    sampler = StepBatchSampler(len(train_ds), t.batch_size, t.seed, trainer.step, steps, rank, world)
    die = DieWithParent()  # DataLoader workers die with this process, even on kill -9
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=t.num_workers, persistent_workers=False, worker_init_fn=die)
    val_idx = list(range(len(val_ds)))[: args.max_val_samples or None]
    if not val_idx and main_rank:
        print(f"occ-train: note: the validation split of {val_root} holds no samples; "
              f"validation is skipped and no val.json is written", file=sys.stderr, flush=True)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_ds, val_idx[rank::world]), batch_size=1,
                                             collate_fn=val_collate, num_workers=t.num_workers, worker_init_fn=die)

    def validate():
        if not val_idx:
            return
        if render:
            from occ_core.training.render_eval import validate_render

            if main_rank:  # depth of every val camera image; mIoU where the val split has Occ3D labels
                res = validate_render(trainer.model, cfg, val_ds, val_idx, device, progress)
                res["step"] = trainer.step
                atomic_write_text(work / "val.json", json.dumps(res, indent=1, allow_nan=False))
                for k in ("abs_rel", "a1", "mIoU", "IoU_geometric"):
                    if res.get(k) is not None:
                        writer.add_scalar(f"val/{k}", res[k], trainer.step)
                tqdm.write(f"step {trainer.step}: val " + "  ".join(
                    f"{k} {res[k]:.4f}" for k in ("abs_rel", "a1", "mIoU", "IoU_geometric") if res.get(k) is not None))
            return
        m = trainer.evaluate(val_loader, progress)
        if main_rank:
            res = {"step": trainer.step, "mIoU": _finite(m.miou()), "IoU_geometric": _finite(m.geometric_iou()),
                   "frames": m.frames,
                   "per_class_IoU": {n: _finite(v) for n, v in zip(m.class_names, m.per_class_iou())}}
            atomic_write_text(work / "val.json", json.dumps(res, indent=1, allow_nan=False))
            writer.add_scalar("val/mIoU", m.miou(), trainer.step)
            writer.add_scalar("val/IoU_geometric", m.geometric_iou(), trainer.step)
            tqdm.write(f"step {trainer.step}: val mIoU {100 * m.miou():.2f}  IoU {100 * m.geometric_iou():.2f}  ({m.frames} frames)")

    bar = tqdm(total=steps, initial=trainer.step, desc=f"train {cfg.name}", disable=not progress, dynamic_ncols=True)
    for batch in loader:
        r = trainer.train_step(batch)
        bar.update(1)
        if main_rank:
            bar.set_postfix(loss=f"{r.losses['total']:.3f}")
            if trainer.step % t.log_every == 0 or trainer.step == steps:
                for k, v in r.losses.items():
                    writer.add_scalar(f"loss/{k}", v, trainer.step)
                writer.add_scalar("train/grad_norm", r.grad_norm, trainer.step)
                writer.add_scalar("train/lr", r.lr, trainer.step)
        if ckpt_every and trainer.step % ckpt_every == 0 and trainer.step < steps and main_rank:
            save_checkpoint(trainer, ckpt_dir, args.keep_checkpoints, unreadable)
        if val_every and trainer.step % val_every == 0 and trainer.step < steps:
            validate()
    bar.close()
    if main_rank:
        save_checkpoint(trainer, ckpt_dir, args.keep_checkpoints, unreadable)
        tau = None
        if cfg.rendering_only:  # occupancy threshold of the output, chosen without 3D labels
            from occ_core.training.render_eval import label_free_threshold

            tau, stats = label_free_threshold(trainer.eval_model, cfg, train_ds,
                                              list(range(0, len(train_ds), LABEL_FREE_EVERY)), device=device)
            how = "label-free"
        elif t.calibrate_threshold:  # the geometric-IoU threshold on labelled frames of --dataroot
            from occ_core.training.calibrate import calibrate_on

            tau, stats = calibrate_on(trainer.eval_model, cfg, root, device=device, nusc=train_ds.nusc)
            how = "calibrated"
        if tau is not None:
            cfg = dataclasses.replace(cfg, occ_threshold=tau)
            trainer.eval_model.occ_threshold = tau
            atomic_write_text(work / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            print(f"occ-train: {how} occupancy threshold {tau:.4f} (occ_threshold in {work / 'config.yaml'}; "
                  f"{stats})", file=sys.stderr, flush=True)
        with atomic_path(work / "model.pt") as tmp:
            torch.save({"model": trainer.eval_model.state_dict(), "config": config_to_dict(cfg), "step": trainer.step}, tmp)
    validate()
    if writer is not None:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
