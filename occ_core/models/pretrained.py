"""ImageNet ResNet weights from a local file into :class:`~occ_core.models.backbone.ResNetBackbone`.

Nothing is downloaded: the user points ``backbone.pretrained`` at a file they already have.
Accepted files (read with ``torch.load(weights_only=True)``):

- a torchvision state dict, e.g. ``resnet50-0676ba61.pth`` / ``resnet50-11ad3fa6.pth`` (the
  IMAGENET1K_V1 / V2 weights) or the older ``resnet50-19c8e357.pth``;
- a timm ``resnet50`` (``resnet18``/``34``/``101``/``152``) state dict, bare or wrapped as
  ``{"state_dict": ...}`` (timm's training checkpoints) or ``{"model": ...}``; a ``module.``
  prefix that DDP adds to every key is removed.

timm's plain ResNets use torchvision's names, so one explicit table maps both (ours on the
right, ``i`` = 1..4, ``j`` the block)::

    conv1.weight                     -> stem.0.weight          (7x7 stem conv)
    bn1.*                            -> stem.1.*
    layer{i}.{j}.conv{k}.weight      -> stages.{i-1}.{j}.conv{k}.weight
    layer{i}.{j}.bn{k}.*             -> stages.{i-1}.{j}.bn{k}.*
    layer{i}.{j}.downsample.0.weight -> stages.{i-1}.{j}.short.0.weight  (projection conv)
    layer{i}.{j}.downsample.1.*      -> stages.{i-1}.{j}.short.1.*       (its BatchNorm)
    fc.*                             -> dropped (the ImageNet classifier)

BatchNorm ``*`` is weight, bias, running_mean, running_var, num_batches_tracked; the last may
be absent (checkpoints older than PyTorch 0.4.1) and then stays 0. Any other key (timm's deep
stems ``conv1.0.*``, average-pool shortcuts ``downsample.2.*``, SE modules), a backbone tensor
the file lacks, or a shape that differs is an :class:`~occ_core.errors.OccDataError` naming
the file and the first such key: the config must describe the same ResNet as the file
(``stem_type: 7x7``, the block type, widths and blocks of that depth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from occ_core.errors import OccDataError

_BN = r"(?:weight|bias|running_mean|running_var|num_batches_tracked)"
STEM_KEY = re.compile(rf"(conv1\.weight)|bn1\.({_BN})")
BLOCK_KEY = re.compile(rf"layer([1-9])\.(\d+)\.(conv[1-3]\.weight|bn[1-3]\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN})")
DROPPED = re.compile(r"fc\.(?:weight|bias)")
WRAPPERS = ("state_dict", "model")


def backbone_key(name: str) -> str | None:
    """The backbone state key of a torchvision/timm ResNet key (the table in the module
    docstring); None for the dropped classifier ``fc.*``.

    Raises:
        KeyError: for a key outside the table (the caller reports it as unexpected).
    """
    if DROPPED.fullmatch(name):
        return None
    m = STEM_KEY.fullmatch(name)
    if m:
        return "stem.0.weight" if m.group(1) else f"stem.1.{m.group(2)}"
    m = BLOCK_KEY.fullmatch(name)
    if m:  # torchvision's layer1..4 are stages 0..3 here, its downsample our short
        return f"stages.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3).replace('downsample.', 'short.')}"
    raise KeyError(name)


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained_backbone` did.

    Attributes:
        path: the file read.
        wrapper: ``"state_dict"``, ``"model"`` or ``None`` (a bare state dict).
        loaded: tensors copied into the backbone.
        parameters: scalar weights among them (parameters and buffers).
        dropped: file keys deliberately not loaded (the ImageNet classifier ``fc.*``).
        defaulted: backbone keys the file lacked and that were left as they were
            (``num_batches_tracked`` of old checkpoints).
    """

    path: Path
    wrapper: str | None
    loaded: int
    parameters: int
    dropped: list[str]
    defaulted: list[str]

    def summary(self) -> str:
        w = f" (in '{self.wrapper}')" if self.wrapper else ""
        extra = f", {len(self.defaulted)} num_batches_tracked absent (left at 0)" if self.defaulted else ""
        return (f"{self.path}{w}: loaded {self.loaded} tensors ({self.parameters:,} values) into the backbone, "
                f"dropped {len(self.dropped)} ({', '.join(self.dropped) or 'none'}){extra}")


def read_resnet_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The ResNet state dict in ``path`` and the wrapper it sat in (see the module docstring).

    Raises:
        OccDataError: naming the file when it is missing, unreadable or holds no state dict.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OccDataError(f"{path}: pretrained backbone weights not found") from None
    except IsADirectoryError:
        raise OccDataError(f"{path}: pretrained backbone weights: expected a file, got a directory") from None
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/... on damaged files
        raise OccDataError(f"{path}: not a readable torch file (truncated or corrupted?): {type(e).__name__}: {e}") from None
    wrapper = None
    if isinstance(obj, dict):
        for w in WRAPPERS:
            if isinstance(obj.get(w), dict):
                obj, wrapper = obj[w], w
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise OccDataError(f"{path}: expected a ResNet state dict (name -> tensor), bare or under "
                           f"{' or '.join(repr(w) for w in WRAPPERS)}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, wrapper


def load_pretrained_backbone(backbone: nn.Module, path: str | Path) -> PretrainedReport:
    """Copy torchvision/timm ImageNet ResNet weights into ``backbone`` (a ResNetBackbone).

    All-or-nothing: every check runs before anything is copied.

    Raises:
        OccDataError: naming the file and the first key that is unexpected (not in the table or
            not in this backbone), missing (a backbone tensor the file lacks) or mis-shaped.
    """
    path = Path(path)
    state, wrapper = read_resnet_state(path)
    target = backbone.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    dropped, unexpected, mis_shaped = [], [], []
    for name, tensor in state.items():
        try:
            ours = backbone_key(name)
        except KeyError:
            unexpected.append(name)
            continue
        if ours is None:
            dropped.append(name)
        elif ours not in target:
            unexpected.append(name)
        elif tuple(tensor.shape) != tuple(target[ours].shape):
            mis_shaped.append(f"{name} {tuple(tensor.shape)} (backbone {ours} {tuple(target[ours].shape)})")
        else:
            mapped[ours] = tensor
    absent = [k for k in target if k not in mapped]
    missing = [k for k in absent if not k.endswith("num_batches_tracked")]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
    if missing:
        problems.append(f"{len(missing)} backbone tensor(s) missing from the file, first {missing[0]!r}")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} shape mismatch(es), first {mis_shaped[0]}")
    if problems:
        raise OccDataError(f"{path}: ImageNet ResNet weights do not fit the configured backbone: "
                           f"{'; '.join(problems)} (does the config describe the same ResNet: stem_type 7x7, "
                           f"block, widths, blocks?)")
    defaulted = [k for k in absent if k.endswith("num_batches_tracked")]
    with torch.no_grad():
        for k, t in mapped.items():
            target[k].copy_(t)  # state_dict() tensors share storage with the parameters/buffers
    return PretrainedReport(path, wrapper, len(mapped), sum(t.numel() for t in mapped.values()), sorted(dropped),
                            defaulted)
