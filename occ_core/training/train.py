"""``occ-train``: train an occupancy model on a nuScenes-format dataroot.

    occ-train --config config/models/fusion.yaml --dataroot data/synthetic --work-dir runs/fusion
    occ-train ... --resume                      # continue exactly from runs/fusion/checkpoints/latest.pt
    torchrun --nproc_per_node 2 -m occ_core.training.train ...   # DDP (gloo on CPU, nccl on CUDA)

Step-based: the batch of step ``s`` is a pure function of ``(seed, s, rank, world)`` (a seeded
permutation per epoch, ranks take interleaved slices; augmentation seeded by item and epoch),
so a resumed run sees exactly the batches the uninterrupted run would have seen; the
checkpoint carries model, optimizer, scheduler, AMP scaler, the step and all RNG states.

Work dir layout: ``config.yaml`` (the resolved config), ``checkpoints/latest.pt`` (atomic;
an existing one is never overwritten by a fresh run: pass ``--resume`` or use a new work
dir), ``model.pt`` (final weights only, for :func:`occ_core.models.predictor.load_predictor`),
``val.json`` (last validation), ``tb/`` (TensorBoard).
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

from occ_core.errors import OccDataError
from occ_core.eval.distributed import all_reduce_metric
from occ_core.eval.occupancy import ConfusionMetric, occ3d_miou
from occ_core.fileio import atomic_path, atomic_write_text
from occ_core.formats import occ3d
from occ_core.models.config import ModelConfig, config_from_dict, config_to_dict, load_config
from occ_core.models.occnet import build_model
from occ_core.models.predictor import load_checkpoint_state
from occ_core.training.losses import LossTerms, class_weights_from_counts, occupancy_loss, supervised_mask


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
    """

    def __init__(self, cfg: ModelConfig, device: str | torch.device, class_weights: torch.Tensor, ddp: bool = False):
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = build_model(cfg).to(self.device)
        self.net = self.model
        if ddp:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.cascade is not None)
        self.class_weights = class_weights.to(self.device)
        t = cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        warm = max(1, min(100, t.steps // 20))

        def lr_lambda(s: int) -> float:
            return min(1.0, (s + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, t.steps) / max(t.steps, 1))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.amp = bool(t.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0

    def compute_loss(self, batch) -> LossTerms:
        inputs = batch.inputs.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.net(inputs)
        mask = supervised_mask(self.cfg.loss.mask, batch.mask_camera.to(self.device), batch.mask_lidar.to(self.device))
        flow = None if batch.flow is None else batch.flow.to(self.device)
        return occupancy_loss(out, inputs, batch.semantics.to(self.device), mask, flow, self.cfg, self.class_weights)

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
        self.step += 1
        return StepResult(terms.as_floats(), float(norm), lr)

    @torch.no_grad()
    def evaluate(self, loader, progress: bool = False) -> ConfusionMetric:
        """Occ3D mIoU (camera mask) of this rank's batches, merged over ranks."""
        self.model.eval()
        metric = occ3d_miou("camera")
        for batch in tqdm(loader, desc="val", disable=not progress, leave=False):
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.model(batch.inputs.to(self.device)).logits
            pred = logits.argmax(1).cpu().numpy()
            for b in range(pred.shape[0]):
                metric.update(batch.semantics[b].numpy(), pred[b], batch.mask_camera[b].numpy())
        return all_reduce_metric(metric)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "rng": _rng_state(), "class_weights": self.class_weights.cpu(), "config": config_to_dict(self.cfg)}

    def save(self, path: str | Path) -> None:
        """Write a checkpoint atomically (an interrupted write leaves the previous file intact)."""
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    def load(self, path: str | Path) -> None:
        """Restore everything :meth:`save` wrote; a damaged file raises OccDataError naming it."""
        st = load_checkpoint_state(path, map_location=self.device)
        missing = [k for k in ("optimizer", "scheduler", "scaler", "step", "rng") if k not in st]
        if missing:
            raise OccDataError(f"{path}: not a training checkpoint (missing {missing})")
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])
        self.class_weights = st["class_weights"].to(self.device)
        rng = st["rng"]
        rng["torch"] = rng["torch"].cpu()
        _set_rng_state(rng)


# --------------------------------------------------------------------------- CLI
def label_counts(dataroot: Path, scenes_samples: list[tuple[str, str]], num_classes: int, grid_dims) -> np.ndarray:
    """(K,) int64 Occ3D label counts over the training GT (camera-visible and all voxels alike)."""
    counts = np.zeros(num_classes, np.int64)
    for scene, token in scenes_samples:
        sem = occ3d.read_gt(dataroot / "gts" / scene / token / "labels.npz", tuple(grid_dims)).semantics
        counts += np.bincount(sem.reshape(-1), minlength=num_classes)[:num_classes]
    return counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occ-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="model config, config/models/*.yaml")
    p.add_argument("--dataroot", required=True, help="nuScenes-format dataroot with gts/ (synthetic or real)")
    p.add_argument("--work-dir", required=True, help="checkpoints, logs and the final model.pt go here")
    p.add_argument("--resume", action="store_true", help="continue from <work-dir>/checkpoints/latest.pt")
    p.add_argument("--steps", type=int, help="override train.steps (the length of the LR schedule too)")
    p.add_argument("--val-every", type=int, help="override train.val_every (0: only at the end)")
    p.add_argument("--ckpt-every", type=int, help="override train.ckpt_every")
    p.add_argument("--max-val-samples", type=int, default=0, help="validate on the first N val samples (0 = all)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch default)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except OccDataError as e:
        print(f"occ-train: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _run(args) -> int:
    from occ_core.data.nuscenes_dataset import Collate, NuScenesOccDataset, scene_splits

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    work = Path(args.work_dir)
    ckpt = work / "checkpoints" / "latest.pt"
    cfg = load_config(args.config)
    if args.resume:
        if not ckpt.exists():
            raise OccDataError(f"{ckpt}: --resume given but there is no checkpoint")
        # the run continues with the config it started with
        cfg = config_from_dict(load_checkpoint_state(ckpt)["config"], f"{ckpt}:config")
    elif ckpt.exists():
        raise OccDataError(f"{ckpt}: the work dir already holds a checkpoint; pass --resume or use a new --work-dir")
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
    train_ds = NuScenesOccDataset(root, splits["train"], grid, sweeps, cfg.flow, augment=t.flip,
                                  rotate_deg=t.rotate_deg, seed=t.seed, image_hw=cfg.image_hw)
    val_ds = NuScenesOccDataset(root, splits["val"], grid, sweeps, False, nusc=train_ds.nusc, image_hw=cfg.image_hw)

    counts = label_counts(root, train_ds.samples, cfg.num_classes, grid.dims)
    trainer = Trainer(cfg, device, class_weights_from_counts(counts, cfg.loss.class_weight_power), ddp=world > 1)
    if args.resume:
        trainer.load(ckpt)
    if trainer.step == 0:
        torch.manual_seed(t.seed + rank)
    if main_rank:
        atomic_write_text(work / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    writer = None
    if main_rank:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(work / "tb"), purge_step=trainer.step)
    collate = Collate(cfg)
    sampler = StepBatchSampler(len(train_ds), t.batch_size, t.seed, trainer.step, steps, rank, world)
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=t.num_workers, persistent_workers=False)
    val_idx = list(range(len(val_ds)))[: args.max_val_samples or None]
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_ds, val_idx[rank::world]), batch_size=1,
                                             collate_fn=collate, num_workers=t.num_workers)

    def validate():
        m = trainer.evaluate(val_loader, progress)
        if main_rank:
            res = {"step": trainer.step, "mIoU": m.miou(), "IoU_geometric": m.geometric_iou(), "frames": m.frames,
                   "per_class_IoU": {n: (None if np.isnan(v) else float(v)) for n, v in zip(m.class_names, m.per_class_iou())}}
            atomic_write_text(work / "val.json", json.dumps(res, indent=1))
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
            trainer.save(ckpt)
        if val_every and trainer.step % val_every == 0 and trainer.step < steps:
            validate()
    bar.close()
    if main_rank:
        trainer.save(ckpt)
        with atomic_path(work / "model.pt") as tmp:
            torch.save({"model": trainer.model.state_dict(), "config": config_to_dict(cfg), "step": trainer.step}, tmp)
    validate()
    if writer is not None:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
